"""Where the training customers lie, kept as aggregates only: a customer far from all of them is
novel whatever the clusterer (or a reducer in front of it) says.

The training customers' preprocessed features (before any reducer: UMAP's ``transform`` places
every new customer on the training manifold, so outliers vanish there) are summarised by
micro-clusters (BIRCH's clustering features, Zhang et al., 1996; CluStream's micro-clusters,
Aggarwal et al., 2003): centre, spread and count of groups of at least ``min_report_size``
customers, fitted with scikit-learn's ``MiniBatchKMeans``. No training row is kept.

A customer's novelty is its distance to the nearest micro-cluster in units of that
micro-cluster's spread; the threshold is a training quantile. The micro-clusters, read as a
mixture of spherical Gaussians, also say how many training customers a region held, which
tells a new group from the usual tail (:meth:`TrainingDensity.share_within`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ncx2
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


@dataclass(frozen=True, slots=True)
class TrainingDensity:
    """Micro-clusters of the training customers' preprocessed features.

    Attributes
    ----------
    centres : ndarray of shape (n_micro, n_features)
        Mean of each micro-cluster's customers.
    spreads : ndarray of shape (n_micro,)
        RMS distance of its customers to the centre, per feature (at least ``MIN_SPREAD``
        times the median micro-cluster's).
    counts : ndarray of shape (n_micro,)
        Its customers, each at least ``min_report_size`` (or all, for fewer customers).
    threshold : float
        Novelty above which a customer is novel: the training quantile the model uses.
    """

    centres: np.ndarray
    spreads: np.ndarray
    counts: np.ndarray
    threshold: float

    def novelty(self, X: np.ndarray) -> np.ndarray:
        """Distance of each row of ``X`` to the nearest micro-cluster, in its spreads."""
        weights = self._weights()
        out = np.empty(X.shape[0])
        for rows in row_batches(X.shape[0]):
            batch = X[rows]
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
        return weights.astype(np.float32)

    def share_within(self, centre: np.ndarray, radius: float) -> float:
        """The share of training customers within ``radius`` of ``centre``, reading each
        micro-cluster as a spherical Gaussian (never below one customer's share)."""
        n_features = self.centres.shape[1]
        offcentre = ((self.centres - centre) ** 2).sum(axis=1) / self.spreads**2
        inside = ncx2.cdf(radius**2 / self.spreads**2, n_features, offcentre)
        total = self.counts.sum()
        return max(float(self.counts @ inside) / total, 1.0 / total)


def fit_density(
    X: np.ndarray, min_size: int, quantile: float, seed: int = 0
) -> TrainingDensity:
    """Micro-clusters of ``X`` of at least ``min_size`` customers each, and the ``quantile``
    of the training customers' novelty as the threshold.

    The customers of a smaller micro-cluster (a few scattered customers in a tail) count in
    the nearest big one, but do not move its centre or spread: they stay the training
    customers farthest from the micro-clusters, the tail the threshold is calibrated on.
    """
    X = np.asarray(X, dtype=np.float64)
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
    centres = np.stack([np.bincount(which, c, big.size) for c in X[own].T], axis=1)
    centres /= sizes[:, np.newaxis]
    squares = ((X[own] - centres[which]) ** 2).sum(axis=1)
    spreads = np.sqrt(np.bincount(which, squares, big.size) / sizes / X.shape[1])
    spreads = np.maximum(spreads, MIN_SPREAD * np.median(spreads))
    if not spreads.max() > 0:  # every customer identical: any difference is novel
        spreads = np.full_like(spreads, np.finfo(np.float64).eps)
    counts = sizes + np.bincount(pairwise_distances_argmin(X[~own], centres), minlength=big.size) if (~own).any() else sizes
    draft = TrainingDensity(centres, spreads, counts.astype(np.float64), np.inf)
    threshold = float(np.quantile(draft.novelty(X), quantile))
    return TrainingDensity(centres, spreads, counts.astype(np.float64), threshold)
