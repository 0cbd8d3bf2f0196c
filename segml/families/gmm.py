"""Gaussian-mixture segmentation: soft assignment by posterior, novelty by log-likelihood."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_array

from segml.families._base import Assigned, Choice, FloatRange, IntRange, Space, row_batches


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

    def assign(self, estimator: GaussianMixture, X: np.ndarray) -> Assigned:
        """Most probable component, its posterior and the negative log-density, in one pass.

        Parameters
        ----------
        estimator : GaussianMixture
            A fitted mixture.
        X : ndarray of shape (n_samples, n_features)
            Rows to assign.

        Returns
        -------
        Assigned
            ``labels``: the component with the largest posterior (``predict``);
            ``confidence``: that posterior, in [1 / n_components, 1]; ``novelty``: the
            negative log-likelihood of the row under the mixture (``-score_samples``).
        """
        X = check_array(X, dtype=[np.float64, np.float32], ensure_min_samples=0)
        out = Assigned.empty(X.shape[0])
        for rows in row_batches(X.shape[0]):
            # What predict_proba and score_samples each compute, computed once.
            log_density, log_resp = estimator._estimate_log_prob_resp(X[rows])
            labels = log_resp.argmax(axis=1)
            posterior = np.exp(log_resp[np.arange(labels.size), labels])
            out.fill(rows, labels, np.clip(posterior, 0.0, 1.0), -log_density)
        return out
