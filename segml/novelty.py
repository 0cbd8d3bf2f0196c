"""Where the training customers lie, kept as aggregates only: a customer far from all of them is
novel whatever the clusterer (or a reducer in front of it) says.

The training customers' preprocessed features (before any reducer: UMAP's ``transform`` places
every new customer on the training manifold, so outliers vanish there) are summarised by
micro-clusters (BIRCH's clustering features, Zhang et al., 1996; CluStream's micro-clusters,
Aggarwal et al., 2003): centre, spread and count of groups of at least ``min_report_size``
customers, fitted with scikit-learn's ``MiniBatchKMeans``. No training row is kept.

A customer's novelty is its distance to the nearest micro-cluster in units of that
micro-cluster's spread; the threshold is a training quantile. The micro-clusters, read as a
mixture of Gaussians, also say how many training customers a region held, which tells a new
group from the usual tail (:meth:`TrainingDensity.share_within`). For k-means without a
reducer, whose segments are convex, each segment's ellipse (mean and covariance) judges novelty
instead (:class:`SegmentShapes`): as sensitive, and cheaper to score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin

from segml.families._base import row_batches

MICRO_CLUSTERS = 50
"""Most micro-clusters kept. Each costs one distance per scored customer: 50 cost about as
much as a k-means assignment and, on CDNOW, flag the same injected customers as 200
(25 miss most of two kinds; benchmarks/results/emerging_designs.md)."""
MIN_SPREAD = 0.25
"""Smallest micro-cluster spread, as a share of the median one: a micro-cluster of identical
customers (one-time buyers of one CD at the same price) would otherwise call every neighbour
novel."""
MICRO_BATCH = 4_096
WITHIN_DRAWS = 2_048
"""Draws per micro-cluster that estimate its customers within a candidate's radius."""
SHAPE_FLOOR = 1e-5
"""Least variance of a segment's ellipse along any direction, as a share of the features'
mean variance. Small: an unusual combination of ordinary values shows along a direction in
which a segment's customers hardly vary (a price per item), which a larger floor would hide
(benchmarks/results/emerging_designs.md)."""


@dataclass(frozen=True, slots=True)
class MicroClusters:
    """Customers summarised as micro-clusters of at least ``min_report_size`` each.

    Attributes
    ----------
    centres : ndarray of shape (n_micro, n_features)
        Mean of each micro-cluster's customers.
    deviations : ndarray of shape (n_micro, n_features)
        Standard deviation of each feature among its customers.
    counts : ndarray of shape (n_micro,)
        Its customers.
    """

    centres: np.ndarray
    deviations: np.ndarray
    counts: np.ndarray

    @property
    def spreads(self) -> np.ndarray:
        """RMS distance of each micro-cluster's customers to its centre, per feature (at least
        ``MIN_SPREAD`` times the median micro-cluster's)."""
        spreads = np.sqrt((self.deviations**2).mean(axis=1))
        spreads = np.maximum(spreads, MIN_SPREAD * np.median(spreads))
        # every customer identical: any difference is novel
        return spreads if spreads.max(initial=0.0) > 0 else np.full_like(spreads, 1e-12)

    def distance(self, X: np.ndarray) -> np.ndarray:
        """Distance of each row of ``X`` to the nearest micro-cluster, in its spreads."""
        weights = self._weights()
        out = np.empty(X.shape[0])
        for rows in row_batches(X.shape[0]):
            batch = np.ascontiguousarray(X[rows])  # preprocessed columns may be Fortran-ordered
            # |x - c|² / s² = [x, |x|², 1] . [-2c / s², 1 / s², |c|² / s²]: one product, in
            # float32 (a threshold test needs no more; it halves the time).
            augmented = np.empty((batch.shape[0], batch.shape[1] + 2), dtype=np.float32)
            augmented[:, :-2] = batch
            augmented[:, -2] = np.einsum("ij,ij->i", batch, batch)
            augmented[:, -1] = 1.0
            out[rows] = (augmented @ weights).min(axis=1)
        return np.sqrt(np.maximum(out, 0.0))

    def _weights(self) -> np.ndarray:
        inverse = 1.0 / self.spreads**2
        offsets = (self.centres**2).sum(axis=1) * inverse
        weights = np.vstack([-2.0 * self.centres.T * inverse, inverse, offsets])
        return np.ascontiguousarray(weights, dtype=np.float32)  # a strided operand: 3x slower

    def within(self, centre: np.ndarray, radius: float) -> float:
        """Customers within ``radius`` of ``centre``, reading each micro-cluster as a Gaussian
        with its features' deviations (customers often vary along a few features only: one-time
        buyers share a frequency), its mass in the ball estimated from ``WITHIN_DRAWS`` fixed
        draws."""
        if not len(self.counts):
            return 0.0
        draws = np.random.default_rng(0).standard_normal((WITHIN_DRAWS, self.centres.shape[1]))
        inside = np.empty(len(self.counts))
        for i, (mean, deviation) in enumerate(zip(self.centres, self.deviations, strict=True)):
            offsets = draws * deviation + (mean - centre)
            inside[i] = np.count_nonzero(np.einsum("ij,ij->i", offsets, offsets) <= radius**2)
        return float(self.counts @ inside) / WITHIN_DRAWS


