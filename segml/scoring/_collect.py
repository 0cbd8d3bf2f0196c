"""What the monitoring needs from the scored customers, collected as they stream by.

Every engine hands :func:`emerging_candidates` and :func:`monitor` the same ``Collected``: the
segment counts, a sample ordered by id hash (the same whatever the input order), the novel
customers, and with ``--previous`` the migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.extensions import ExtensionArray

from segml.errors import DataError
from segml.features import CLOCK_COLUMNS, column_kinds, with_missing_category
from segml.migration import MigrationCounter
from segml.model import IS_NOVEL, SEGMENT_ID, Segmenter
from segml.monitoring import (
    BatchReport,
    Emerging,
    alerts,
    find_emerging,
    input_drift,
    min_candidate_size,
    segment_share_drift,
    segment_space,
)
from segml.scoring._clean import trimmed_text
from segml.scoring._ids import id_hashes
from segml.scoring._input import file_schema, input_files, read_batches
from segml.spec import Spec

SAMPLE_ROWS = 20_000
"""Customers (those with the smallest id hashes) kept for feature drift and segment geometry:
enough that sampling noise keeps a steady feature's drift distance far below its alarm (the
figures are in the README's monitoring notes), few enough to hold whatever the input size."""


@dataclass(frozen=True)
class Collected:
    """What the monitoring needs from a scored batch, whichever engine scored it.

    Attributes
    ----------
    rows_scored : int
        Customers scored.
    counts : Series
        Customers per segment id (-1 included), indexed by segment id in order.
    sample : DataFrame
        The ``SAMPLE_ROWS`` customers with the smallest id hashes, in hash order: the model's
        features, ``segment_id`` and ``is_novel``.
    sample_X : ndarray
        The sample's preprocessed features.
    novel_X : ndarray
        The novel customers' preprocessed features, in input order.
    novel_numeric : DataFrame
        Their numeric features.
    novel_hashes : ndarray of uint64
        Their id hashes.
    migration : DataFrame or None
        Customers per (previous, new) segment id, with ``--previous``.
    """

    rows_scored: int
    counts: pd.Series
    sample: pd.DataFrame
    sample_X: np.ndarray
    novel_X: np.ndarray
    novel_numeric: pd.DataFrame
    novel_hashes: np.ndarray
    migration: pd.DataFrame | None


