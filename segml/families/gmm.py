"""Gaussian-mixture segmentation: soft assignment by posterior, novelty by log-likelihood."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture

from segml.families._base import (
    Assigned,
    Choice,
    FloatRange,
    IntRange,
    Space,
    float_rows,
    row_batches,
)


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
    n_segments_param: str | None = "n_components"
    count_params: tuple[str, ...] = ()

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
        X = float_rows(X)
        weighted_log_prob = _weighted_log_prob(estimator)
        out = Assigned.empty(X.shape[0])
        for rows in row_batches(X.shape[0]):
            weighted = weighted_log_prob(X[rows])
            labels = weighted.argmax(axis=1)
            top = weighted[np.arange(labels.size), labels]
            # Posterior of the top component: 1 / sum_k exp(w_k - w_top); density: the log-sum.
            weighted -= top[:, np.newaxis]
            total = np.exp(weighted, out=weighted).sum(axis=1)
            out.fill(rows, labels, np.clip(1.0 / total, 0.0, 1.0), -(top + np.log(total)))
        return out


PAIRWISE_FROM = 8
"""From this many numbers on, numpy sums in pairs (in another order than one after another)."""


def _weighted_log_prob(estimator: GaussianMixture) -> Callable[[np.ndarray], np.ndarray]:
    """``estimator._estimate_weighted_log_prob`` (log p(x | k) + log w_k), to the last bit.

    For full and tied covariances, sklearn loops over the components; here one matrix product
    serves them all, and the squares are summed in sklearn's order.
    """
    if estimator.covariance_type not in ("full", "tied"):
        return estimator._estimate_weighted_log_prob
    means = estimator.means_
    n_components, n_features = means.shape
    chol = np.broadcast_to(estimator.precisions_cholesky_, (n_components, n_features, n_features))
    stacked = np.concatenate(list(chol), axis=1)
    shift = np.concatenate([mu @ c for mu, c in zip(means, chol, strict=True)])
    log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    log_2pi = n_features * math.log(2 * math.pi)
    log_weights = np.log(estimator.weights_)

    def weighted(X: np.ndarray) -> np.ndarray:
        y = X @ stacked
        y -= shift
        squares = np.square(y, out=y).reshape(len(X), n_components, n_features)
        if n_features >= PAIRWISE_FROM:
            distance = squares.sum(axis=2)
        else:  # numpy adds fewer numbers one after the other: the same sums, faster
            distance = squares[:, :, 0].copy()
            for feature in range(1, n_features):
                distance += squares[:, :, feature]
        distance += log_2pi
        distance *= -0.5
        distance += log_det
        distance += log_weights
        return distance

    return weighted
