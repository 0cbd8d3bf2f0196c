"""Batch scoring: stream customers through a segment model into an atomically written file.

The input (CSV or Parquet; a file or a folder of them) is read in pyarrow batches of only the
columns the model needs, so memory stays flat as the input grows (but for the novel customers,
kept until the candidates are known). Each batch is checked against the model's input
signature, bad rows are quarantined or fail the run (the spec's ``data.bad_rows``), and the
scores are appended to a staging file. What the monitoring finds (emerging candidates, drift,
migration) needs the whole batch, so the novel customers' rows, the only ones that can have an
``emerging_id``, are kept and written last, once it is known; the output is renamed onto its
target only when complete. A transaction log is aggregated per customer first, as at
training, so its memory grows with the log.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
from mlflow.entities import LoggedModelInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pandas.api.extensions import ExtensionArray

from segml import report
from segml import tracking as keys
from segml._io import flush_to_disk, is_parquet, open_parquet
from segml.data import NUMERIC_SHARE, REASON_COLUMN, ROW_COLUMN, read_customers
from segml.errors import DataError
from segml.features import column_kinds, customer_table, select_columns
from segml.model import (
    CONFIDENCE,
    IS_NOVEL,
    NO_SEGMENT,
    NOVELTY_SCORE,
    SEGMENT_ID,
    SEGMENT_NAME,
    Assignment,
    Segmenter,
)
from segml.monitoring import (
    EMERGING_ID,
    BatchReport,
    Emerging,
    MigrationCounter,
    alerts,
    find_emerging,
    input_drift,
    migration_summary,
    min_candidate_size,
    psi_level,
    segment_share_drift,
    segment_space,
)
from segml.registry import ModelRef, load_segmenter
from segml.spec import Monitoring, Spec

READ_ROWS = 65_536
"""Rows per Parquet batch (CSV batches are blocks of ``CSV_BLOCK_BYTES``)."""
CSV_BLOCK_BYTES = 4 << 20
SAMPLE_ROWS = 20_000
"""Customers (those with the smallest id hashes) kept for feature drift and segment geometry.
On 20 steady batches the largest normed Wasserstein distance of a feature was 0.028 with
20,000 of them, 0.022 with 50,000 and 0.015 with 200,000: far from the alarm at 0.1."""
INPUT_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
OUTPUT_SUFFIXES = (".parquet", ".pq", ".csv")
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
SOURCE_COLUMN = "source"
REPEATED_COLUMNS = (SEGMENT_ID, SEGMENT_NAME, IS_NOVEL, EMERGING_ID, MODEL_NAME, MODEL_VERSION)
QUARANTINE_SUFFIX = ".quarantine.csv"
ARTIFACT_DIR = "scoring"
CANDIDATES_ARTIFACT = f"{ARTIFACT_DIR}/candidates.json"
ProgressFn = Callable[[int, int | None], None]
"""Called after each batch with the input rows read so far and the total (None if unknown)."""


@dataclass(frozen=True, slots=True)
class Signature:
    """The input a segment model needs: the id column and its numeric and categorical features.

    ``categories`` holds, per categorical column, the values seen at training.
    """

    id_column: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: dict[str, pa.Array]

    @classmethod
    def of(cls, segmenter: Segmenter) -> Signature:
        """The signature of a fitted segmenter (from its preprocessing step)."""
        numeric, categorical = column_kinds(segmenter.preprocessor)
        categories: dict[str, pa.Array] = {}
        if categorical:
            encoder = segmenter.preprocessor.named_transformers_["cat"].named_steps["onehot"]
            for column, known in zip(categorical, encoder.categories_, strict=True):
                categories[column] = pa.array([str(v) for v in known], pa.large_string())
        return cls(segmenter.id_column, tuple(numeric), tuple(categorical), categories)

    @property
    def columns(self) -> list[str]:
        """Every column read from the input."""
        return [self.id_column, *self.numeric, *self.categorical]

    def check(self, path: Path, schema: pa.Schema) -> tuple[str, ...]:
        """Fail on a missing column or a column of the wrong type; return the ignored columns."""
        names = [str(n) for n in schema.names]
        for column in self.columns:
            if column not in names:
                what = "id column" if column == self.id_column else "model input column"
                found = ", ".join(names[:12])
                raise DataError(f"{path}: missing {what} {column!r} (found: {found})")
            kind = schema.field(column).type
            if pa.types.is_nested(kind) or (column in self.numeric and not _numeric_type(kind)):
                expected = "numbers" if column in self.numeric else "text or integers"
                raise DataError(
                    f"{path}: column {column!r} has type {kind}; the model expects {expected}"
                )
        return tuple(n for n in names if n not in self.columns)


def _numeric_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
    )


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """What one scoring run read, wrote, set aside and found."""

    model: ModelRef
    model_name: str
    family: str
    output: Path
    quarantine: Path | None
    rows_read: int
    rows_scored: int
    quarantined: dict[str, int]
    excluded: dict[str, int]
    ignored_columns: tuple[str, ...]
    missing: dict[str, int]
    novel: int
    seconds: float
    report: BatchReport
    settings: Monitoring
    min_report_size: int
    segment_names: dict[int, str]

    @property
    def rows_per_second(self) -> float:
        """Customers scored per second of the whole run."""
        return self.rows_scored / self.seconds if self.seconds > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        """The scoring run's metrics, under the keys of ``segml.tracking``."""
        shares, features = self.report.shares, self.report.features
        emerging = self.report.emerging.table
        values = {
            keys.SCORING_ROWS_READ: self.rows_read,
            keys.SCORING_ROWS_SCORED: self.rows_scored,
            keys.SCORING_ROWS_QUARANTINED: sum(self.quarantined.values()),
            keys.SCORING_SECONDS: self.seconds,
            keys.SCORING_ROWS_PER_SECOND: self.rows_per_second,
            keys.SCORING_NOVEL_SHARE: self.novel / self.rows_scored,
            keys.SCORING_ALERT: float(bool(self.report.alerts)),
            keys.EMERGING_CANDIDATES: len(emerging),
            keys.EMERGING_SHARE: float(emerging["customers"].sum()) / self.rows_scored,
            keys.DRIFT_SHARE_PSI: shares.psi,
            keys.DRIFT_SHARE_P_VALUE: shares.p_value,
            keys.DRIFT_FEATURE_PSI_MAX: features["psi"].max() if len(features) else np.nan,
            keys.DRIFT_FEATURES_DRIFTED: features["drifted"].mean() if len(features) else np.nan,
        }
        if self.report.migration is not None:
            matched, share = migration_summary(self.report.migration)
            values |= {keys.MIGRATION_CUSTOMERS: matched, keys.MIGRATION_SHARE: share}
        return {k: float(v) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------
# Reading


def input_files(path: Path) -> list[Path]:
    """The files to score: ``path`` itself, or the CSV/Parquet files of a folder, by name.

    Hidden files and files starting with ``_`` (such as Spark's ``_SUCCESS``) are skipped.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in INPUT_SUFFIXES
    )
    if not files:
        raise DataError(f"{path}: the folder holds no CSV or Parquet file")
    return files


def file_schema(path: Path, delimiter: str) -> pa.Schema:
    """The file's columns (CSV columns as text, names stripped as at training)."""
    try:
        if is_parquet(path):
            return pq.read_schema(path)
        sep = r"\s+" if delimiter == "whitespace" else delimiter
        header = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig").columns
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header and no rows)") from None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV or Parquet file ({_first(exc)})") from None
    return pa.schema([(str(c).strip(), pa.string()) for c in header])


