"""k-means segmentation: exact Lloyd below a size threshold, mini-batch above it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from segml.families._base import Assigned, IntRange, Space, row_batches

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
        out = Assigned.empty(X.shape[0])
        single = estimator.cluster_centers_.shape[0] == 1
        for rows in row_batches(X.shape[0]):
            dist = estimator.transform(X[rows])
            labels = dist.argmin(axis=1)
            if single:
                out.fill(rows, labels, 1.0, dist[:, 0])
                continue
            # The nearest distance, then the runner-up's with the nearest masked out.
            at = np.arange(labels.size)
            d1 = dist[at, labels]
            dist[at, labels] = np.inf
            d2 = dist.min(axis=1)
            ratio = np.divide(d1, d2, out=np.ones_like(d1), where=d2 > 0)
            out.fill(rows, labels, np.clip(1.0 - ratio, 0.0, 1.0), d1)
        return out
