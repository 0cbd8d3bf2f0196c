"""Reference implementations the tests measure segml's fast paths against (not library code)."""

from __future__ import annotations

import hdbscan as hdbscan_lib
import numpy as np
from hdbscan.prediction import approximate_predict, approximate_predict_scores

_NO_PREDICTION_DATA = (
    "the HDBSCAN clusterer has no prediction data; fit it with prediction_data=True or call "
    "clusterer.generate_prediction_data()"
)


def _require_prediction_data(clusterer: hdbscan_lib.HDBSCAN) -> None:
    if not hasattr(clusterer, "prediction_data_"):  # hdbscan's property raises AttributeError
        raise ValueError(_NO_PREDICTION_DATA)


def reference_assign(
    clusterer: hdbscan_lib.HDBSCAN, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``hdbscan.approximate_predict`` (a Python loop over rows): the reference for the
    ``hdbscan`` family's ``assign``."""
    _require_prediction_data(clusterer)
    labels, strength = approximate_predict(clusterer, X)
    return np.asarray(labels, dtype=np.int64), np.asarray(strength, dtype=np.float64)


def reference_novelty(clusterer: hdbscan_lib.HDBSCAN, X: np.ndarray) -> np.ndarray:
    """``hdbscan.prediction.approximate_predict_scores``: the reference of ``assign``'s novelty."""
    _require_prediction_data(clusterer)
    return np.asarray(approximate_predict_scores(clusterer, X), dtype=np.float64)
