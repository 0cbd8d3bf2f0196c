"""HDBSCAN segmentation (the ``hdbscan`` package) with a vectorised, batched assign of new rows.

``hdbscan.approximate_predict`` walks the condensed tree once per new row in Python. Here the
state it needs is flattened into arrays at fit time (:class:`AssignIndex`), and ``assign``
reproduces ``approximate_predict`` and ``approximate_predict_scores`` on whole batches at once:

1. k nearest training rows of each new row (a ``scipy`` ``cKDTree``, queried on all cores);
2. the nearest neighbour in mutual-reachability distance and the row's lambda = 1 / distance;
3. the condensed-tree cluster the row joins at that lambda: the neighbour's cluster, walked up
   while the cluster was born at a lambda >= the row's (one vectorised step per tree level).

Step 1 asks for ``min_samples + 1`` neighbours, which decides every row that has a neighbour
with core distance <= its own; only the other rows are queried again for the
``2 * min_samples`` neighbours that ``approximate_predict`` considers. The result is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Absolute imports: with ``from __future__ import annotations`` and no implicit relative imports,
# ``hdbscan`` is the installed library, never this module (``segml.families.hdbscan``).
import hdbscan as hdbscan_lib
import numpy as np
from scipy.spatial import cKDTree

from segml.families._base import Assigned, Choice, FloatRange, IntRange, Space, row_batches

KNN_WORKERS = -1
"""Threads of the nearest-neighbour queries in ``assign`` and the candidate search (-1: all
cores)."""
KNN_LEAF_SIZE = 32
# The cKDTree uses sliding-midpoint splits (balanced_tree=False) and leaves of 32 points:
# customers' features are low-dimensional blobs, where both answer few-neighbour queries
# faster than median splits and scipy's default of 16 (benchmarks/results/hdbscan_assign.md).
_NO_PREDICTION_DATA = (
    "the HDBSCAN clusterer has no prediction data, so new rows cannot be assigned; refit it "
    "with prediction_data=True (the segml 'hdbscan' family always does) or call "
    "clusterer.generate_prediction_data()"
)
_LAMBDA_MAX = np.finfo(np.float64).max


@dataclass(frozen=True, slots=True)
class AssignIndex:
    """The flattened prediction state of a fitted HDBSCAN clusterer.

    Clusters of the condensed tree are indexed by ``id - root`` (the root is 0).

    Attributes
    ----------
    knn : scipy.spatial.cKDTree
        Tree over the training rows (shares their float64 copy in the prediction data).
    core_distances : ndarray of shape (n_train,)
        Core distance of every training row (``prediction_data_.core_distances``).
    min_samples : int
        ``min_samples`` (or ``min_cluster_size`` when unset), as ``approximate_predict`` uses.
    point_cluster, point_lambda : ndarray of shape (n_train,)
        Cluster each training row falls out of, and the lambda at which it does.
    cluster_parent : ndarray of shape (n_clusters,)
        Parent cluster (-1 for the root).
    cluster_birth : ndarray of shape (n_clusters,)
        Lambda at which a cluster splits from its parent (-inf for the root).
    cluster_label : ndarray of shape (n_clusters,)
        Selected segment a cluster belongs to, or -1.
    cluster_max_lambda : ndarray of shape (n_clusters,)
        Largest lambda of that selected segment (membership strength denominator).
    subtree_max_lambda : ndarray of shape (n_clusters,)
        Largest lambda anywhere below a cluster (GLOSH denominator).
    has_clusters : bool
        False when the condensed tree holds no cluster: every row is then noise.
    """

    knn: cKDTree
    core_distances: np.ndarray
    min_samples: int
    point_cluster: np.ndarray
    point_lambda: np.ndarray
    cluster_parent: np.ndarray
    cluster_birth: np.ndarray
    cluster_label: np.ndarray
    cluster_max_lambda: np.ndarray
    subtree_max_lambda: np.ndarray
    has_clusters: bool

    @property
    def n_features(self) -> int:
        """Number of features of the training rows."""
        return int(self.knn.m)


def build_assign_index(clusterer: hdbscan_lib.HDBSCAN) -> AssignIndex:
    """Flatten a fitted clusterer's prediction data and condensed tree into arrays.

    Parameters
    ----------
    clusterer : hdbscan.HDBSCAN
        Fitted with ``prediction_data=True``.

    Returns
    -------
    AssignIndex

    Raises
    ------
    ValueError
        If the clusterer has no prediction data.
    """
    try:
        pdata = clusterer.prediction_data_
    except AttributeError:
        raise ValueError(_NO_PREDICTION_DATA) from None
    raw = clusterer.condensed_tree_.to_numpy()
    n_train = pdata.raw_data.shape[0]
    root = int(raw["parent"].min())
    parent = raw["parent"].astype(np.intp) - root
    lam = raw["lambda_val"].astype(np.float64)
    is_cluster = _cluster_rows(raw)
    cluster_child = raw["child"][is_cluster].astype(np.intp) - root
    n_clusters = int(max(parent.max(), cluster_child.max(initial=0))) + 1
    cluster_parent = np.full(n_clusters, -1, dtype=np.intp)
    cluster_birth = np.full(n_clusters, -np.inf)
    cluster_parent[cluster_child] = parent[is_cluster]
    cluster_birth[cluster_child] = lam[is_cluster]
    cluster_label, cluster_max_lambda = _selected_clusters(pdata, root, n_clusters)
    return AssignIndex(
        knn=knn_tree(pdata.raw_data),
        core_distances=np.asarray(pdata.core_distances, dtype=np.float64),
        min_samples=int(clusterer.min_samples or clusterer.min_cluster_size),
        point_cluster=_point_clusters(raw, parent, ~is_cluster, n_train),
        point_lambda=_point_lambdas(raw, n_train),
        cluster_parent=cluster_parent,
        cluster_birth=cluster_birth,
        cluster_label=cluster_label,
        cluster_max_lambda=cluster_max_lambda,
        subtree_max_lambda=_subtree_max_lambdas(
            lam, parent, is_cluster, cluster_child, n_clusters
        ),
        has_clusters=bool(is_cluster.any()),
    )


def _point_clusters(
    raw: np.ndarray, parent: np.ndarray, is_point: np.ndarray, n_train: int
) -> np.ndarray:
    """The cluster (indexed as ``parent``) each training row falls out of in the condensed
    tree ``raw``; the tree's first cluster for a row missing from it."""
    # approximate_predict falls back to the tree's first row for a row it cannot find.
    point_cluster = np.full(n_train, parent[0], dtype=np.intp)
    point_cluster[raw["child"][is_point].astype(np.intp)] = parent[is_point]
    return point_cluster


