"""Gaussian-mixture segmentation: soft assignment by posterior, novelty by log-likelihood."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture

from segml.families._base import Choice, FloatRange, IntRange, Space, row_batches


class LabelledGaussianMixture(GaussianMixture):
    """``GaussianMixture`` that keeps its training labels in ``labels_``, as k-means does.

    ``fit`` ends with an E-step, so ``labels_`` equals ``predict`` on the training rows.
    """

    labels_: np.ndarray

    def fit_predict(self, X: np.ndarray, y: Any = None) -> np.ndarray:
        """Fit the mixture and return (and keep) the labels of ``X``."""
        self.labels_ = np.asarray(super().fit_predict(X, y), dtype=np.int64)
        return self.labels_


def _default_space() -> Space:
    return {
        "n_components": IntRange(2, 12),
        "covariance_type": Choice(("full", "diag", "tied", "spherical")),
        "reg_covar": FloatRange(1e-6, 1e-2, log=True),
        "n_init": 1,
        "max_iter": 200,
    }


@dataclass(slots=True)
class GMMFamily:
    """Gaussian mixture; confidence is the largest posterior, novelty the negative log-density."""

    name: str = "gmm"
    default_space: Space = field(default_factory=_default_space)

    def fit(self, X: np.ndarray, params: dict[str, Any], seed: int) -> LabelledGaussianMixture:
        """Fit a Gaussian mixture on ``X``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Preprocessed features.
        params : dict
            ``n_components``, ``covariance_type``, ``reg_covar`` and optionally ``n_init``
            and ``max_iter``.
        seed : int
            Random state of the k-means initialisation.

        Returns
        -------
        LabelledGaussianMixture
            The fitted mixture, with ``labels_``.
        """
        model = LabelledGaussianMixture(
            n_components=int(params["n_components"]),
            covariance_type=params.get("covariance_type", "full"),
            reg_covar=float(params.get("reg_covar", 1e-6)),
            n_init=int(params.get("n_init", 1)),
            max_iter=int(params.get("max_iter", 200)),
            random_state=seed,
        )
        return model.fit(X)

    def training_labels(self, estimator: LabelledGaussianMixture) -> np.ndarray:
        """Labels of the fitted rows (a mixture has no noise)."""
        return estimator.labels_

    def assign(self, estimator: GaussianMixture, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Most probable component and its posterior probability for new rows.

        Parameters
        ----------
        estimator : GaussianMixture
            A fitted mixture.
        X : ndarray of shape (n_samples, n_features)
            Rows to assign.

        Returns
        -------
        labels : ndarray of int64, shape (n_samples,)
            The component with the largest posterior (``predict``).
        confidence : ndarray of float64, shape (n_samples,)
            That largest posterior, in [1 / n_components, 1].
        """
        labels = np.empty(X.shape[0], dtype=np.int64)
        confidence = np.empty(X.shape[0], dtype=np.float64)
        for rows in row_batches(X.shape[0]):
            proba = estimator.predict_proba(X[rows])
            labels[rows] = proba.argmax(axis=1)
            confidence[rows] = proba.max(axis=1)
        return labels, np.clip(confidence, 0.0, 1.0)

    def novelty(self, estimator: GaussianMixture, X: np.ndarray) -> np.ndarray:
        """Negative log-likelihood of each row under the mixture (``-score_samples``)."""
        out = np.empty(X.shape[0], dtype=np.float64)
        for rows in row_batches(X.shape[0]):
            out[rows] = -estimator.score_samples(X[rows])
        return out
