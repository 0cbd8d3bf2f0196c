"""Internal quality of a segmentation: silhouette, Davies-Bouldin, Calinski-Harabasz and DBCV."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

DBCV_SAMPLE_SIZE = 2_000
"""Rows DBCV is computed on: hdbscan's ``validity_index`` holds a dense distance matrix per
segment, so memory and time grow with the square of the rows it sees."""


@dataclass(frozen=True, slots=True)
class Quality:
    """Internal quality of one segmentation; NaN where a metric is undefined.

    ``silhouette`` is the mean over all rows with a noise row scoring 0, so leaving customers
    unsegmented cannot buy silhouette; ``davies_bouldin`` and ``calinski_harabasz`` ignore
    noise rows; ``dbcv`` counts noise as hdbscan does (it lowers the score); ``noise_share`` is
    over all rows.
    """

    silhouette: float
    davies_bouldin: float
    calinski_harabasz: float
    dbcv: float
    noise_share: float
    n_segments: int


def quality_metrics(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    sample_size: int = 10_000,
    seed: int = 0,
    with_dbcv: bool = False,
) -> Quality:
    """Score a segmentation with internal validity indices.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The feature matrix the segmentation was fitted on.
    labels : ndarray of shape (n_samples,)
        Integer segment ids; -1 marks noise (no segment).
    sample_size : int
        Silhouette is computed on a seeded random sample of at most this many non-noise rows,
        so its cost is bounded instead of growing with n².
    seed : int
        Seeds the silhouette and DBCV samples.
    with_dbcv : bool
        Compute DBCV (density models). It runs on a seeded sample of at most
        ``DBCV_SAMPLE_SIZE`` rows, noise included; segments with a single sampled row are
        scored as noise in that sample.

    Returns
    -------
    Quality
        Silhouette (noise rows scoring 0), Davies-Bouldin and Calinski-Harabasz are NaN when
        fewer than 2 segments (or as many segments as rows) remain; ``dbcv`` is NaN unless
        requested.
    """
    X = np.asarray(X)
    labels = np.asarray(labels)
    noise = labels < 0
    n = labels.shape[0]
    kept = ~noise
    Xs, ls = X[kept], labels[kept]
    n_segments = int(np.unique(ls).size)
    silhouette = davies_bouldin = calinski_harabasz = np.nan
    if 2 <= n_segments < ls.size:
        davies_bouldin = float(davies_bouldin_score(Xs, ls))
        calinski_harabasz = float(calinski_harabasz_score(Xs, ls))
        segmented = ls.size / n
        silhouette = _sampled_silhouette(Xs, ls, sample_size, seed) * segmented
    dbcv = _dbcv(X, labels, seed) if with_dbcv else np.nan
    return Quality(
        silhouette=silhouette,
        davies_bouldin=davies_bouldin,
        calinski_harabasz=calinski_harabasz,
        dbcv=dbcv,
        noise_share=float(noise.mean()) if n else np.nan,
        n_segments=n_segments,
    )


def _sampled_silhouette(X: np.ndarray, labels: np.ndarray, sample_size: int, seed: int) -> float:
    """Mean silhouette on at most ``sample_size`` rows; NaN if the sample holds < 2 segments."""
    if labels.size > sample_size:
        idx = np.random.default_rng(seed).choice(labels.size, size=sample_size, replace=False)
        X, labels = X[idx], labels[idx]
    n_labels = np.unique(labels).size
    if not 2 <= n_labels < labels.size:
        return np.nan
    return float(silhouette_score(X, labels))


def _dbcv(X: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """DBCV (Moulavi et al. 2014) via hdbscan on a seeded sample; NaN when undefined."""
    from hdbscan.validity import validity_index

    if labels.size > DBCV_SAMPLE_SIZE:
        idx = np.random.default_rng(seed).choice(labels.size, size=DBCV_SAMPLE_SIZE, replace=False)
        idx.sort()
        X, labels = X[idx], labels[idx]
    # validity_index loops over 0..max(label) and fails on one-row segments: relabel densely,
    # turning segments with a single sampled row into noise.
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (ids >= 0) & (counts >= 2)
    dense = np.where(keep, np.cumsum(keep) - 1, -1)[inverse]
    if keep.sum() < 2:
        return np.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        score = validity_index(np.ascontiguousarray(X, dtype=np.float64), dense)
    return float(score) if np.isfinite(score) else np.nan