def _read(path: Path, schema: pa.Schema, columns: list[str], delimiter: str) -> Iterator[pa.Table]:
    """Batches of ``columns`` of one file, in order."""
    try:
        if is_parquet(path):
            for batch in open_parquet(path).iter_batches(READ_ROWS, columns=columns):
                yield pa.Table.from_batches([batch])
        elif delimiter == "whitespace":
            chunks = pd.read_csv(path, sep=r"\s+", dtype=str, usecols=columns, chunksize=READ_ROWS)
            for chunk in chunks:
                yield pa.Table.from_pandas(chunk[columns], preserve_index=False)
        else:
            yield from _read_csv(path, schema, columns, delimiter)
    except (pa.ArrowException, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV or Parquet file ({_first(exc)})") from None


def _read_csv(
    path: Path, schema: pa.Schema, columns: list[str], delimiter: str
) -> Iterator[pa.Table]:
    reader = pv.open_csv(
        path,
        read_options=pv.ReadOptions(
            column_names=schema.names, skip_rows=1, block_size=CSV_BLOCK_BYTES
        ),
        parse_options=pv.ParseOptions(delimiter=delimiter),
        convert_options=pv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
        ),
    )
    for batch in reader:
        yield pa.Table.from_batches([batch])


def _first(exc: BaseException) -> str:
    """The first line of an error; a CSV parse error loses the row text it quotes (PII)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ": ".join(line.split(": ")[:2]) if line.startswith("CSV parse error") else line


def _total_rows(files: list[Path]) -> int | None:
    """Input rows, when the files say so without being read (Parquet)."""
    if not all(is_parquet(f) for f in files):
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ---------------------------------------------------------------------------------------------
# Ids

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME = np.uint64(0x100000001B3)
_ALL_BITS = np.uint64(2**64 - 1)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: spreads every input bit over the whole word."""
    h = h ^ (h >> np.uint64(30))
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    return h ^ (h >> np.uint64(31))


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash of each id (text), eight bytes at a time, without Python loops.

    The same id always gets the same hash, in any process and any batch: it orders the
    sample, finds duplicates and matches customers with a previous output.
    """
    offsets, raw = _buffers(_large_text(ids))
    data = np.zeros(raw.size + 8, dtype=np.uint8)
    data[: raw.size] = raw
    # Overlapping little-endian words: words[i] holds bytes i..i+7.
    words = np.ndarray((data.size - 7,), dtype="<u8", buffer=data, strides=(1,))
    starts, lengths = offsets[:-1], np.diff(offsets)
    if lengths.size and lengths.min() == lengths.max() > 0:
        return _fixed_width_hashes(words, int(offsets[0]), int(offsets[-1]), int(lengths[0]))
    h = _mix(lengths.astype(np.uint64))
    for k in range(0, int(lengths.max(initial=0)), 8):
        left = np.clip(lengths - k, 0, 8).astype(np.uint64)
        mask = np.where(left >= 8, _ALL_BITS, (np.uint64(1) << (left * np.uint64(8))) - 1)
        mixed = _mix((h * _PRIME) ^ (words[np.minimum(starts + k, data.size - 8)] & mask))
        h = np.where(left > 0, mixed, h)  # an id's hash ends with its last word
    return h


def _fixed_width_hashes(words: np.ndarray, start: int, end: int, width: int) -> np.ndarray:
    """``id_hashes`` of ids that all have ``width`` bytes (most id columns), from the bytes
    ``start:end``: each step reads a strided view of ``words`` under one mask (6x faster)."""
    h = _mix(np.array([width], dtype=np.uint64))
    for k in range(0, width, 8):
        mask = np.uint64(2 ** (8 * min(width - k, 8)) - 1)
        h = _mix((h * _PRIME) ^ (words[start + k : end : width] & mask))
    return h


def _large_text(values: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """``values`` as one large-string array."""
    text = values.cast(pa.large_string())
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _buffers(text: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (n + 1) and the bytes of a large-string array, as numpy views."""
    offsets = np.frombuffer(
        text.buffers()[1], np.int64, count=len(text) + 1, offset=text.offset * 8
    )
    raw = text.buffers()[2]
    return offsets, np.frombuffer(raw, np.uint8) if raw is not None else np.empty(0, np.uint8)


class _SeenIds:
    """The ids scored so far.

    While ids come in strictly increasing order (a table sorted by its key), none can repeat:
    their hashes are only kept, and indexed when the order first breaks. The index is a bitmap
    of hash prefixes (``BITS_PER_ID`` bits per id expected, grown when more come) that clears
    most ids at once; the few it cannot clear are looked up exactly in sorted runs, which are
    merged ``RUN_FANOUT`` at a time (size-tiered, like a log-structured tree).
    """

    def __init__(self, expected: int = 0) -> None:
        self.runs: list[np.ndarray] = []
        self.bits = max(_MIN_BITMAP_BITS, _bits_for(expected))
        self.bitmap = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
        self.in_order: list[np.ndarray] | None = []
        self.last: pa.Scalar | None = None

    def duplicated(self, ids: pa.LargeStringArray, hashes: np.ndarray) -> np.ndarray:
        """True for an id (with its hash) seen before, in an earlier call or earlier in
        ``ids``; the others are remembered."""
        if self.in_order is not None:
            if _increasing(ids, self.last):
                self.in_order.append(hashes)
                self.last = ids[-1] if len(ids) else self.last
                return np.zeros(hashes.size, dtype=bool)
            kept = np.concatenate([np.empty(0, np.uint64), *self.in_order])
            self.in_order = None
            kept.sort()
            self._add(kept)
        return self._duplicated(hashes)

    def _duplicated(self, hashes: np.ndarray) -> np.ndarray:
        ordered = np.sort(hashes)
        if (ordered[1:] == ordered[:-1]).any():
            twice = _seen_earlier(hashes)
        else:
            twice = np.zeros(hashes.size, dtype=bool)
        maybe = self._marked(hashes) & ~twice
        if maybe.any():
            twice[maybe] = self._in_runs(hashes[maybe])
        if twice.any():
            ordered = np.sort(hashes[~twice])
        self._add(ordered)
        return twice

    @property
    def count(self) -> int:
        """Distinct ids seen."""
        return sum(run.size for run in [*self.runs, *(self.in_order or [])])

    def _add(self, run: np.ndarray) -> None:
        """Remember the sorted hashes ``run`` (none: nothing to do)."""
        if not run.size:
            return
        self.runs.append(run)
        if self.count * BITS_PER_ID > 1 << self.bits:
            self.bits = _bits_for(self.count)
            self.bitmap = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
            for old in self.runs:
                self._mark(old)
        else:
            self._mark(run)
        while len(self.runs) >= RUN_FANOUT and _tier(self.runs[-RUN_FANOUT]) == _tier(run):
            run = np.concatenate(self.runs[-RUN_FANOUT:])
            run.sort()
            del self.runs[-RUN_FANOUT:]
            self.runs.append(run)

    def _bytes_and_bits(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each hash's bitmap byte and the mask of its bit in that byte."""
        slots = (hashes >> np.uint64(64 - self.bits)).astype(np.intp)
        return slots >> 3, np.left_shift(np.uint8(1), (slots & 7).astype(np.uint8))

    def _marked(self, hashes: np.ndarray) -> np.ndarray:
        at, bit = self._bytes_and_bits(hashes)
        return self.bitmap[at] & bit != 0

    def _mark(self, ordered: np.ndarray) -> None:
        """Set the bits of sorted ``ordered``."""
        at, bit = self._bytes_and_bits(ordered)
        self.bitmap[at] |= bit
        # Where ids share a byte, the assignment above kept only one of their bits.
        shared = np.flatnonzero(at[1:] == at[:-1])
        if shared.size:
            both = np.concatenate([shared, shared + 1])
            np.bitwise_or.at(self.bitmap, at[both], bit[both])

    def _in_runs(self, hashes: np.ndarray) -> np.ndarray:
        # Sorted queries walk each run in order: several times faster than in input order.
        order = np.argsort(hashes)
        ordered = hashes[order]
        twice = np.zeros(hashes.size, dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, ordered), run.size - 1)
            twice |= run[at] == ordered
        found = np.empty_like(twice)
        found[order] = twice
        return found


