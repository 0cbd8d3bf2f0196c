"""k-means segmentation: exact Lloyd below a size threshold, mini-batch above it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from segml.families._base import Assigned, IntRange, Space, float_rows, row_batches

MINIBATCH_MIN_ROWS = 50_000
"""From this many rows on, ``fit`` uses ``MiniBatchKMeans``; below it, full ``KMeans``."""
MINIBATCH_BATCH_SIZE = 4_096
"""Mini-batch size; sklearn advises >= 256 x cores for its threads to share the work."""


def _default_space() -> Space:
    return {"n_clusters": IntRange(2, 12), "init": "k-means++", "n_init": 3}


@dataclass(slots=True)
class KMeansFamily:
    """k-means on Euclidean distance; confidence from the margin to the runner-up centroid."""

    name: str = "kmeans"
    default_space: Space = field(default_factory=_default_space)
    n_segments_param: str | None = "n_clusters"
    count_params: tuple[str, ...] = ()

    def fit(self, X: np.ndarray, params: dict[str, Any], seed: int) -> KMeans | MiniBatchKMeans:
        """Fit k-means on ``X``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Preprocessed features.
        params : dict
            ``n_clusters`` and optionally ``init`` and ``n_init``.
        seed : int
            Random state of the initialisation.

        Returns
        -------
        KMeans or MiniBatchKMeans
            ``MiniBatchKMeans`` from ``MINIBATCH_MIN_ROWS`` rows on.
        """
        common = {
            "n_clusters": int(params["n_clusters"]),
            "init": params.get("init", "k-means++"),
            "n_init": params.get("n_init", 3),
            "random_state": seed,
        }
        if X.shape[0] >= MINIBATCH_MIN_ROWS:
            model = MiniBatchKMeans(batch_size=MINIBATCH_BATCH_SIZE, **common)
        else:
            model = KMeans(**common)
        return model.fit(X)

    def training_labels(self, estimator: KMeans | MiniBatchKMeans) -> np.ndarray:
        """Labels of the fitted rows (k-means has no noise)."""
        return np.asarray(estimator.labels_, dtype=np.int64)

    def assign(self, estimator: KMeans | MiniBatchKMeans, X: np.ndarray) -> Assigned:
        """Nearest centroid, a margin confidence and the distance, from one distance pass.

        Parameters
        ----------
        estimator : KMeans or MiniBatchKMeans
            A fitted estimator from ``fit``.
        X : ndarray of shape (n_samples, n_features)
            Rows to assign.

        Returns
        -------
        Assigned
            ``labels``: index of the nearest centroid; ``confidence``: ``1 - d1 / d2``
            (nearest over second-nearest centroid distance), 1 at a centroid, 0 on the boundary
            between two, 1.0 when there is a single centroid; ``novelty``: ``d1``, the Euclidean
            distance to the nearest centroid in the units of ``X``.
        """
        X = float_rows(X)
        centres = estimator.cluster_centers_
        # float32 rows and centres (a UMAP embedding): sklearn's float32 distances, as ever.
        in_float32 = X.dtype == centres.dtype == np.float32
        centres = centres.astype(np.float64, copy=False)
        minus_twice = -2.0 * centres
        centre_norms = np.einsum("ij,ij->i", centres, centres)[:, np.newaxis]
        out = Assigned.empty(X.shape[0])
        for rows in row_batches(X.shape[0]):
            if in_float32:
                labels, d1, d2 = _nearest_two(estimator.transform(X[rows]).T)
            else:
                # |x - c|² = |x|² + (|c|² - 2 x.c): the bracket for every centroid, |x|² for two.
                batch = X[rows].astype(np.float64, copy=False)
                partial = minus_twice @ batch.T
                partial += centre_norms
                labels, p1, p2 = _nearest_two(partial)
                norms = np.einsum("ij,ij->i", batch, batch)
                d1 = np.sqrt(np.maximum(p1 + norms, 0.0))
                d2 = np.sqrt(np.maximum(p2 + norms, 0.0))
            # A single centroid has no runner-up: d2 = inf, confidence 1.
            ratio = np.divide(d1, d2, out=np.ones_like(d1), where=d2 > 0)
            out.fill(rows, labels, np.clip(1.0 - ratio, 0.0, 1.0), d1)
        return out


def _nearest_two(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``values`` (one row per centroid), in one pass over its rows: the row of
    the smallest value (the first of ties, as ``argmin``), the smallest and the second smallest
    (inf for a single row)."""
    n_rows, n_columns = values.shape
    small = np.min_scalar_type(n_rows)
    labels = np.zeros(n_columns, dtype=small)
    first = values[0].copy()
    second = np.full_like(first, np.inf)
    closer = np.empty(n_columns, dtype=bool)
    marked = np.empty(n_columns, dtype=small)
    for row in range(1, n_rows):
        np.minimum(second, np.maximum(first, values[row]), out=second)
        np.less(values[row], first, out=closer)
        # Each closer row beats all rows before it: the label is the last closer row.
        np.multiply(closer, small.type(row), out=marked)
        np.maximum(labels, marked, out=labels)
        np.minimum(first, values[row], out=first)
    return labels.astype(np.int64), first, second
