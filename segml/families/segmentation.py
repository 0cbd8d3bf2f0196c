"""A fitted segmentation: the optional reduction step and one family's clusterer, fitted as one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segml.families import FAMILIES, Assigned, fit_reducer


@dataclass(frozen=True, slots=True)
class Segmentation:
    """A fitted reducer (or None) and clusterer of one family, with its training labels."""

    family: str
    params: dict[str, Any]
    reduction: dict[str, Any]
    reducer: Any
    estimator: Any
    labels: np.ndarray

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Map preprocessed features into the space the clusterer saw."""
        return X if self.reducer is None else self.reducer.transform(X)

    def assign(self, X: np.ndarray) -> Assigned:
        """Segment (-1: none), confidence and novelty of rows of preprocessed features, by the
        family's own assignment after the reducer's transform."""
        return FAMILIES[self.family].assign(self.estimator, self.embed(X))


def fit_segmentation(
    X: np.ndarray, family: str, params: dict[str, Any], reduction: dict[str, Any], seed: int
) -> Segmentation:
    """Reduce (if asked) and fit one family on the preprocessed features."""
    reducer = fit_reducer(X, reduction, seed)
    Z = X if reducer is None else reducer.embedding_
    estimator = FAMILIES[family].fit(Z, params, seed)
    labels = FAMILIES[family].training_labels(estimator)
    return Segmentation(family, params, reduction, reducer, estimator, labels)
