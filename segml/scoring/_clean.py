"""Checking a batch of input rows: the model's signature, text and numbers, the bad rows.

The rows are judged with :mod:`segml._rows`, as at intake; what is read here is Arrow, and the
work is done on whole columns (no Python loop over rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from segml import _rows
from segml._intake import NUMERIC_SHARE
from segml._rows import Reasons
from segml.errors import DataError
from segml.features import column_kinds
from segml.model import Segmenter


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


def large_text(values: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """``values`` as one large-string array."""
    text = values.cast(pa.large_string())
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def text_buffers(text: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (n + 1) and the bytes of a large-string array, as numpy views."""
    offsets = np.frombuffer(
        text.buffers()[1], np.int64, count=len(text) + 1, offset=text.offset * 8
    )
    raw = text.buffers()[2]
    return offsets, np.frombuffer(raw, np.uint8) if raw is not None else np.empty(0, np.uint8)


def trimmed_text(column: pa.ChunkedArray | pa.Array) -> pa.LargeStringArray:
    """Values as trimmed text; empty strings become missing."""
    text = large_text(column)
    offsets, raw = text_buffers(text)
    starts, ends = offsets[:-1], offsets[1:]
    filled = ends > starts
    edges = np.concatenate([raw[starts[filled]], raw[ends[filled] - 1]])
    # Whitespace starts and ends with a control, space or non-ASCII byte: most texts have none,
    # and their bytes are checked at once instead of trimming every value.
    if ((edges <= 0x20) | (edges >= 0x7F)).any():
        text = pc.utf8_trim_whitespace(text)
        offsets, _ = text_buffers(text)
        filled = offsets[1:] > offsets[:-1]
    empty = ~filled & pc.is_valid(text).to_numpy(zero_copy_only=False)
    if empty.any():
        text = pc.if_else(pa.array(empty), pa.scalar(None, pa.large_string()), text)
    return text


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 (NaN when missing) and the cells that are present but not numbers."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        values = column.cast(pa.float64(), safe=False).to_numpy()  # int64 past 2^53: rounded
        return values, np.zeros(values.size, dtype=bool)
    text = trimmed_text(column)
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        values = pd.to_numeric(text.to_pandas(), errors="coerce").to_numpy(dtype=float)
    present = pc.is_valid(text).to_numpy(zero_copy_only=False)
    return values, present & np.isnan(values)


@dataclass(frozen=True, slots=True)
class CleanBatch:
    """A batch of input rows as the model takes it, with what is wrong with each row.

    Attributes
    ----------
    frame : DataFrame
        The model's input columns.
    numeric : ndarray
        The numeric columns, one row per customer (shared with ``frame``: no copy).
    ids : LargeStringArray
        The trimmed ids (missing where empty).
    reasons : Reasons
        The bad rows and why.
    missing : dict of str to ndarray
        Per column, True where a value is missing and will be imputed.
    unseen : dict of str to ndarray
        Per categorical column, True where a category is unknown to the model (the encoder
        ignores it: the customer is scored on the other columns).
    """

    frame: pd.DataFrame
    numeric: np.ndarray
    ids: pa.LargeStringArray
    reasons: Reasons
    missing: dict[str, np.ndarray]
    unseen: dict[str, np.ndarray]


def clean_batch(signature: Signature, table: pa.Table, path: Path, first: bool) -> CleanBatch:
    """Check a batch of input rows (``first``: a file's first batch, which also checks the
    columns as a whole) and build the model's input from it."""
    reasons = Reasons(table.num_rows)
    id_column = signature.id_column
    ids = _rows.integer_ids(trimmed_text(table[id_column]))
    reasons.flag(pc.is_null(ids).to_numpy(zero_copy_only=False), _rows.missing_id(id_column))
    # The model sees its columns only; the ids stay in Arrow, because a round trip through
    # pandas strings (in and out of ``predict``) makes a Python object of every id. The numbers
    # go in one block, as pandas keeps them: no copy.
    block = np.empty((len(signature.numeric), table.num_rows))
    missing: dict[str, np.ndarray] = {}
    unseen: dict[str, np.ndarray] = {}
    for row, column in enumerate(signature.numeric):
        values, unparsed = _numbers(table[column])
        block[row] = values
        if first:
            _check_numeric(path, column, unparsed, values, table[column])
        reasons.flag(unparsed, _rows.non_numeric(column))
        reasons.flag(np.isinf(values), _rows.non_finite(column))
        missing[column] = np.isnan(values) & ~unparsed
    frame = pd.DataFrame(block.T, columns=list(signature.numeric), copy=False)
    for column in signature.categorical:
        text = trimmed_text(table[column])
        known = pc.is_in(text, value_set=signature.categories[column])
        unseen[column] = pc.and_(pc.is_valid(text), pc.invert(known)).to_numpy(
            zero_copy_only=False
        )
        missing[column] = pc.is_null(text).to_numpy(zero_copy_only=False)
        # Text with NaN where missing: what every model's imputer takes for missing (older
        # models' only match NaN, and pandas' NA made them fail).
        frame[column] = text.to_pandas().astype("str")
    if first:
        _check_present(path, missing)
    return CleanBatch(frame, block.T, ids, reasons, missing, unseen)


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