def _selected_clusters(pdata: Any, root: int, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the selected segment it belongs to (or -1) and that segment's largest
    lambda, from hdbscan's prediction data."""
    cluster_label = np.full(n_clusters, -1, dtype=np.int64)
    cluster_max_lambda = np.zeros(n_clusters)
    for cluster, label in pdata.cluster_map.items():
        cluster_label[int(cluster) - root] = label
    for cluster, max_lambda in pdata.max_lambdas.items():
        cluster_max_lambda[int(cluster) - root] = max_lambda
    return cluster_label, cluster_max_lambda


def _subtree_max_lambdas(
    lam: np.ndarray,
    parent: np.ndarray,
    is_cluster: np.ndarray,
    cluster_child: np.ndarray,
    n_clusters: int,
) -> np.ndarray:
    """The largest lambda anywhere below each cluster, from the condensed tree's rows
    (``lam``, ``parent``); ``cluster_child``: the clusters of the rows ``is_cluster``."""
    # As approximate_predict_scores: the largest lambda among a cluster's own rows, then pushed
    # up from child to parent in reverse tree order (one pass over clusters, not rows).
    subtree = np.full(n_clusters, -np.inf)
    np.maximum.at(subtree, parent, lam)
    sub = subtree.tolist()
    for p, c in zip(parent[is_cluster][::-1].tolist(), cluster_child[::-1].tolist(), strict=True):
        if sub[c] > sub[p]:
            sub[p] = sub[c]
    return np.asarray(sub)


def _cluster_rows(raw: np.ndarray) -> np.ndarray:
    """The rows of the condensed tree ``raw`` whose child is a cluster (the others: a point)."""
    return raw["child_size"] > 1


def _point_lambdas(raw: np.ndarray, n_train: int) -> np.ndarray:
    """The lambda at which each training row falls out of the condensed tree ``raw``; the
    tree's first lambda for a row missing from it (approximate_predict's fallback)."""
    is_point = ~_cluster_rows(raw)
    point_lambda = np.full(n_train, raw["lambda_val"][0], dtype=np.float64)
    point_lambda[raw["child"][is_point]] = raw["lambda_val"][is_point]
    return point_lambda


class TreeCluster(NamedTuple):
    """A cluster of a condensed tree, at any level.

    Attributes
    ----------
    parent : int
        Position of its parent cluster in the list (-1 for the root).
    rows : ndarray of intp
        The rows in it (in it or any cluster below it).
    strength : ndarray of float64
        Their membership strength in it: ``min(lambda, max_lambda) / max_lambda``, with
        lambda where a row leaves the tree and max_lambda the largest of the cluster's rows
        (1 for rows that never leave: more than ``min_samples`` identical ones; the others are
        then 0, as in hdbscan's ``probabilities_``).
    """

    parent: int
    rows: np.ndarray
    strength: np.ndarray


def tree_clusters(X: np.ndarray, min_cluster_size: int, min_samples: int) -> list[TreeCluster]:
    """Every cluster of the HDBSCAN condensed tree of ``X``, at every level, parents first:
    the whole hierarchy, not one flat selection of it (no prediction data is kept)."""
    clusterer = SegmentHDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        core_dist_n_jobs=1,  # hdbscan's default starts a process pool: seconds on 20k rows
    ).fit(X)
    raw = clusterer.condensed_tree_.to_numpy()
    is_cluster = _cluster_rows(raw)
    root = int(raw["parent"].min()) if len(raw) else 0
    ids = np.unique(np.append(raw["child"][is_cluster], root)).astype(np.intp) - root
    parent = np.full(ids.size, -1, dtype=np.intp)
    parent[raw["child"][is_cluster].astype(np.intp) - root] = (
        raw["parent"][is_cluster].astype(np.intp) - root
    )
    leaves_at = np.full(len(X), root, dtype=np.intp)  # rows missing from the tree: the root's
    leaves_at[raw["child"][~is_cluster].astype(np.intp)] = raw["parent"][~is_cluster]
    by_cluster = np.argsort(leaves_at - root, kind="stable")
    starts = np.searchsorted((leaves_at - root)[by_cluster], np.arange(ids.size + 1))
    rows = [by_cluster[starts[c] : starts[c + 1]] for c in range(ids.size)]
    for child in range(ids.size - 1, 0, -1):  # children have larger ids than their parent
        rows[parent[child]] = np.concatenate([rows[parent[child]], rows[child]])
    lam = _point_lambdas(raw, len(X))
    return [TreeCluster(int(parent[c]), r, _strength(lam[r])) for c, r in enumerate(rows)]