BITS_PER_ID = 32
"""Bitmap bits per id seen: about one id in ``BITS_PER_ID`` needs an exact lookup."""
RUN_FANOUT = 8
_MIN_BITMAP_BITS = 20


def _bits_for(ids: int) -> int:
    """Bitmap size (log2 of its bits) for at least ``BITS_PER_ID`` bits per id."""
    return int(np.ceil(np.log2(max(ids, 1) * BITS_PER_ID)))


def _tier(run: np.ndarray) -> int:
    """Runs of one tier differ in size by less than ``RUN_FANOUT`` times."""
    return int(np.log2(max(run.size, 1)) // np.log2(RUN_FANOUT))


def _increasing(ids: pa.LargeStringArray, after: pa.Scalar | None) -> bool:
    """Whether ``ids`` are strictly increasing, all greater than ``after`` (if given)."""
    if after is not None and len(ids) and not pc.greater(ids[0], after).as_py():
        return False
    return len(ids) < 2 or pc.all(pc.greater(ids[1:], ids[:-1])).as_py()


def _seen_earlier(hashes: np.ndarray) -> np.ndarray:
    """True for a hash that appears earlier in ``hashes``."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    twice = np.zeros(hashes.size, dtype=bool)
    twice[order[1:]] = ordered[1:] == ordered[:-1]
    return twice


# ---------------------------------------------------------------------------------------------
# Cleaning


class _Reasons:
    """The first reason each row of a batch is bad."""

    def __init__(self, n_rows: int) -> None:
        self.bad = np.zeros(n_rows, dtype=bool)
        self._reason: np.ndarray | None = None  # made when needed: most batches have no bad row

    @property
    def reason(self) -> np.ndarray:
        """Per row, the first reason it is bad, or None."""
        if self._reason is None:
            self._reason = np.full(self.bad.size, None, dtype=object)
        return self._reason

    def flag(self, mask: np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        new = mask & ~self.bad
        self.reason[new] = reason
        self.bad |= new


def _text(column: pa.ChunkedArray | pa.Array) -> pa.LargeStringArray:
    """Values as trimmed text; empty strings become missing."""
    text = _large_text(column)
    offsets, raw = _buffers(text)
    starts, ends = offsets[:-1], offsets[1:]
    filled = ends > starts
    edges = np.concatenate([raw[starts[filled]], raw[ends[filled] - 1]])
    # Whitespace starts and ends with a control, space or non-ASCII byte: most texts have none.
    if ((edges <= 0x20) | (edges >= 0x7F)).any():
        text = pc.utf8_trim_whitespace(text)
        offsets, _ = _buffers(text)
        filled = offsets[1:] > offsets[:-1]
    empty = ~filled & pc.is_valid(text).to_numpy(zero_copy_only=False)
    if empty.any():
        text = pc.if_else(pa.array(empty), pa.scalar(None, pa.large_string()), text)
    return text


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 (NaN when missing) and the cells that are present but not numbers."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        values = column.cast(pa.float64()).to_numpy()
        return values, np.zeros(values.size, dtype=bool)
    text = _text(column)
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        values = pd.to_numeric(text.to_pandas(), errors="coerce").to_numpy(dtype=float)
    present = pc.is_valid(text).to_numpy(zero_copy_only=False)
    return values, present & np.isnan(values)


def clean_batch(
    signature: Signature, table: pa.Table, path: Path, first: bool
) -> tuple[pd.DataFrame, np.ndarray, pa.LargeStringArray, _Reasons, dict[str, np.ndarray]]:
    """The model's input frame of a batch, its numeric columns as an array (one row per
    customer, shared with the frame), its ids, the bad rows and the missing cells of each
    column (True where a value is missing and will be imputed)."""
    reasons = _Reasons(table.num_rows)
    id_column = signature.id_column
    ids = _text(table[id_column])
    reasons.flag(
        pc.is_null(ids).to_numpy(zero_copy_only=False), f"missing id in column {id_column!r}"
    )
    # The model sees its columns only; the ids stay in Arrow, because their round trip through
    # pandas strings (in and out of ``predict``) costs as much as the model. The numbers go in
    # one block, as pandas keeps them: no copy.
    block = np.empty((len(signature.numeric), table.num_rows))
    missing: dict[str, np.ndarray] = {}
    for row, column in enumerate(signature.numeric):
        values, unparsed = _numbers(table[column])
        block[row] = values
        if first:
            _check_numeric(path, column, unparsed, values, table[column])
        reasons.flag(unparsed, f"non-numeric value in column {column!r}")
        reasons.flag(np.isinf(values), f"non-finite value in column {column!r}")
        missing[column] = np.isnan(values) & ~unparsed
    frame = pd.DataFrame(block.T, columns=list(signature.numeric), copy=False)
    for column in signature.categorical:
        text = _text(table[column])
        known = pc.is_in(text, value_set=signature.categories[column])
        unseen = pc.and_(pc.is_valid(text), pc.invert(known)).to_numpy(zero_copy_only=False)
        reasons.flag(unseen, f"unseen category in column {column!r}")
        missing[column] = pc.is_null(text).to_numpy(zero_copy_only=False)
        # Text with NaN where missing: what every model's imputer takes for missing (older
        # models' only match NaN, and pandas' NA made them fail).
        frame[column] = text.to_pandas().astype("str")
    if first:
        _check_present(path, missing)
    return frame, block.T, ids, reasons, missing


def _check_present(path: Path, missing: dict[str, np.ndarray]) -> None:
    """The signature check of a file's first batch: no model column may be empty throughout
    (the model would score every customer on an imputed value), as at training."""
    for column, cells in missing.items():
        if cells.size and cells.all():
            raise DataError(
                f"{path}: column {column!r} has no values (all of the first {cells.size} "
                "missing); the model needs it to assign segments"
            )


def _check_numeric(
    path: Path, column: str, unparsed: np.ndarray, values: np.ndarray, raw: pa.ChunkedArray
) -> None:
    """The signature check of a text column: most of its first batch must parse as numbers."""
    present = int(unparsed.sum() + np.isfinite(values).sum())
    if present and unparsed.sum() / present > 1 - NUMERIC_SHARE:
        example = raw[int(np.flatnonzero(unparsed)[0])].as_py()
        raise DataError(
            f"{path}: column {column!r} does not hold numbers ({unparsed.sum()} of the first "
            f"{present} values do not parse, e.g. {example!r}); the model expects numbers"
        )


# ---------------------------------------------------------------------------------------------
# Collecting what the monitoring needs


@dataclass(frozen=True)
class Scored:
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
    sample_Z : ndarray
        The sample in the model's space.
    novel_Z : ndarray
        The novel customers in the model's space, in input order.
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
    sample_Z: np.ndarray
    novel_Z: np.ndarray
    novel_numeric: pd.DataFrame
    novel_hashes: np.ndarray
    migration: pd.DataFrame | None


@dataclass
class _Sample:
    """The ``size`` customers with the smallest id hashes: a uniform, order-free sample.

    Offered customers wait until ``size`` of them have come, then the smallest are kept: each
    row is copied a few times per run, not once per batch. Features are kept column by column
    (numpy arrays; pandas arrays for text): concatenating and selecting data frames took ten
    times longer.
    """

    size: int
    hashes: list[np.ndarray] = field(default_factory=list)
    features: list[dict[str, _Values]] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    Z: list[np.ndarray] = field(default_factory=list)
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
        Z: np.ndarray,
    ) -> None:
        """Offer the customers at positions ``rows`` of a batch: their id ``hashes``, model
        ``features``, segment ids, novelty flags and model-space coordinates ``Z``."""
        self.hashes.append(hashes[rows])
        self.features.append({str(c): _take(features[c], rows) for c in features.columns})
        self.labels.append(np.column_stack([segments[rows], novel[rows]]))
        self.Z.append(Z[rows])
        self.waiting += rows.size
        if self.waiting >= self.size:
            self._keep_smallest()

    def rows(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The sample (its features, ``segment_id`` and ``is_novel``) and its model-space
        coordinates, ordered by hash (the same whatever the input order)."""
        self._keep_smallest()
        order = np.argsort(self.hashes[0], kind="stable")
        labels = self.labels[0][order]
        frame = pd.DataFrame({c: v[order] for c, v in self.features[0].items()}).assign(
            **{SEGMENT_ID: labels[:, 0], IS_NOVEL: labels[:, 1].astype(bool)}
        )
        return frame, self.Z[0][order]

    def _keep_smallest(self) -> None:
        merged = np.concatenate(self.hashes)
        features = {c: _concat([f[c] for f in self.features]) for c in self.features[0]}
        labels = np.concatenate([np.empty((0, 2), np.int64), *self.labels])
        Z = np.concatenate(self.Z)
        if merged.size > self.size:
            take = _smallest(merged, self.size)
            merged, labels, Z = merged[take], labels[take], Z[take]
            features = {c: values[take] for c, values in features.items()}
        if merged.size == self.size:
            self.limit = merged.max()
        self.hashes, self.features, self.labels, self.Z = [merged], [features], [labels], [Z]
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
class _Novel:
    """The novel customers, in input order: model-space coordinates, numeric features, id
    hashes, and their output rows (written last, once their emerging ids are known)."""

    Z: list[np.ndarray] = field(default_factory=list)
    numeric: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    output: list[pa.RecordBatch] = field(default_factory=list)

    def add(
        self, Z: np.ndarray, numeric: np.ndarray, hashes: np.ndarray, output: pa.RecordBatch
    ) -> None:
        self.Z.append(Z)
        self.numeric.append(numeric)
        self.hashes.append(hashes)
        self.output.append(output)

    @property
    def count(self) -> int:
        """Novel customers collected."""
        return sum(len(h) for h in self.hashes)


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True, slots=True)
class _Checked:
    """A batch of input rows, checked: its model input, ids, id hashes, bad and missing cells."""

    table: pa.Table
    path: Path
    first_row: int
    frame: pd.DataFrame
    numeric: np.ndarray
    ids: pa.LargeStringArray
    hashes: np.ndarray
    reasons: _Reasons
    missing: dict[str, np.ndarray]


