"""The contract every segmentation family follows, and the search-space vocabulary they share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import optuna


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer parameter searched between ``low`` and ``high`` (inclusive); ``default`` is
    the value tried before any search (None: the midpoint)."""

    low: int
    high: int
    log: bool = False
    default: int | None = None


@dataclass(frozen=True, slots=True)
class FloatRange:
    """A float parameter searched between ``low`` and ``high``; ``default`` as for
    :class:`IntRange`."""

    low: float
    high: float
    log: bool = False
    default: float | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """A categorical parameter; one of ``options``."""

    options: tuple[Any, ...]


Dimension = IntRange | FloatRange | Choice | int | float | str | bool | None
"""One searched dimension; a plain value fixes the parameter."""

Space = dict[str, Dimension]


def suggest(trial: optuna.Trial, prefix: str, space: Space) -> dict[str, Any]:
    """Ask ``trial`` for one value per dimension, named ``<prefix>.<param>`` in the study.

    Fixed values are returned as they are, without entering the study.
    """
    params: dict[str, Any] = {}
    for name, dim in space.items():
        key = f"{prefix}.{name}"
        if isinstance(dim, IntRange):
            params[name] = trial.suggest_int(key, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, FloatRange):
            params[name] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Choice):
            params[name] = trial.suggest_categorical(key, list(dim.options))
        else:
            params[name] = dim
    return params


class Assigned(NamedTuple):
    """What a family says of new rows.

    Attributes
    ----------
    labels : ndarray of int64
        Segment label of each row; -1 = no segment.
    confidence : ndarray of float64
        How firmly the row belongs to its segment, in [0, 1] (0 without a segment).
    novelty : ndarray of float64
        Higher means the row fits no segment well (the family's own scale).
    """

    labels: np.ndarray
    confidence: np.ndarray
    novelty: np.ndarray

    @classmethod
    def empty(cls, n_rows: int) -> Assigned:
        """Arrays of ``n_rows`` to fill batch by batch."""
        return cls(
            np.empty(n_rows, dtype=np.int64),
            np.empty(n_rows, dtype=np.float64),
            np.empty(n_rows, dtype=np.float64),
        )

    def fill(self, rows: slice, labels: Any, confidence: Any, novelty: Any) -> None:
        """Set the values of ``rows``."""
        self.labels[rows], self.confidence[rows], self.novelty[rows] = labels, confidence, novelty


class Family(Protocol):
    """A segmentation algorithm: how to search it, fit it and assign new customers.

    Implementations are pure: arrays in, arrays out; no MLflow, no I/O, no printing.
    """

    name: str
    default_space: Space
    n_segments_param: str | None
    """The parameter that sets the number of segments (None: the family finds it)."""
    count_params: tuple[str, ...]
    """Parameters counted in customers (a density family's smallest segment and
    neighbourhood): a fit on more customers scales them to mean the same."""

    def fit(self, X: np.ndarray, params: dict[str, Any], seed: int) -> Any:
        """Fit the clusterer on ``X`` and return the fitted estimator."""
        ...

    def training_labels(self, estimator: Any) -> np.ndarray:
        """Segment labels of the rows the estimator was fitted on (-1 = noise)."""
        ...

    def assign(self, estimator: Any, X: np.ndarray) -> Assigned:
        """Labels (-1 = no segment), confidence in [0, 1] and novelty of new rows, in one pass."""
        ...


BATCH_ROWS = 8_192
"""Rows per batch in ``assign``: bounds the temporary arrays, not the result. At this size a
batch's temporaries stay in the CPU cache and the thin matrix products of k-means and GMM (few
features) run on one BLAS thread; on busy cores BLAS's threads stall waiting for each other, and
65,536-row batches were several times slower."""


def float_rows(X: Any) -> np.ndarray:
    """``X`` as a 2-D array of finite floats (float32 kept, other types as float64): what
    scikit-learn's ``check_array`` checks, without its dataframe detection (milliseconds per
    call, and a scan of every installed package's entry points on the first)."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"expected numbers, got values of type {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"expected a 2-D array of rows and features, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("rows contain NaN or infinity")
    return X


def row_batches(n_rows: int, batch_rows: int | None = None) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_rows`` rows covering ``range(n_rows)``.

    Parameters
    ----------
    n_rows : int
        Number of rows to cover.
    batch_rows : int, optional
        Largest slice length; ``BATCH_ROWS`` (read at call time) when None.

    Yields
    ------
    slice
        The rows of one batch, in order.
    """
    size = BATCH_ROWS if batch_rows is None else batch_rows
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))