def _strength(lam: np.ndarray) -> np.ndarray:
    """As hdbscan's probabilities: an infinite largest lambda makes every other row 0."""
    max_lambda = lam.max(initial=0.0)
    if max_lambda <= 0.0:
        return np.ones(lam.shape[0])
    out = np.ones(lam.shape[0])
    np.divide(np.minimum(lam, max_lambda), max_lambda, out=out, where=np.isfinite(lam))
    return out


class SegmentHDBSCAN(hdbscan_lib.HDBSCAN):
    """``hdbscan.HDBSCAN`` that also keeps an :class:`AssignIndex` (``assign_index_``).

    The index is rebuilt whenever prediction data is generated, i.e. at ``fit`` with
    ``prediction_data=True`` or on ``generate_prediction_data()``.
    """

    assign_index_: AssignIndex

    def fit(self, X: np.ndarray, y: Any = None) -> SegmentHDBSCAN:
        """Fit as ``hdbscan.HDBSCAN.fit``, dropping prediction state from any earlier fit.

        ``hdbscan.HDBSCAN.fit`` keeps the previous prediction data when refitted with
        ``prediction_data=False``; here neither it nor ``assign_index_`` survives a refit.
        """
        self.__dict__.pop("assign_index_", None)
        self._prediction_data = None
        super().fit(X, y)
        return self

    def generate_prediction_data(self) -> None:
        """Generate hdbscan's prediction data, then the flattened index ``assign_index_``."""
        super().generate_prediction_data()
        if hasattr(self, "prediction_data_"):
            self.assign_index_ = build_assign_index(self)


