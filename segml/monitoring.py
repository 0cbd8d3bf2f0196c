"""What a scored batch says about the segmentation: emerging segments, drift and migration.

Emerging segments follow MINAS (Faria et al., 2016) and DenStream (Cao et al., 2006): customers
that no segment fits (novel, far from every training customer, or HDBSCAN noise) are collected
over the whole batch and clustered by density (HDBSCAN's hierarchy with a minimum size from the
spec), on their preprocessed features, where outliers stay outliers whatever reducer the model
has. Any cluster of the hierarchy can become a candidate: one about as cohesive as the existing
segments (its RMS radius at most ``candidate_max_spread`` times theirs), unlike its nearest
segment, and more common than at training. Scattered outliers, which HDBSCAN may gather into one
wide cluster, never qualify; a compact group among them still does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances_argmin

from segml.families.hdbscan import TreeCluster, knn_tree, neighbours, tree_clusters
from segml.metrics.business import LIFT_MIN_MEAN
from segml.metrics.drift import DriftReference, ShareDrift, feature_drift, share_drift
from segml.model import SEGMENT_ID
from segml.naming import NAME_MIN_EFFECT, differs_by
from segml.novelty import TrainingDensity
from segml.spec import Monitoring

EMERGING_ID = "emerging_id"
EMERGING_FIT_ROWS = 10_000
"""Most novel customers the candidate clustering is fitted on (those with the smallest id
hashes); the others join the cluster of their nearest fitted customer when within its core
distance."""
FITTED_PER_CANDIDATE = 250
"""Fitted customers the smallest candidate the spec allows would have: the clustering is
fitted on no more novel customers than that needs (HDBSCAN's time grows with them)."""
CANDIDATE_MIN_SAMPLES = 10
"""HDBSCAN ``min_samples`` of the candidate clustering (density smoothing)."""
CORE_MEMBERSHIP = 0.1
"""Customers of a cluster with a lower HDBSCAN membership strength are its stragglers (points
that joined it only at a low density, typically scattered outliers) and stay out of it."""
CENTROID_PREFIX = "z"
"""Candidate centroid columns (``z0``, ``z1``, ...): model space, to recognise it next run."""


@dataclass(frozen=True)
class SegmentSpace:
    """Where the current segments sit, from a sample of the customers they fit.

    Attributes
    ----------
    ids : ndarray
        Segment ids, in the row order of ``centroids`` and ``means``.
    centroids : ndarray of shape (n_segments, n_dims)
        Segment means in the model's space.
    spread : float
        Median over the customers of their segment's RMS distance to its centroid, a customer
        no segment fits counted in the nearest (NaN without segments).
    numeric : DataFrame
        The sample's numeric features on the business scale.
    labels : ndarray
        The sample's segment ids (-1: a customer no segment fits, left out).
    """

    ids: np.ndarray
    centroids: np.ndarray
    spread: float
    numeric: pd.DataFrame
    labels: np.ndarray

    @cached_property
    def means(self) -> pd.DataFrame:
        """Numeric feature means per segment (index: segment id); only candidates need them."""
        fitted = self.labels >= 0
        return self.numeric[fitted].groupby(self.labels[fitted]).mean().reindex(self.ids)

    @cached_property
    def scale(self) -> pd.Series:
        """Standard deviation of each numeric feature over the customers the segments fit."""
        return self.numeric[self.labels >= 0].std(ddof=0)


@dataclass(frozen=True, slots=True)
class Emerging:
    """Emerging-segment candidates among a batch's novel customers.

    ``labels`` holds, per novel customer, its candidate's number (``E<n>``) or 0. ``table``
    has one row per candidate; ``profile`` one row per (candidate, numeric feature).
    """

    labels: np.ndarray
    table: pd.DataFrame
    profile: pd.DataFrame

    @property
    def ids(self) -> list[str]:
        """The candidates' ids, ``E1``, ``E2``, ... (largest first)."""
        return self.table[EMERGING_ID].tolist()


@dataclass(frozen=True)
class BatchReport:
    """Everything ``segml score`` flags about one batch; ``alerts`` is empty when all is well."""

    emerging: Emerging
    shares: ShareDrift
    features: pd.DataFrame
    migration: pd.DataFrame | None
    alerts: tuple[str, ...]


def segment_space(Z: np.ndarray, ids: np.ndarray, numeric: pd.DataFrame) -> SegmentSpace:
    """Centroids and spread of the segments, from the customers of a sample they fit (``ids``:
    their segment ids, -1 for the others; ``numeric``: their features, for ``means``)."""
    member = ids >= 0
    sizes = np.bincount(ids[member])
    segments = np.flatnonzero(sizes)
    which = np.searchsorted(segments, ids[member])
    sums = [np.bincount(which, weights=column, minlength=segments.size) for column in Z[member].T]
    centroids = np.stack(sums, axis=1) / sizes[segments, np.newaxis]
    spread = _partition_spread(Z, member, which, centroids)
    return SegmentSpace(segments, centroids, spread, numeric, ids)


def _partition_spread(
    Z: np.ndarray, member: np.ndarray, which: np.ndarray, centroids: np.ndarray
) -> float:
    """The customers' median RMS distance of their segment to its centroid, each customer no
    segment fits counted in the nearest segment (``which``: the members' segments)."""
    if not len(centroids):
        return math.nan
    nearest = np.empty(len(Z), dtype=np.int64)
    nearest[member] = which
    if (~member).any():
        nearest[~member] = pairwise_distances_argmin(Z[~member], centroids)
    sizes = np.bincount(nearest, minlength=len(centroids))
    squares = ((Z - centroids[nearest]) ** 2).sum(axis=1)
    radii = np.sqrt(np.bincount(nearest, weights=squares, minlength=len(centroids)) / sizes)
    # Weighted by customers, noise included: a density model's many small, tight cores would
    # otherwise make a new group as wide as a k-means segment look too wide
    # (benchmarks/results/emerging_designs.md).
    filled = sizes > 0
    return _weighted_median(radii[filled], sizes[filled])


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _rms_radius(Z: np.ndarray, centre: np.ndarray) -> float:
    return float(np.sqrt(((Z - centre) ** 2).sum(axis=1).mean()))


def min_candidate_size(settings: Monitoring, n_scored: int, min_report_size: int) -> int:
    """Customers a candidate needs: ``candidate_min_share`` of the batch, at least
    ``candidate_min_size``, and never fewer than a report may show (``min_report_size``)."""
    share = math.ceil(settings.candidate_min_share * n_scored)
    return max(settings.candidate_min_size, share, min_report_size)


def find_emerging(
    X: np.ndarray,
    numeric: pd.DataFrame,
    order: np.ndarray,
    n_scored: int,
    min_size: int,
    space: SegmentSpace,
    max_spread: float,
    names: dict[int, str],
    previous: pd.DataFrame | None = None,
    *,
    density: TrainingDensity | None = None,
    min_growth: float = 0.0,
) -> Emerging:
    """Cluster the novel customers by density and keep, at any level of the hierarchy, the
    clusters that are big, cohesive, unlike every segment and new since training.

    Parameters
    ----------
    X : ndarray of shape (n_novel, n_features)
        The novel customers' preprocessed features (the space of ``space`` and ``density``).
    numeric : DataFrame
        Their numeric features on the business scale (for profiles and lifts).
    order : ndarray of uint64
        A per-customer key (id hash): the customers with the smallest keys are fitted on
        (:func:`fit_rows` of them); the others join the candidate of their nearest fitted
        customer when within its core distance.
    n_scored : int
        Customers in the batch (for the candidates' shares).
    min_size : int
        Customers a candidate needs (see :func:`min_candidate_size`).
    space : SegmentSpace
        The current segments.
    max_spread : float
        Largest ratio of a candidate's RMS radius to the segments' (``candidate_max_spread``).
    names : dict
        Segment names by id.
    previous : DataFrame, optional
        The candidates table of the previous scoring run of the same model.
    density : TrainingDensity, optional
        Where the training customers lay (None: no growth check).
    min_growth : float
        Least growth a candidate needs (``candidate_min_growth``): the share of the batch's
        customers that are novel within its RMS radius of its centre, over the share of
        training customers there (see :meth:`TrainingDensity.share_within`). The usual tail
        of a distribution has a growth below 1, a group the model has never seen one in the
        hundreds.
    """
    labels = np.zeros(len(X), dtype=np.int64)
    if not len(space.ids):  # no customer fits a segment: nothing to measure a candidate by
        return _emerging(X, numeric, [], n_scored, space, names, previous)
    check = _Check(
        X, numeric, n_scored, min_size, max_spread * space.spread, space, density, min_growth
    )
    if len(X) >= min_size:
        fit = np.sort(np.argsort(order, kind="stable")[: fit_rows(len(X), min_size)])
        fit_size = max(2, math.ceil(min_size * fit.size / len(X)))
        min_samples = min(CANDIDATE_MIN_SAMPLES, fit_size)
        chosen = _choose(tree_clusters(X[fit], fit_size, min_samples), fit, check)
        for number, members in enumerate(chosen, start=1):
            labels[fit[members]] = number
        labels = _join_fitted(X, fit, labels, min_samples)
    kept = [check.judged(np.flatnonzero(labels == n)) for n in range(1, labels.max(initial=0) + 1)]
    kept.sort(key=lambda k: (-k.members.size, tuple(k.centre)))
    return _emerging(X, numeric, kept, n_scored, space, names, previous)


class _Kept(NamedTuple):
    """A cluster of novel customers as judged: members (positions among the novel customers),
    centre, RMS radius, growth, the profile against its nearest segment, and whether it
    passes every check."""

    members: np.ndarray
    centre: np.ndarray
    radius: float
    growth: float
    profile: pd.DataFrame
    passes: bool


@dataclass(frozen=True)
class _Check:
    """What a cluster of novel customers must be to become a candidate."""

    X: np.ndarray
    numeric: pd.DataFrame
    n_scored: int
    min_size: int
    max_radius: float
    space: SegmentSpace
    density: TrainingDensity | None
    min_growth: float

    def judged(self, members: np.ndarray, scale: float = 1.0) -> _Kept:
        """The cluster of ``members`` (each standing for ``scale`` novel customers: the
        fitted ones stand for the rest) judged: big enough, cohesive, unlike its nearest
        segment (a profile that reads "Typical" is no new segment) and grown since training."""
        centre = self.X[members].mean(axis=0)
        radius = _rms_radius(self.X[members], centre)
        if members.size * scale < self.min_size or radius > self.max_radius:
            return _Kept(members, centre, radius, math.nan, _empty_profile(), False)
        profile = _profile(self.numeric.iloc[members].mean(), self.space, centre)
        growth = math.nan if self.density is None else self._growth(centre, radius)
        differs = bool((profile["std_diff"].abs() >= NAME_MIN_EFFECT).any())
        grown = self.density is None or growth >= self.min_growth
        return _Kept(members, centre, radius, growth, profile, differs and grown)

    def _growth(self, centre: np.ndarray, radius: float) -> float:
        assert self.density is not None
        inside = np.count_nonzero(np.linalg.norm(self.X - centre, axis=1) <= radius)
        return inside / self.n_scored / self.density.share_within(centre, radius)


def _choose(clusters: list[TreeCluster], fit: np.ndarray, check: _Check) -> list[np.ndarray]:
    """The members (positions among ``fit``) of the clusters chosen from the condensed tree:
    from the root down, the first cluster on each branch whose core passes ``check``. A
    compact group is found even when the cluster it first merges with, scattered outliers
    around it, is too wide; in a cluster that no longer splits, the core is its densest
    customers within the allowed radius. Clusters chosen under one parent that pass together
    are one candidate: a group with two modes, both new, is one group when as compact as one
    (the tree would otherwise split it whenever stragglers make the parent too wide)."""
    children: dict[int, list[int]] = {}
    for position, cluster in enumerate(clusters):
        children.setdefault(cluster.parent, []).append(position)
    scale = len(check.X) / fit.size
    found: dict[int, list[np.ndarray]] = {}  # chosen under each parent (-1: the roots)
    todo = [(position, False) for position in children.get(-1, [])]
    while todo:  # depth first; a parent is revisited (True) once its children are done
        position, revisited = todo.pop()
        cluster = clusters[position]
        if revisited:
            below = _together(found.pop(position, []), fit, check, scale)
            found.setdefault(cluster.parent, []).extend(below)
            continue
        leaf = position not in children
        members = _core(
            check.X[fit[cluster.rows]], cluster, check.max_radius if leaf else math.inf
        )
        if members.size and check.judged(fit[members], scale).passes:
            found.setdefault(cluster.parent, []).append(members)
        else:
            todo.append((position, True))
            todo += [(child, False) for child in children.get(position, [])]
    return found.get(-1, [])


def _together(
    chosen: list[np.ndarray], fit: np.ndarray, check: _Check, scale: float
) -> list[np.ndarray]:
    """``chosen`` as one cluster when they pass ``check`` together, else as they are."""
    if len(chosen) < 2:
        return chosen
    union = np.concatenate(chosen)
    return [union] if check.judged(fit[union], scale).passes else chosen


def _core(X: np.ndarray, cluster: TreeCluster, max_radius: float) -> np.ndarray:
    """The rows of ``cluster`` at least ``CORE_MEMBERSHIP`` strong, and no less strong than
    its most inclusive density level whose RMS radius is at most ``max_radius`` (inf: all)."""
    least = CORE_MEMBERSHIP
    if math.isfinite(max_radius):
        least = max(least, _cohesive_strength(X, cluster.strength, max_radius))
    return cluster.rows[cluster.strength >= least]


def _join_fitted(
    X: np.ndarray, fit: np.ndarray, labels: np.ndarray, min_samples: int
) -> np.ndarray:
    """``labels`` with each customer not fitted on taking its nearest fitted customer's, when
    within that one's core distance (see :func:`_nearest_fitted`)."""
    rest = np.ones(len(X), dtype=bool)
    rest[fit] = False
    in_cluster = labels[fit] > 0
    if rest.any() and in_cluster.any():
        nearest, joins = _nearest_fitted(X[fit], in_cluster, X[rest], min_samples)
        labels = labels.copy()
        labels[np.flatnonzero(rest)[joins]] = labels[fit[nearest]]
    return labels


def _emerging(
    X: np.ndarray,
    numeric: pd.DataFrame,
    kept: list[_Kept],
    n_scored: int,
    space: SegmentSpace,
    names: dict[int, str],
    previous: pd.DataFrame | None,
) -> Emerging:
    """The candidates ``E1``, ``E2``, ... of the clusters ``kept`` that pass, in their order."""
    labels = np.zeros(len(X), dtype=np.int64)
    rows: list[list[object]] = []
    profiles: list[pd.DataFrame] = []
    for cluster in (k for k in kept if k.passes):
        name = f"E{len(rows) + 1}"
        labels[cluster.members] = len(rows) + 1
        profiles.append(cluster.profile.assign(**{EMERGING_ID: name}))
        rows.append(_candidate(name, cluster, n_scored, space, names))
    table = pd.DataFrame(rows, columns=_candidate_columns(X.shape[1]))
    table = _seen_before(table, previous)
    profile = pd.concat(profiles, ignore_index=True) if profiles else _empty_profile()
    return Emerging(labels, table, profile[[EMERGING_ID, *_PROFILE_COLUMNS]])


def _nearest_fitted(
    fitted: np.ndarray, in_cluster: np.ndarray, others: np.ndarray, min_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``others`` lie within the core distance of their nearest fitted row, when
    that row is ``in_cluster``, and that row (``nearest``, for those only). A row's core
    distance is its distance to its ``min_samples``-th nearest other fitted row, as in
    hdbscan's fit.

    Such a customer lies inside the neighbourhood that sets that row's density, so it joins
    its cluster with its membership strength. hdbscan's ``approximate_predict`` would also
    weigh the customer's own core distance (:func:`~segml.families.hdbscan.fast_predict`, its
    vectorised equivalent, queries ``min_samples + 1`` neighbours per customer, not 1).
    """
    tree = knn_tree(fitted)
    core = neighbours(tree, fitted, min(min_samples + 1, len(fitted)))[0][:, -1]
    # scipy's bound is strict and compares squared distances (which underflow near 0): a
    # margin keeps in every row as near as the largest core distance of a row in a cluster.
    reach = 2.0 * core[in_cluster].max(initial=0.0) + np.finfo(np.float64).eps
    distance, nearest = (column[:, 0] for column in neighbours(tree, others, 1, reach))
    found = np.flatnonzero(np.isfinite(distance))
    joins = np.zeros(len(others), dtype=bool)
    joins[found] = (distance[found] <= core[nearest[found]]) & in_cluster[nearest[found]]
    return nearest[joins], joins


def _cohesive_strength(Z: np.ndarray, strength: np.ndarray, max_radius: float) -> float:
    """The lowest strength at which the rows at least that strong still have an RMS radius of
    at most ``max_radius``: the largest cohesive density level set (inf if there is none).

    hdbscan would label only the rows at the root's largest lambda; every row with a strength
    of at least 0.1 would take in the scattered customers around a group too.
    """
    order = np.argsort(-strength, kind="stable")
    Z = np.asarray(Z, dtype=np.float64)
    ranked, levels = Z[order] - Z.mean(axis=0), strength[order]  # centred: no cancellation
    n = np.arange(1, len(Z) + 1)[:, np.newaxis]
    centres = np.cumsum(ranked, axis=0) / n
    squares = np.cumsum((ranked**2).sum(axis=1)) / n[:, 0]
    # A level set ends where the strength drops: rows of equal strength are in or out together.
    ends = np.append(np.flatnonzero(levels[1:] < levels[:-1]), len(Z) - 1)
    radii_squared = squares[ends] - (centres[ends] ** 2).sum(axis=1)
    cohesive = ends[radii_squared <= max_radius**2]
    return float(levels[cohesive[-1]]) if cohesive.size else math.inf


def fit_rows(n_novel: int, min_size: int) -> int:
    """Novel customers to fit the candidate clustering on: at most ``EMERGING_FIT_ROWS``, and
    no more than give a candidate of ``min_size`` ``FITTED_PER_CANDIDATE`` of them."""
    enough = math.ceil(FITTED_PER_CANDIDATE * n_novel / min_size)
    return min(n_novel, EMERGING_FIT_ROWS, enough)


_PROFILE_COLUMNS = ["feature", "mean", "segment_mean", "lift", "std_diff"]


def _profile(mean: pd.Series, space: SegmentSpace, centre: np.ndarray) -> pd.DataFrame:
    """A candidate's feature means against its nearest segment's: lift and standardised gap."""
    nearest = space.ids[_nearest(space, centre)]
    base = space.means.loc[nearest].reindex(mean.index)
    scale = space.scale.reindex(mean.index)
    meaningful = base.abs() >= LIFT_MIN_MEAN * scale
    return pd.DataFrame(
        {
            "feature": mean.index,
            "mean": mean.to_numpy(),
            "segment_mean": base.to_numpy(),
            "lift": (mean / base).where(meaningful).to_numpy(),
            "std_diff": ((mean - base) / scale.where(scale > 0)).fillna(0.0).to_numpy(),
        }
    )


def _empty_profile() -> pd.DataFrame:
    return pd.DataFrame(columns=[EMERGING_ID, *_PROFILE_COLUMNS])


def _nearest(space: SegmentSpace, centre: np.ndarray) -> int:
    return int(np.linalg.norm(space.centroids - centre, axis=1).argmin())


def _candidate_columns(n_dims: int) -> list[str]:
    return [
        EMERGING_ID,
        "customers",
        "share",
        "spread_ratio",
        "growth",
        "nearest_segment_id",
        "nearest_segment",
        "distance_ratio",
        "differs_by",
        "radius",
        *(f"{CENTROID_PREFIX}{i}" for i in range(n_dims)),
    ]


def _candidate(
    name: str, cluster: _Kept, n_scored: int, space: SegmentSpace, names: dict[int, str]
) -> list[object]:
    nearest = _nearest(space, cluster.centre)
    segment = int(space.ids[nearest])
    distance = float(np.linalg.norm(space.centroids[nearest] - cluster.centre))
    return [
        name,
        cluster.members.size,
        cluster.members.size / n_scored,
        cluster.radius / space.spread,
        cluster.growth,
        segment,
        names.get(segment, ""),
        distance / space.spread,
        differs_by(cluster.profile),
        cluster.radius,
        *cluster.centre.tolist(),
    ]


def _seen_before(table: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Mark candidates whose centre lies within a previous candidate's radius (or it in theirs)."""
    seen = pd.Series(pd.NA, index=table.index, dtype="string")
    centroid = [c for c in table.columns if c.startswith(CENTROID_PREFIX) and c[1:].isdigit()]
    if previous is not None and len(previous) and set(centroid) <= set(previous.columns):
        old = previous[centroid].to_numpy(dtype=float)
        old_radius = previous["radius"].to_numpy(dtype=float)
        for i, row in enumerate(table[centroid].to_numpy(dtype=float)):
            near = np.linalg.norm(old - row, axis=1) <= np.maximum(
                old_radius, table["radius"].iloc[i]
            )
            if near.any():
                seen.iloc[i] = str(previous[EMERGING_ID].iloc[int(near.argmax())])
    return table.assign(seen_before=seen.notna(), previous_id=seen)


def segment_share_drift(catalog: pd.DataFrame, counts: pd.Series) -> ShareDrift:
    """Segment shares of a batch (counts per segment id, -1 included) against training."""
    train = catalog.set_index(SEGMENT_ID)["customers"].astype(float)
    n_train = float((catalog["customers"] / catalog["share"]).iloc[0]) if len(catalog) else 0.0
    noise = round(n_train - train.sum())
    if noise > 0:
        train = pd.concat([pd.Series({-1: float(noise)}), train])
    return share_drift(train.sort_index(), counts)


def psi_level(values: pd.Series, settings: Monitoring) -> pd.Series:
    """``none``, ``moderate`` or ``major`` shift, by the spec's PSI levels."""
    levels = np.select(
        [values >= settings.psi_major, values >= settings.psi_moderate],
        ["major", "moderate"],
        "none",
    )
    return pd.Series(levels, index=values.index).where(values.notna())


DRIFT_COLUMNS = ["feature", "kind", "method", "score", "threshold", "drifted", "psi", "shift"]
EXPECTED = "expected"
"""The drift-table column that marks features drifting by construction as time passes."""


def input_drift(
    reference: DriftReference | None,
    sample: pd.DataFrame,
    settings: Monitoring,
    clock: Sequence[str] = (),
) -> pd.DataFrame:
    """Per-feature drift of a sample of the batch against training (empty without a
    reference); ``expected`` marks the ``clock`` features, which move with the reference date
    (:data:`segml.features.CLOCK_COLUMNS`) and so drift whenever customers are scored later
    than training's day, whatever they do."""
    if reference is None:
        return pd.DataFrame(columns=[*DRIFT_COLUMNS, EXPECTED])
    drift = feature_drift(
        reference,
        sample,
        test_max_rows=settings.test_max_rows,
        p_value=settings.p_value,
        distance=settings.distance,
    )
    return drift.assign(
        shift=psi_level(drift["psi"], settings), **{EXPECTED: drift["feature"].isin(clock)}
    )


def unexpected(features: pd.DataFrame) -> pd.DataFrame:
    """The rows of a drift table whose drift would mean a change (not marked ``expected``)."""
    if EXPECTED not in features.columns:
        return features
    return features[~features[EXPECTED].astype(bool)]


def alerts(
    emerging: Emerging, shares: ShareDrift, features: pd.DataFrame, settings: Monitoring
) -> tuple[str, ...]:
    """What ``--fail-on-emerging`` acts on: candidates, a major share shift, feature drift."""
    found = []
    if len(emerging.table):
        listed = ", ".join(
            f"{r[EMERGING_ID]} ({r['customers']} customers, {r['share']:.1%})"
            for _, r in emerging.table.iterrows()
        )
        found.append(f"{len(emerging.table)} emerging-segment candidate(s): {listed}")
    if shares.psi >= settings.psi_major:
        found.append(f"segment-share PSI {shares.psi:.3f} >= {settings.psi_major}")
    judged = unexpected(features)
    if len(judged):
        drifted = judged[judged["drifted"]]
        share = len(drifted) / len(judged)
        if share >= settings.drift_share:
            found.append(
                f"{len(drifted)} of {len(judged)} features drifted "
                f"(>= {settings.drift_share:.0%}): {', '.join(drifted['feature'])}"
            )
    return tuple(found)