@dataclass(frozen=True, slots=True)
class SegmentShapes:
    """Each segment's training customers as an ellipse: their mean and covariance (as the
    Cholesky factor of its inverse), for a clusterer whose segments are convex in the
    preprocessed features (k-means without a reducer).

    A customer's distance is its Mahalanobis distance to the nearest segment: an extreme
    customer, an unusual combination of ordinary values and a group in a gap between segments
    all lie outside every ellipse, as a Gaussian mixture's likelihood sees them, for a few
    products per batch where 50 micro-cluster distances per customer cost several times as
    much (benchmarks/results/emerging_designs.md).

    Attributes
    ----------
    means : ndarray of shape (n_segments, n_features)
    whitening : ndarray of shape (n_segments, n_features, n_features)
        ``L`` with ``L @ L.T`` the inverse covariance: ``|(x - mean) @ L|`` is the distance.
    """

    means: np.ndarray
    whitening: np.ndarray

    def distance(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``X`` to the nearest segment."""
        n_segments, n_features = self.means.shape
        # Every segment's whitened coordinates from one product, x @ L - mean @ L, and their
        # squared norms from another (a block of ones per segment), in float32: a threshold
        # test needs no more, and a loop over segments is several times slower.
        stacked = np.concatenate(list(self.whitening), axis=1).astype(np.float32)
        shift = np.einsum("sf,sfg->sg", self.means, self.whitening).ravel().astype(np.float32)
        blocks = np.kron(np.eye(n_segments), np.ones((n_features, 1))).astype(np.float32)
        out = np.empty(X.shape[0])
        for rows in row_batches(X.shape[0]):
            white = np.asarray(X[rows], dtype=np.float32) @ stacked
            white -= shift
            white *= white
            out[rows] = (white @ blocks).min(axis=1)
        return np.sqrt(out)


def segment_shapes(X: np.ndarray, labels: np.ndarray) -> SegmentShapes:
    """The ellipses of the segments ``labels`` (-1: none) of ``X``. Each covariance gets
    ``SHAPE_FLOOR`` of the features' mean variance on its diagonal: a segment whose customers
    share a value (one-time buyers' frequency) would otherwise call any other value novel."""
    variance = float(np.var(X, axis=0).mean()) or 1.0  # identical customers: any unit
    floor = SHAPE_FLOOR * variance * np.eye(X.shape[1])
    segments = np.unique(labels[labels >= 0])
    means = np.stack([X[labels == s].mean(axis=0) for s in segments])
    covariances = [  # bias=True: a segment of one customer has no spread, not an undefined one
        np.atleast_2d(np.cov(X[labels == s], rowvar=False, bias=True)) + floor for s in segments
    ]
    whitening = np.stack([np.linalg.cholesky(np.linalg.inv(c)) for c in covariances])
    return SegmentShapes(means, whitening)


@dataclass(frozen=True, slots=True)
class TrainingDensity:
    """Where the training customers lay, and where those of them that were novel lay.

    Attributes
    ----------
    customers : MicroClusters
        All training customers.
    novel : MicroClusters
        The novel training customers (none when fewer than ``min_report_size``).
    threshold : float
        Distance (:meth:`novelty`) above which a customer is novel: the training quantile
        the model uses.
    min_size : int
        Fewest customers in a micro-cluster: a smaller group could have been anywhere.
    shapes : SegmentShapes or None
        The segments' ellipses, which then judge novelty instead of the micro-clusters.
    """

    customers: MicroClusters
    novel: MicroClusters
    threshold: float
    min_size: int
    shapes: SegmentShapes | None = None

    def novelty(self, X: np.ndarray) -> np.ndarray:
        """Distance of each row of ``X`` to the nearest segment's ellipse (with ``shapes``) or
        micro-cluster, in its spreads."""
        return (self.shapes or self.customers).distance(X)

    def share_within(self, centre: np.ndarray, radius: float) -> float:
        """The share of training customers within ``radius`` of ``centre``: the larger of
        the estimates from all customers and from the novel ones (Gaussians thin out faster
        than a customer base's tail, where novel customers lie), and never below half of
        ``min_size`` customers' share: a group smaller than a micro-cluster leaves no trace in
        them (half: what such a group holds on average)."""
        total = self.customers.counts.sum()
        within = max(self.customers.within(centre, radius), self.novel.within(centre, radius))
        return max(within, self.min_size / 2) / total


def fit_density(
    X: np.ndarray,
    customers: MicroClusters,
    threshold: float,
    min_size: int,
    novel: np.ndarray,
    shapes: SegmentShapes | None = None,
) -> TrainingDensity:
    """The training density of ``X`` summarised by ``customers`` (:func:`micro_clusters` of
    at least ``min_size`` customers), with micro-clusters of the customers then ``novel``."""
    X = np.asarray(X, dtype=np.float64)
    none = MicroClusters(np.empty((0, X.shape[1])), np.empty((0, X.shape[1])), np.empty(0))
    novel_ones = micro_clusters(X[novel], min_size) if novel.sum() >= min_size else none
    return TrainingDensity(customers, novel_ones, threshold, min_size, shapes)


def joint_quantile(scores: list[np.ndarray], quantile: float) -> float:
    """The quantile at which to set each of ``scores`` (one value per customer each) for
    ``1 - quantile`` of the customers to be above at least one: novelty tests combined by
    "or" flag no more customers than one would."""
    ranks = [rankdata(score, method="max") / len(score) for score in scores]
    return float(np.quantile(np.max(ranks, axis=0), quantile, method="lower"))


def micro_clusters(X: np.ndarray, min_size: int, seed: int = 0) -> MicroClusters:
    """Micro-clusters of the rows of ``X``, at most ``MICRO_CLUSTERS``, of at least
    ``min_size`` rows each (``MiniBatchKMeans``).

    The rows of a smaller micro-cluster (a few scattered customers in a tail) count in the
    nearest big one, but do not move its centre or spread: they stay the customers farthest
    from the micro-clusters, the tail a novelty threshold is calibrated on.
    """
    n_micro = int(np.clip(len(X) // (2 * min_size), 1, MICRO_CLUSTERS))
    labels = np.zeros(len(X), dtype=np.int64)
    if n_micro > 1:
        kmeans = MiniBatchKMeans(n_micro, batch_size=MICRO_BATCH, n_init=3, random_state=seed)
        labels = kmeans.fit(X).labels_
    big = np.flatnonzero(np.bincount(labels) >= min_size)
    if big.size == 0:
        big, labels = np.zeros(1, dtype=np.int64), np.zeros(len(X), dtype=np.int64)
    own = np.isin(labels, big)
    which = np.searchsorted(big, labels[own])
    sizes = np.bincount(which, minlength=big.size)
    sums = np.stack([np.bincount(which, c, big.size) for c in X[own].T], axis=1)
    centres = sums / sizes[:, np.newaxis]
    squares = (X[own] - centres[which]) ** 2
    deviations = np.sqrt(np.stack([np.bincount(which, c, big.size) for c in squares.T], 1))
    deviations /= np.sqrt(sizes)[:, np.newaxis]
    counts = sizes.astype(np.float64)
    if (~own).any():
        counts += np.bincount(pairwise_distances_argmin(X[~own], centres), minlength=big.size)
    return MicroClusters(centres, deviations, counts)