def _assign_index(clusterer: hdbscan_lib.HDBSCAN) -> AssignIndex:
    """The clusterer's saved index, or one built from its prediction data (plain HDBSCAN)."""
    index = getattr(clusterer, "assign_index_", None)
    return index if index is not None else build_assign_index(clusterer)


def knn_tree(X: np.ndarray) -> cKDTree:
    """A nearest-neighbour index of the rows of ``X``, built as ``KNN_LEAF_SIZE`` explains."""
    return cKDTree(X, leafsize=KNN_LEAF_SIZE, balanced_tree=False)


def neighbours(
    tree: cKDTree, X: np.ndarray, k: int, bound: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices, each of shape (n_rows, k), of the ``k`` rows of ``tree``
    nearest to each row of ``X``, on ``KNN_WORKERS`` threads; a neighbour not nearer than
    ``bound`` has distance inf and index ``tree.n``."""
    dist, ind = tree.query(X, k=k, distance_upper_bound=bound, workers=KNN_WORKERS)
    return dist.reshape(X.shape[0], k), ind.reshape(X.shape[0], k)


def _connect(index: AssignIndex, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest mutual-reachability neighbour, lambda and "is a training row" for a batch."""
    n_train = index.core_distances.shape[0]
    ms = index.min_samples
    k = min(ms + 1, n_train)
    dist, ind = neighbours(index.knn, X, k)
    own_core = dist[:, min(ms, k - 1)]
    # Among the first ms + 1 neighbours the MR distance is max(core_j, own_core) >= own_core,
    # and no farther neighbour gets below own_core: the first neighbour with core_j <= own_core
    # is approximate_predict's argmin over its 2 * ms candidates.
    ok = index.core_distances[ind] <= own_core[:, None]
    first = ok.argmax(axis=1)
    rows = np.arange(X.shape[0])
    nearest = ind[rows, first]
    mr = own_core.copy()
    miss = np.flatnonzero(~ok[rows, first])
    if miss.size:
        k2 = min(2 * ms, n_train)
        dist2, ind2 = neighbours(index.knn, X[miss], k2)
        mr2 = np.maximum(index.core_distances[ind2], dist2[:, [min(ms, k2 - 1)]])
        np.maximum(mr2, dist2, out=mr2)
        best = mr2.argmin(axis=1)
        nearest[miss] = ind2[np.arange(miss.size), best]
        mr[miss] = mr2[np.arange(miss.size), best]
    lam = np.full(X.shape[0], _LAMBDA_MAX)
    np.divide(1.0, mr, out=lam, where=mr > 0.0)
    return nearest, lam, dist[:, 0] == 0.0


def _checked(index: AssignIndex, X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != index.n_features:
        raise ValueError(
            f"X has shape {X.shape}; the HDBSCAN clusterer was fitted on "
            f"{index.n_features} features: pass (n_rows, {index.n_features})"
        )
    return X


def fast_predict(clusterer: hdbscan_lib.HDBSCAN, X: np.ndarray) -> Assigned:
    """``approximate_predict`` and ``approximate_predict_scores`` of new rows, in one pass.

    Parameters
    ----------
    clusterer : hdbscan.HDBSCAN
        Fitted with prediction data (``SegmentHDBSCAN`` keeps the index from fit).
    X : ndarray of shape (n_samples, n_features)
        Rows in the space the clusterer was fitted on.

    Returns
    -------
    Assigned
        ``labels``: selected segment, or -1 (noise); ``confidence``: the membership strength
        ``min(lambda, max_lambda) / max_lambda`` of the segment, 0 for noise; ``novelty``: the
        GLOSH outlier score ``(max_lambda - lambda) / max_lambda`` with ``max_lambda`` the
        largest lambda below the nearest neighbour's cluster: near 1 far from all data, near 0
        (or slightly below 0) in the densest parts; 1 everywhere when there are no clusters.
    """
    index = _assign_index(clusterer)
    X = _checked(index, X)
    out = Assigned(
        np.full(X.shape[0], -1, dtype=np.int64), np.zeros(X.shape[0]), np.ones(X.shape[0])
    )
    if not index.has_clusters:
        return out
    for rows in row_batches(X.shape[0]):
        nearest, lam, is_training_row = _connect(index, X[rows])
        labels, strength = _membership(index, nearest, lam)
        out.fill(rows, labels, strength, _glosh(index, nearest, lam, is_training_row))
    return out


def _membership(
    index: AssignIndex, nearest: np.ndarray, lam: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Segment and membership strength of rows joining the tree at ``lam`` next to ``nearest``."""
    cluster = index.point_cluster[nearest]
    # Walk up while the cluster was born after (at a higher lambda than) the new row joins.
    active = np.flatnonzero(index.point_lambda[nearest] > lam)
    while active.size:
        current = cluster[active]
        up = index.cluster_birth[current] >= lam[active]
        active = active[up]
        cluster[active] = index.cluster_parent[current[up]]
    label = index.cluster_label[cluster]
    max_lambda = index.cluster_max_lambda[cluster]
    member = np.ones(lam.shape[0])
    np.divide(np.minimum(max_lambda, lam), max_lambda, out=member, where=max_lambda > 0.0)
    return label, np.where(label >= 0, member, 0.0)


def _glosh(
    index: AssignIndex, nearest: np.ndarray, lam: np.ndarray, is_training_row: np.ndarray
) -> np.ndarray:
    """GLOSH outlier scores, as ``approximate_predict_scores``."""
    lam = np.where(is_training_row, index.point_lambda[nearest], lam)
    max_lambda = index.subtree_max_lambda[index.point_cluster[nearest]]
    scores = np.zeros(lam.shape[0])
    np.divide(max_lambda - lam, max_lambda, out=scores, where=max_lambda > 0.0)
    return scores


def _default_space() -> Space:
    return {
        "min_cluster_size": IntRange(10, 500, log=True),
        "min_samples": IntRange(1, 50, log=True),
        "cluster_selection_method": Choice(("eom", "leaf")),
        "cluster_selection_epsilon": FloatRange(0.0, 1.0, default=0.0),
    }


@dataclass(slots=True)
class HDBSCANFamily:
    """Density-based segments with noise (-1); new rows assigned through the condensed tree."""

    name: str = "hdbscan"
    default_space: Space = field(default_factory=_default_space)
    n_segments_param: str | None = None
    count_params: tuple[str, ...] = ("min_cluster_size", "min_samples")

    def fit(self, X: np.ndarray, params: dict[str, Any], seed: int) -> SegmentHDBSCAN:
        """Fit HDBSCAN on ``X`` with prediction data and the assign index.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Preprocessed features.
        params : dict
            ``min_cluster_size`` and optionally ``min_samples`` (None: ``min_cluster_size``),
            ``cluster_selection_method`` and ``cluster_selection_epsilon``.
        seed : int
            Unused: HDBSCAN is deterministic.

        Returns
        -------
        SegmentHDBSCAN
        """
        min_samples = params.get("min_samples")
        model = SegmentHDBSCAN(
            min_cluster_size=int(params["min_cluster_size"]),
            min_samples=None if min_samples is None else int(min_samples),
            cluster_selection_method=params.get("cluster_selection_method", "eom"),
            cluster_selection_epsilon=float(params.get("cluster_selection_epsilon", 0.0)),
            prediction_data=True,
            core_dist_n_jobs=1,  # the default (4) starts a process pool per fit above 16k rows,
        )  # which costs more than it saves when the bootstrap already uses every core
        return model.fit(X)

    def training_labels(self, estimator: hdbscan_lib.HDBSCAN) -> np.ndarray:
        """Labels of the fitted rows (-1 = noise)."""
        return np.asarray(estimator.labels_, dtype=np.int64)

    def assign(self, estimator: hdbscan_lib.HDBSCAN, X: np.ndarray) -> Assigned:
        """Segment (-1 = noise), membership strength and approximate GLOSH outlier score of
        new rows; see :func:`fast_predict`."""
        return fast_predict(estimator, X)