@dataclass
class Sample:
    """The ``size`` customers with the smallest id hashes: a uniform, order-free sample.

    Offered customers wait until ``size`` of them have come, then the smallest are kept: each
    row is copied a few times per run, not once per batch. Features are kept column by column
    (numpy arrays; pandas arrays for text), because concatenating and selecting whole data
    frames copies and re-aligns every column at each step.
    """

    size: int
    hashes: list[np.ndarray] = field(default_factory=list)
    features: list[dict[str, _Values]] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    X: list[np.ndarray] = field(default_factory=list)
    waiting: int = 0
    limit: np.uint64 | None = None

    def wanted(self, hashes: np.ndarray) -> np.ndarray:
        """The positions of a batch's ``hashes`` that could enter the sample (only those need
        to be offered): below its largest hash, and among the batch's ``size`` smallest."""
        below = hashes < self.limit if self.limit is not None else np.ones(hashes.size, bool)
        rows = np.flatnonzero(below)
        return rows[_smallest(hashes[rows], self.size)] if rows.size > self.size else rows

    def add(
        self,
        rows: np.ndarray,
        hashes: np.ndarray,
        features: pd.DataFrame,
        segments: np.ndarray,
        novel: np.ndarray,
        X: np.ndarray,
    ) -> None:
        """Offer the customers at positions ``rows`` of a batch: their id ``hashes``, model
        ``features``, segment ids, novelty flags and preprocessed features ``X``."""
        self.hashes.append(hashes[rows])
        self.features.append({str(c): _take(features[c], rows) for c in features.columns})
        self.labels.append(np.column_stack([segments[rows], novel[rows]]))
        self.X.append(X[rows])
        self.waiting += rows.size
        if self.waiting >= self.size:
            self._keep_smallest()

    def rows(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The sample (its features, ``segment_id`` and ``is_novel``) and its preprocessed
        features, ordered by hash (the same whatever the input order)."""
        self._keep_smallest()
        order = np.argsort(self.hashes[0], kind="stable")
        labels = self.labels[0][order]
        frame = pd.DataFrame({c: v[order] for c, v in self.features[0].items()}).assign(
            **{SEGMENT_ID: labels[:, 0], IS_NOVEL: labels[:, 1].astype(bool)}
        )
        return frame, self.X[0][order]

    def _keep_smallest(self) -> None:
        merged = np.concatenate(self.hashes)
        features = {c: _concat([f[c] for f in self.features]) for c in self.features[0]}
        labels = np.concatenate([np.empty((0, 2), np.int64), *self.labels])
        X = np.concatenate(self.X)
        if merged.size > self.size:
            take = _smallest(merged, self.size)
            merged, labels, X = merged[take], labels[take], X[take]
            features = {c: values[take] for c, values in features.items()}
        if merged.size == self.size:
            self.limit = merged.max()
        self.hashes, self.features, self.labels, self.X = [merged], [features], [labels], [X]
        self.waiting = 0


def _smallest(hashes: np.ndarray, k: int) -> np.ndarray:
    """The positions of the ``k`` smallest ``hashes`` (``k`` < their number), in order."""
    return np.sort(np.argpartition(hashes, k - 1)[:k])


_Values = np.ndarray | ExtensionArray


def _take(column: pd.Series, rows: np.ndarray) -> _Values:
    """``rows`` of ``column``: numpy values, or for text its pandas array (whose numpy form
    would make a Python object of every value in the batch)."""
    if isinstance(column.dtype, np.dtype):
        return column.to_numpy()[rows]
    return column.array.take(rows)


def _concat(parts: list[_Values]) -> _Values:
    """The arrays ``_take`` made, end to end."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(cast(list[np.ndarray], parts))
    return pd.concat([pd.Series(p, copy=False) for p in parts], ignore_index=True).array


@dataclass
class Novel:
    """The novel customers, in input order: preprocessed features, numeric features, id
    hashes, and their output rows (written last, once their emerging ids are known)."""

    X: list[np.ndarray] = field(default_factory=list)
    numeric: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    output: list[pa.RecordBatch] = field(default_factory=list)

    def add(
        self, X: np.ndarray, numeric: np.ndarray, hashes: np.ndarray, output: pa.RecordBatch
    ) -> None:
        """Keep a batch's novel customers (its ``output`` rows are written later)."""
        self.X.append(X)
        self.numeric.append(numeric)
        self.hashes.append(hashes)
        self.output.append(output)

    @property
    def count(self) -> int:
        """Novel customers collected."""
        return sum(len(h) for h in self.hashes)


def previous_assignment(previous: Path | None, id_column: str) -> MigrationCounter | None:
    """The previous assignment (id hashes and segment ids) of an earlier score output."""
    if previous is None:
        return None
    hashes, segments = [], []
    for path in input_files(previous):
        schema = file_schema(path, ",")
        for column in (id_column, SEGMENT_ID):
            if column not in schema.names:
                raise DataError(f"{path}: missing column {column!r}; is it a segml score output?")
        for table in read_batches(path, schema, [id_column, SEGMENT_ID], ","):
            hashes.append(id_hashes(trimmed_text(table[id_column])))
            segments.append(table[SEGMENT_ID].cast(pa.int64()).to_numpy())
    return MigrationCounter(
        np.concatenate(hashes) if hashes else np.empty(0, np.uint64),
        np.concatenate(segments) if segments else np.empty(0, np.int64),
    )


def emerging_candidates(
    segmenter: Segmenter, collected: Collected, spec: Spec, previous: pd.DataFrame | None
) -> Emerging:
    """The batch's emerging candidates (see :func:`segml.monitoring.find_emerging`).

    Parameters
    ----------
    segmenter : Segmenter
        The model that scored the batch.
    collected : Collected
        What the engine collected while scoring.
    spec : Spec
        Its ``monitoring`` thresholds and ``min_report_size`` apply.
    previous : DataFrame, optional
        The candidates of the previous scoring run of the same model.
    """
    numeric, settings = list(collected.novel_numeric.columns), spec.monitoring
    sample, X_sample = collected.sample, collected.sample_X
    fitted = np.where(sample[IS_NOVEL].to_numpy(), -1, sample[SEGMENT_ID].to_numpy())
    space = segment_space(X_sample, fitted, sample[numeric])
    return find_emerging(
        collected.novel_X if len(collected.novel_X) else X_sample[:0],
        collected.novel_numeric.reset_index(drop=True),
        collected.novel_hashes,
        collected.rows_scored,
        min_candidate_size(settings, collected.rows_scored, spec.min_report_size),
        space,
        settings.candidate_max_spread,
        segmenter.segment_names(),
        previous,
        density=segmenter.density,
        min_growth=settings.candidate_min_growth,
    )


def monitor(
    segmenter: Segmenter, collected: Collected, spec: Spec, emerging: Emerging
) -> BatchReport:
    """The whole batch's findings: candidates, share and feature drift, migration, alerts.

    ``segmenter``, ``collected`` and ``spec`` are as for :func:`emerging_candidates` (here only
    the spec's ``monitoring`` thresholds apply); ``emerging`` is what it returned.
    """
    settings, sample = spec.monitoring, collected.sample
    shares = segment_share_drift(segmenter.catalog, collected.counts)
    categorical = column_kinds(segmenter.preprocessor)[1]
    batch = with_missing_category(sample[segmenter.features], categorical)
    clock = [c for c in CLOCK_COLUMNS if segmenter.spec.data.kind == "transactions"]
    features = input_drift(segmenter.reference, batch, settings, clock)
    found = alerts(emerging, shares, features, settings)
    return BatchReport(emerging, shares, features, collected.migration, found)