@dataclass
class _Run:
    """The state of one scoring pass over the input."""

    segmenter: Segmenter
    signature: Signature
    policy: str
    staging: Path
    quarantine_path: Path
    model_name: str
    model_version: str | None
    migration: MigrationCounter | None
    on_progress: ProgressFn | None
    total: int | None = None
    rows_read: int = 0
    rows_scored: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    counts: Counter[int] = field(default_factory=Counter)
    seen: _SeenIds = field(default_factory=_SeenIds)
    sample: _Sample = field(default_factory=lambda: _Sample(SAMPLE_ROWS))
    novel: _Novel = field(default_factory=_Novel)
    writer: _Behind | None = None
    repeated: list[pa.DictionaryArray] = field(default_factory=list)
    schema: pa.Schema = field(init=False)
    names: pa.Array = field(init=False)
    model: pa.Array = field(init=False)
    version: pa.Array = field(init=False)

    def __post_init__(self) -> None:
        self.schema = _staged_schema(self.signature.id_column)
        self.names = pa.array(self.segmenter.names_by_position(), pa.string())
        self.model = pa.array([self.model_name], pa.string())
        self.version = pa.array([self.model_version] if self.model_version else [], pa.string())

    def expect(self, total: int | None) -> None:
        """Announce the input's row count (None if unknown), before its first batch."""
        self.total = total
        self.seen = _SeenIds(total or 0)

    def add(self, table: pa.Table, path: Path, first_row: int, first: bool) -> None:
        """Check, quarantine and score one batch of input rows."""
        self.take(self.check(table, path, first_row, first))

    def check(self, table: pa.Table, path: Path, first_row: int, first: bool) -> _Checked:
        """Check one batch of input rows, in input order (duplicates need the earlier ones)."""
        frame, numeric, ids, reasons, missing = clean_batch(self.signature, table, path, first)
        hashes = id_hashes(ids)
        self._flag_duplicates(ids, hashes, reasons)
        return _Checked(table, path, first_row, frame, numeric, ids, hashes, reasons, missing)

    def take(self, checked: _Checked) -> None:
        """Quarantine and score a checked batch."""
        reasons, table = checked.reasons, checked.table
        self.missing.update({c: np.count_nonzero(cells) for c, cells in checked.missing.items()})
        if reasons.bad.any():
            self._set_aside(table, reasons, checked.path, checked.first_row)
        good = ~reasons.bad
        if good.all():
            self._score(checked.frame, checked.numeric, checked.ids, checked.hashes)
        elif good.any():
            frame = checked.frame[good].reset_index(drop=True)
            ids = checked.ids.filter(pa.array(good))
            self._score(frame, checked.numeric[good], ids, checked.hashes[good])
        self.rows_read += table.num_rows
        if self.on_progress is not None:
            self.on_progress(self.rows_read, self.total)

    def _flag_duplicates(
        self, ids: pa.LargeStringArray, hashes: np.ndarray, reasons: _Reasons
    ) -> None:
        candidates = np.flatnonzero(~reasons.bad)
        if candidates.size < len(ids):
            ids = ids.take(candidates)
        twice = self.seen.duplicated(ids, hashes[candidates])
        mask = np.zeros(reasons.bad.size, dtype=bool)
        mask[candidates[twice]] = True
        reasons.flag(mask, f"duplicate id in column {self.signature.id_column!r}")

    def _set_aside(self, table: pa.Table, reasons: _Reasons, path: Path, first_row: int) -> None:
        bad = np.flatnonzero(reasons.bad)
        if self.policy != "drop":
            raise bad_row_error(path, first_row + bad[0] + 1, reasons.reason[bad[0]])
        rows = table.take(pa.array(bad)).to_pandas()
        rows.insert(0, SOURCE_COLUMN, str(path))
        rows.insert(0, REASON_COLUMN, reasons.reason[bad])
        rows.insert(0, ROW_COLUMN, first_row + bad + 1)
        exists = self.quarantine_path.exists()
        rows.to_csv(self.quarantine_path, mode="a", header=not exists, index=False)
        self.quarantined.update(Counter(reasons.reason[bad].tolist()))

    def _score(
        self, frame: pd.DataFrame, numeric: np.ndarray, ids: pa.Array, hashes: np.ndarray
    ) -> None:
        """Score a batch of good rows (``numeric``: its numeric columns, one row per customer)."""
        found = self.segmenter.assign(frame)
        segments, novel = found.segment_ids, found.is_novel
        scores, keep = self._scores(ids, found), None
        if novel.any():  # their rows are written last, with their emerging ids (``finish``)
            rows = np.flatnonzero(novel)
            self.novel.add(found.Z[rows], numeric[rows], hashes[rows], scores.take(rows))
            keep = ~novel
        self._write(scores, keep)
        wanted = self.sample.wanted(hashes)
        if wanted.size:
            features = select_columns(frame, self.segmenter.features)
            self.sample.add(wanted, hashes, features, segments, novel, found.Z)
        per_segment = np.bincount(segments + 1)
        self.counts.update({int(i) - 1: int(n) for i, n in enumerate(per_segment) if n})
        if self.migration is not None:
            self.migration.add(hashes, segments)
        self.rows_scored += len(segments)

    def _scores(self, ids: pa.Array, found: Assignment) -> pa.RecordBatch:
        """The output rows of a scored batch (no emerging ids yet)."""
        n = len(found.segment_ids)
        columns = [
            ids,
            pa.array(found.segment_ids, pa.int64()),
            _coded(found.segment_ids + 1, self.names),
            pa.array(found.confidence, pa.float64()),
            pa.array(found.novelty, pa.float64()),
            pa.array(found.is_novel, pa.bool_()),
            *self._same_in_every_row(n),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _write(self, scores: pa.RecordBatch | pa.Table, keep: np.ndarray | None = None) -> None:
        """Queue ``scores`` (only the rows where the mask ``keep`` is true, if given)."""
        if self.writer is None:
            self.writer = _Behind(_output_writer(self.staging, self.schema), self.staging)
        self.writer.write(scores, keep)

    def _same_in_every_row(self, n: int) -> list[pa.DictionaryArray]:
        """The emerging id (empty until the candidates are known), model name and version of
        ``n`` rows: one set of arrays for all batches of that size."""
        if not self.repeated or len(self.repeated[0]) != n:
            self.repeated = [_repeated(text, n) for text in (_NO_TEXT, self.model, self.version)]
        return self.repeated

    def flush_written(self) -> None:
        """Queue the flush to disk of the output written so far: the writing thread does it
        while the candidates are searched, and ``finish`` has only the novel rows left."""
        if self.writer is not None:
            self.writer.flush()

    def finish(self, emerging: Emerging) -> None:
        """Queue the novel customers' rows, with their emerging ids, after all others, then the
        closing of the staged output and its flush to disk (the writing thread does them)."""
        if self.novel.output:
            column = self.schema.get_field_index(EMERGING_ID)
            ids = _coded(emerging.labels - 1, pa.array(emerging.ids, pa.string()))
            novel = pa.Table.from_batches(self.novel.output, self.schema)
            self._write(novel.set_column(column, self.schema.field(column), ids))
            self.novel.output = []  # the writing thread holds them until written
        if self.writer is not None:
            self.writer.end(flush=True)

    def close(self) -> None:
        """Wait until the staged output is written and closed; raise a failure to write it."""
        if self.writer is not None:
            self.writer.close()

    def scored(self) -> Scored:
        """What the monitoring needs, from the batches scored."""
        (sample, sample_Z), novel = self.sample.rows(), self.novel
        numeric = list(self.signature.numeric)
        return Scored(
            self.rows_scored,
            pd.Series(self.counts).sort_index(),
            sample,
            sample_Z,
            np.concatenate(novel.Z) if novel.Z else np.empty((0, 0)),
            pd.DataFrame(
                np.concatenate([np.empty((0, len(numeric))), *novel.numeric]), columns=numeric
            ),
            np.concatenate([np.empty(0, np.uint64), *novel.hashes]),
            self.migration.matrix() if self.migration is not None else None,
        )


def bad_row_error(path: Path, row: int, reason: str) -> DataError:
    """The error that stops a run at its first bad row (``data.bad_rows: fail``)."""
    return DataError(
        f"{path}: data row {row}: {reason}; fix it or set data.bad_rows: drop to quarantine "
        "such rows"
    )


def output_schema(id_column: str) -> pa.Schema:
    """The columns of a score output, in order."""
    return pa.schema(
        [
            (id_column, pa.string()),
            (SEGMENT_ID, pa.int64()),
            (SEGMENT_NAME, pa.string()),
            (CONFIDENCE, pa.float64()),
            (NOVELTY_SCORE, pa.float64()),
            (IS_NOVEL, pa.bool_()),
            (EMERGING_ID, pa.string()),
            (MODEL_NAME, pa.string()),
            (MODEL_VERSION, pa.string()),
        ]
    )


_NO_TEXT = pa.array([], pa.string())


def _coded(codes: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    """``values[codes]`` as a dictionary array (missing where a code is negative)."""
    missing = np.asarray(codes) < 0
    indices = pa.array(np.asarray(codes, np.int32), mask=missing if missing.any() else None)
    return pa.DictionaryArray.from_arrays(indices, values)


def _repeated(values: pa.Array, n: int) -> pa.DictionaryArray:
    """``values[0]`` ``n`` times (missing if ``values`` is empty), as a dictionary array."""
    return _coded(np.full(n, 0 if len(values) else -1), values)


def _staged_schema(id_column: str) -> pa.Schema:
    """The output's columns as staged: large-string ids and dictionary-coded repeated text.

    The files are written without the Arrow schema, so readers see plain text columns.
    """
    fields = []
    for column in output_schema(id_column):
        if column.name == id_column:
            column = column.with_type(pa.large_string())
        elif column.type == pa.string():
            column = column.with_type(pa.dictionary(pa.int32(), pa.string()))
        fields.append(column)
    return pa.schema(fields)


class _Behind:
    """A Parquet or CSV writer of ``path`` that writes on a background thread, up to
    ``QUEUED_WRITES`` batches behind its caller.

    pyarrow encodes and writes without the GIL, so batches are written while the next are
    scored; the queue evens out batches that take longer to write than to score. The writer is
    closed and the file flushed to disk on that thread too, before the file is renamed into
    place (a rename over an earlier output then has nothing left to flush).
    """

    def __init__(self, writer: pq.ParquetWriter | pv.CSVWriter, path: Path) -> None:
        self.writer = writer
        self.path = path
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="segml-write")
        self.pending: deque[Future[None]] = deque()
        self.failed = False
        self.ending = False

    def write(self, data: pa.RecordBatch | pa.Table, keep: np.ndarray | None = None) -> None:
        """Queue ``data`` (only the rows where the mask ``keep`` is true, if given: selected on
        the writing thread), once fewer than ``QUEUED_WRITES`` are waiting to be written."""
        while len(self.pending) >= QUEUED_WRITES:
            self._raise(self.pending.popleft().exception())
        self.pending.append(self.pool.submit(self._write, data, keep))

    def _write(self, data: pa.RecordBatch | pa.Table, keep: np.ndarray | None) -> None:
        if keep is not None:
            data = data.filter(keep)
        if data.num_rows:
            self.writer.write(data)

    def flush(self) -> None:
        """Queue the flush to disk of what is written so far (the writer may hold a tail)."""
        self.pending.append(self.pool.submit(flush_to_disk, self.path))

    def end(self, flush: bool) -> None:
        """Queue the closing of the writer behind the last batch, and with ``flush`` the
        file's flush to disk, and return: the caller goes on while they run (``close`` waits
        for them)."""
        if not self.ending:
            self.ending = True
            self.pending.append(self.pool.submit(self._close, flush))

    def close(self) -> None:
        """Write what is queued, then close the writer (unflushed unless ``end`` asked). Only
        the first failure is raised, and once: the writes queued after it, and the closing,
        fail because of it."""
        self.end(flush=False)
        errors = [pending.exception() for pending in self.pending]
        self.pending.clear()
        self.pool.shutdown(wait=False)  # all done: joining the idle thread took 2-3 ms
        for error in errors:
            self._raise(error)

    def _close(self, flush: bool) -> None:
        self.writer.close()
        if flush:
            flush_to_disk(self.path)

    def _raise(self, error: BaseException | None) -> None:
        if error is not None and not self.failed:
            self.failed = True
            raise error


QUEUED_WRITES = 3


def _ahead(batches: Iterator[Any]) -> Iterator[Any]:
    """``batches``, each made on a background thread while the caller works on the previous."""
    with ThreadPoolExecutor(1, thread_name_prefix="segml-read") as pool:
        upcoming = pool.submit(next, batches, None)
        while (table := upcoming.result()) is not None:
            upcoming = pool.submit(next, batches, None)
            yield table


def _output_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter | pv.CSVWriter:
    """The writer of a Parquet or a CSV output ``path``."""
    return _parquet_writer(path, schema) if is_parquet(path) else pv.CSVWriter(str(path), schema)


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Dictionary encoding only where values repeat, and statistics only where a reader would
    filter (on unique ids both cost more time than they save space; the model's name and
    version are the same in every row). Values are encoded a whole batch at a time: with
    pyarrow's default of 1,024 the writer took a quarter longer."""
    filtered = [SEGMENT_ID, SEGMENT_NAME, IS_NOVEL, EMERGING_ID]
    return pq.ParquetWriter(
        path,
        schema,
        use_dictionary=list(REPEATED_COLUMNS),
        write_statistics=filtered,
        write_batch_size=READ_ROWS,
        store_schema=False,
    )


def score(
    segmenter: Segmenter,
    input_path: Path,
    output: Path,
    *,
    model: ModelRef | None = None,
    spec: Spec | None = None,
    previous: Path | None = None,
    previous_candidates: pd.DataFrame | None = None,
    reference_date: dt.date | None = None,
    on_progress: ProgressFn | None = None,
) -> ScoreSummary:
    """Score every customer of ``input_path`` and write ``output`` (Parquet or CSV) atomically.

    Parameters
    ----------
    segmenter : Segmenter
        The fitted segment model.
    input_path : Path
        A customer table (or, for a transaction model, a transaction log): CSV or Parquet,
        a file or a folder of them.
    output : Path
        ``.parquet`` or ``.csv``; written beside, renamed when complete. Rows set aside go to
        ``<output stem>.quarantine.csv`` with their data row number, reason and file.
    model : ModelRef, optional
        What the output names as model and version.
    spec : Spec, optional
        Overrides the model's ``monitoring`` thresholds and ``data.bad_rows`` policy.
    previous : Path, optional
        An earlier score output: the migration of customers present in both.
    previous_candidates : DataFrame, optional
        The candidates of the previous scoring run of the same model.
    reference_date : date, optional
        For transactions: features as of this day (default: the last purchase).
    on_progress : callable, optional
        Called after each batch with the rows read so far and the total (if known).

    Raises
    ------
    DataError
        Unreadable input, a missing or mistyped column, a bad row under ``bad_rows: fail``,
        or nothing left to score. No output is written then.
    """
    started = time.perf_counter()
    check_paths(input_path, output, previous)
    own = spec or segmenter.spec
    files = input_files(input_path)
    signature = Signature.of(segmenter)
    model = model or ModelRef("", segmenter.spec.model_name)
    output.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(output) as tmp:
        run = _Run(
            segmenter,
            signature,
            own.data.bad_rows,
            Path(tmp) / f"scores{output.suffix}",
            Path(tmp) / "quarantine.csv",
            model.name or segmenter.spec.model_name,
            model.version,
            previous_assignment(previous, signature.id_column),
            on_progress,
        )
        try:
            ignored, excluded = _feed(run, files, input_path, reference_date)
            if run.rows_scored == 0:
                raise DataError(f"{input_path}: no customer to score ({_nothing(run)})")
            run.flush_written()
            scored = run.scored()
            emerging = emerging_candidates(segmenter, scored, own, previous_candidates)
            run.finish(emerging)  # the writing thread ends the output while the drift is measured
            report = monitor(segmenter, scored, own, emerging)
        finally:
            run.close()
        quarantine = _publish(run, output)
    return ScoreSummary(
        model,
        run.model_name,
        segmenter.segmentation.family,
        output,
        quarantine,
        run.rows_read,
        run.rows_scored,
        dict(run.quarantined),
        excluded,
        ignored,
        dict(run.missing),
        run.novel.count,
        time.perf_counter() - started,
        report,
        own.monitoring,
        own.min_report_size,
        segmenter.segment_names(),
    )


def staging_folder(output: Path) -> tempfile.TemporaryDirectory[str]:
    """This run's hidden staging folder beside ``output`` (``.<name>.pid<PID>.*``), once the
    folders that killed runs scoring to ``output`` left behind are removed."""
    pattern = re.compile(re.escape(f".{output.name}.pid") + r"(\d+)\.")
    for folder in output.parent.glob(f".{glob.escape(output.name)}.pid*"):
        found = pattern.match(folder.name)
        if found and folder.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
    prefix = f".{output.name}.pid{os.getpid()}."
    return tempfile.TemporaryDirectory(dir=output.parent, prefix=prefix)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return True


def check_paths(input_path: Path, output: Path, previous: Path | None) -> None:
    """Refuse an output of an unknown kind or one that would overwrite an input."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"{output}: the output must end in .parquet or .csv")
    for other in (input_path, previous):
        if other is not None and output.resolve() == other.resolve():
            raise DataError(f"{output}: the output would overwrite an input; choose another path")


def _nothing(run: _Run) -> str:
    if run.rows_read == 0:
        return "the input has no data rows"
    return f"all {run.rows_read} rows were quarantined"


def _feed(
    run: _Run, files: list[Path], input_path: Path, reference_date: dt.date | None
) -> tuple[tuple[str, ...], dict[str, int]]:
    """Stream every input file through ``run``; return the ignored columns and exclusions."""
    spec = run.segmenter.spec
    first_schema = file_schema(files[0], spec.data.delimiter)
    if spec.data.kind == "transactions" and not set(run.segmenter.features) & set(
        first_schema.names
    ):
        return (), _feed_transactions(run, input_path, reference_date)
    run.expect(_total_rows(files))
    ignored: dict[str, None] = {}
    for path in files:
        schema = file_schema(path, spec.data.delimiter)
        ignored |= dict.fromkeys(run.signature.check(path, schema))
        for checked in _ahead(_checked(run, path, schema, spec.data.delimiter)):
            run.take(checked)
    return tuple(ignored), {}


def _checked(run: _Run, path: Path, schema: pa.Schema, delimiter: str) -> Iterator[_Checked]:
    """The batches of one file, read and checked (on ``_ahead``'s thread)."""
    offset = 0
    for table in _read(path, schema, run.signature.columns, delimiter):
        yield run.check(table, path, offset, first=offset == 0)
        offset += table.num_rows


def _feed_transactions(
    run: _Run, input_path: Path, reference_date: dt.date | None
) -> dict[str, int]:
    """Aggregate a transaction log per customer (as at training), then score the customers."""
    spec = run.segmenter.spec
    data = spec.data.model_copy(
        update={"source": input_path, "bad_rows": run.policy, "reference_date": None}
    )
    spec = spec.model_copy(update={"data": data})
    intake = read_customers(spec, reference_date)
    table = customer_table(spec, intake, reference_date)
    if not intake.quarantine.empty:
        intake.quarantine.to_csv(run.quarantine_path, index=False)
    for report_ in intake.reports:
        run.quarantined.update(report_.quarantined)
    customers = pa.Table.from_pandas(table[run.signature.columns], preserve_index=False)
    run.expect(customers.num_rows)
    for start in range(0, customers.num_rows, READ_ROWS):
        run.add(customers.slice(start, READ_ROWS), input_path, start, first=start == 0)
    run.rows_read = intake.reports[0].rows_read
    return dict(intake.reports[0].excluded)


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
        for table in _read(path, schema, [id_column, SEGMENT_ID], ","):
            hashes.append(id_hashes(_text(table[id_column])))
            segments.append(table[SEGMENT_ID].cast(pa.int64()).to_numpy())
    return MigrationCounter(
        np.concatenate(hashes) if hashes else np.empty(0, np.uint64),
        np.concatenate(segments) if segments else np.empty(0, np.int64),
    )


def emerging_candidates(
    segmenter: Segmenter, scored: Scored, spec: Spec, previous: pd.DataFrame | None
) -> Emerging:
    """The batch's emerging candidates (see :func:`segml.monitoring.find_emerging`).

    Parameters
    ----------
    segmenter : Segmenter
        The model that scored the batch.
    scored : Scored
        What the engine collected while scoring.
    spec : Spec
        Its ``monitoring`` thresholds and ``min_report_size`` apply.
    previous : DataFrame, optional
        The candidates of the previous scoring run of the same model.
    """
    numeric, settings, sample = list(scored.novel_numeric.columns), spec.monitoring, scored.sample
    Z_sample = scored.sample_Z
    fitted = np.where(sample[IS_NOVEL].to_numpy(), -1, sample[SEGMENT_ID].to_numpy())
    space = segment_space(Z_sample, fitted, sample[numeric])
    return find_emerging(
        scored.novel_Z if len(scored.novel_Z) else Z_sample[:0],
        scored.novel_numeric.reset_index(drop=True),
        scored.novel_hashes,
        scored.rows_scored,
        min_candidate_size(settings, scored.rows_scored, spec.min_report_size),
        space,
        settings.candidate_max_spread,
        segmenter.segment_names(),
        previous,
        # Models saved before the training tail was kept have neither it nor this setting.
        tail=getattr(segmenter, "tail", None),
        min_growth=getattr(settings, "candidate_min_growth", 0.0),
    )


def monitor(segmenter: Segmenter, scored: Scored, spec: Spec, emerging: Emerging) -> BatchReport:
    """The whole batch's findings: candidates, share and feature drift, migration, alerts.

    ``segmenter``, ``scored`` and ``spec`` are as for :func:`emerging_candidates` (here only
    the spec's ``monitoring`` thresholds apply); ``emerging`` is what it returned.
    """
    settings, sample = spec.monitoring, scored.sample
    shares = segment_share_drift(segmenter.catalog, scored.counts)
    # Models saved before the training reference was kept have no ``reference`` slot set.
    reference = getattr(segmenter, "reference", None)
    features = input_drift(reference, sample[segmenter.features], settings)
    found = alerts(emerging, shares, features, settings)
    return BatchReport(emerging, shares, features, scored.migration, found)


def _publish(run: _Run, output: Path) -> Path | None:
    """Rename the staged output and quarantine file into place.

    Each is flushed to disk first (the output on the writing thread), and the quarantine file
    goes first: an output in place means the run completed. Their folder is flushed last, so
    that a run which ended has its output in place after a crash too.
    """
    quarantine = output.with_suffix(QUARANTINE_SUFFIX)
    if run.quarantine_path.exists():
        flush_to_disk(run.quarantine_path)
        os.replace(run.quarantine_path, quarantine)
    else:
        quarantine.unlink(missing_ok=True)
    os.replace(run.staging, output)
    flush_to_disk(output.parent)
    return quarantine if quarantine.exists() else None


# ---------------------------------------------------------------------------------------------
# Tracking and reports


def run_scoring(
    client: MlflowClient,
    ref: ModelRef,
    input_path: Path,
    output: Path,
    *,
    spec: Spec | None = None,
    previous: Path | None = None,
    reference_date: dt.date | None = None,
    on_progress: ProgressFn | None = None,
    spark_master: str | None = None,
) -> tuple[ScoreSummary, str]:
    """Load the model, score (see :func:`score`) and log the scoring run; return both.

    With ``spark_master`` the Spark engine scores (:func:`segml.spark_scoring.score_spark`).
    """
    segmenter = load_segmenter(ref)
    experiment = segmenter.spec.name
    common: dict[str, Any] = {
        "model": ref,
        "spec": spec,
        "previous": previous,
        "previous_candidates": previous_candidates(client, experiment, _label(ref, segmenter)),
    }
    if spark_master is None:
        summary = score(
            segmenter,
            input_path,
            output,
            reference_date=reference_date,
            on_progress=on_progress,
            **common,
        )
    else:
        from segml.spark_scoring import score_spark

        summary = score_spark(segmenter, input_path, output, master=spark_master, **common)
    return summary, log_scoring(client, summary, experiment)


def _label(ref: ModelRef, segmenter: Segmenter) -> str:
    return ref.label or segmenter.spec.model_name


def previous_candidates(
    client: MlflowClient, experiment_name: str, label: str
) -> pd.DataFrame | None:
    """The candidates of the latest finished scoring run of model ``label`` (None if none)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_SCORING}' and "
            f"tags.`{keys.TAG_SCORED_MODEL}` = '{label}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(runs[0].info.run_id, CANDIDATES_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    return pd.DataFrame(table["data"], columns=table["columns"])


def log_scoring(client: MlflowClient, summary: ScoreSummary, experiment_name: str) -> str:
    """A scoring run (tag ``segml.role=scoring``) with metrics, tables and summaries.

    A registered model version is linked as the run's input model. Returns the run id.
    """
    label = summary.model.label or summary.model_name
    run_id = client.create_run(
        keys.experiment_id(client, experiment_name),
        run_name=f"score {label}",
        tags={
            keys.TAG_ROLE: keys.ROLE_SCORING,
            keys.TAG_SCORED_MODEL: label,
            keys.TAG_FAMILY: summary.family,
        },
    ).info.run_id
    model_id = _logged_model_id(client, summary.model)
    if model_id:
        client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
    keys.log_metrics(client, run_id, summary.metrics())
    for name, table in artifact_tables(summary).items():
        client.log_table(run_id, table, f"{ARTIFACT_DIR}/{name}.json")
    if summary.report.migration is not None:
        migration = summary.report.migration.reset_index().to_csv(index=False)
        client.log_text(run_id, migration, f"{ARTIFACT_DIR}/migration.csv")
    client.log_text(run_id, summary_markdown(summary), f"{ARTIFACT_DIR}/summary.md")
    client.log_text(run_id, summary_html(summary), f"{ARTIFACT_DIR}/summary.html")
    client.set_terminated(run_id)
    return run_id


def _logged_model_id(client: MlflowClient, ref: ModelRef) -> str | None:
    """The MLflow logged model behind a registered version (its source is ``models:/<id>``)."""
    if not (ref.name and ref.version):
        return None
    try:
        version = client.get_model_version(ref.name, ref.version)
    except MlflowException:
        return None
    source = version.source or ""
    logged = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    return version.model_id or logged


def artifact_tables(summary: ScoreSummary) -> dict[str, pd.DataFrame]:
    """The tables a scoring run logs: candidates, their profiles, share and feature drift."""
    emerging = summary.report.emerging
    return {
        "candidates": emerging.table,
        "candidate_profiles": emerging.profile,
        "segment_shares": _share_table(summary),
        "feature_drift": summary.report.features,
    }


def _share_table(summary: ScoreSummary) -> pd.DataFrame:
    table = summary.report.shares.table.copy()
    names = {-1: NO_SEGMENT} | summary.segment_names
    table.insert(1, SEGMENT_NAME, table[SEGMENT_ID].map(names))
    table["shift"] = psi_level(table["psi"], summary.settings)
    return report.suppress_small(table, summary.min_report_size)


CANDIDATE_COLUMNS = [
    EMERGING_ID,
    "customers",
    "share",
    "nearest_segment_id",
    "nearest_segment",
    "distance_ratio",
    "spread_ratio",
    "growth",
    "differs_by",
    "seen_before",
    "previous_id",
]
"""The candidate columns the summaries show (the logged table adds radius and centroid)."""


def _sections(summary: ScoreSummary) -> list[tuple[str, str | pd.DataFrame]]:
    """The summary's sections: (heading, a paragraph or a table)."""
    found, settings = summary.report, summary.settings
    candidates = found.emerging.table[CANDIDATE_COLUMNS]
    shares = found.shares
    sections: list[tuple[str, str | pd.DataFrame]] = [
        ("Run", _overview(summary)),
        ("Alerts", "; ".join(found.alerts) or "none"),
        ("Emerging-segment candidates", candidates if len(candidates) else "none"),
        (
            "Segment shares against training",
            f"PSI {shares.psi:.4f} (moderate from {settings.psi_moderate}, major from "
            f"{settings.psi_major}); chi-square {shares.chi2:.1f}, p = {shares.p_value:.3g}",
        ),
        ("Segment shares", _share_table(summary)),
        (
            "Feature drift",
            found.features
            if len(found.features)
            else "not measured: the model keeps no training reference (re-tune it)",
        ),
    ]
    if found.migration is not None:
        matched, share = migration_summary(found.migration)
        sections += [
            ("Migration", f"{matched} customers in both outputs; {share:.1%} changed segment"),
            ("Migration counts (previous rows, new columns)", found.migration.reset_index()),
        ]
    return sections


def _overview(summary: ScoreSummary) -> str:
    quarantined = sum(summary.quarantined.values())
    excluded = sum(summary.excluded.values())
    parts = [
        f"model {summary.model.label or summary.model_name} ({summary.family})",
        f"{summary.rows_scored} customers scored from {summary.rows_read} rows read "
        f"({quarantined} quarantined, {excluded} excluded)",
        f"{summary.seconds:.1f} s, {summary.rows_per_second:,.0f} customers/s",
        f"novel {summary.novel} ({summary.novel / summary.rows_scored:.2%})",
    ]
    if summary.ignored_columns:
        parts.append(f"ignored columns: {', '.join(summary.ignored_columns)}")
    missing = {c: n for c, n in summary.missing.items() if n}
    if missing:
        parts.append("imputed: " + ", ".join(f"{c} {n}" for c, n in missing.items()))
    return "; ".join(parts)


def summary_markdown(summary: ScoreSummary) -> str:
    """The scoring run as Markdown."""
    lines = [f"# Scoring: {summary.model.label or summary.model_name}"]
    for heading, body in _sections(summary):
        text = body if isinstance(body, str) else report.markdown_table(body)
        lines += ["", f"## {heading}", "", text]
    return "\n".join(lines) + "\n"


def summary_html(summary: ScoreSummary) -> str:
    """The scoring run as one self-contained HTML page."""
    from html import escape

    sections = [
        (heading, f"<p>{escape(body)}</p>" if isinstance(body, str) else report.table_html(body))
        for heading, body in _sections(summary)
    ]
    return report.html_page(f"Scoring: {summary.model.label or summary.model_name}", sections)
