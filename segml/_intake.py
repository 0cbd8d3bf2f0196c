"""The intake's column checks (pandas): ids, numbers, timestamps; and one file's accounting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from segml import _rows
from segml._rows import Reasons
from segml.errors import DataError

ROW_COLUMN = "row"
REASON_COLUMN = "reason"
EARLIEST_DATE = pd.Timestamp("1900-01-01")
NUMERIC_SHARE = 0.95
"""A text column is numeric when at least this share of its non-empty cells parse as numbers."""
MIXED_SHARE = 0.5
"""Below ``NUMERIC_SHARE`` but at least this share: numbers mixed with text, rejected."""


@dataclass(frozen=True, slots=True)
class IntakeReport:
    """What happened to every row of one input file.

    ``quarantined`` counts rows per reason (a row with several reasons counts under each);
    ``rows_quarantined`` counts the rows. ``netted`` counts return and cancellation lines
    kept and netted against their customer's purchases.
    """

    source: str
    rows_read: int
    rows_used: int
    rows_quarantined: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)
    netted: int = 0


def require(path: Path, frame: pd.DataFrame, declared: dict[str, str]) -> None:
    """Fail on the first declared column (column -> spec key) that the file lacks."""
    for column, key in declared.items():
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns[:12]))
            what = "id column" if key == "data.id_column" else f"column declared at {key}"
            hint = "; is data.delimiter right?" if len(frame.columns) == 1 else ""
            raise DataError(f"{path}: missing {what} {column!r} (found: {found}){hint}")


def clean_ids(values: pd.Series, reasons: Reasons) -> pd.Series:
    """Ids as trimmed text (integers held as floats without their fraction); missing flagged."""
    ids = _rows.integer_ids(_text(values))
    text = ids.to_pandas().astype("string").set_axis(values.index)
    missing = text.isna() | (text == "")
    reasons.flag(mask(missing), _rows.missing_id(str(values.name)))
    return text.mask(missing)


def _text(values: pd.Series) -> pa.Array:
    """A column as Arrow text: a float column's integers lose their fraction (12346.0 -> 12346)."""
    if pd.api.types.is_float_dtype(values):
        return pa.array(values.to_numpy(), from_pandas=True).cast(pa.string())
    return pa.array(values.astype("string").str.strip(), pa.string(), from_pandas=True)


def numeric(values: pd.Series, column: str, reasons: Reasons, *, allow_missing: bool) -> pd.Series:
    """A column as float64: non-numeric and infinite cells flagged (and missing ones unless
    ``allow_missing``); flagged cells become NaN."""
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    missing = values.isna() | (values.astype("string").str.strip() == "")
    reasons.flag(mask(parsed.isna() & ~missing), _rows.non_numeric(column))
    if not allow_missing:
        reasons.flag(mask(missing), _rows.missing_value(column))
    reasons.flag(np.isinf(parsed.to_numpy()), _rows.non_finite(column))
    return parsed.where(np.isfinite(parsed))


def timestamps(values: pd.Series, column: str, fmt: str | None, reasons: Reasons) -> pd.Series:
    """A column as naive timestamps: time-zone-aware values (mixed offsets too) in UTC, naive
    ones as they are; unparseable and out-of-range ones flagged.

    Without ``fmt`` pandas infers the format from the first value; values that miss it are
    tried as ISO 8601 (``Z``, ``+02:00`` or a space for the ``T``).
    """
    stamps = pd.to_datetime(values, format=fmt, errors="coerce", utc=True)
    retry = stamps.isna() & values.notna()
    if fmt is None and retry.any():
        iso = pd.to_datetime(values[retry], format="ISO8601", errors="coerce", utc=True)
        stamps = stamps.mask(retry, iso)
    stamps = stamps.dt.tz_localize(None)
    reasons.flag(mask(stamps.isna()), _rows.unparseable_date(column))
    today = pd.Timestamp.today().normalize() + pd.Timedelta(days=1)
    reasons.flag(
        mask((stamps < EARLIEST_DATE) | (stamps >= today)), _rows.date_out_of_range(column)
    )
    return stamps


def mask(flags: pd.Series) -> np.ndarray:
    """A row mask of ``flags`` by position (missing is false)."""
    return flags.fillna(False).to_numpy(dtype=bool)


def fail_or_keep(reasons: Reasons, policy: str, path: Path) -> None:
    """Raise with every kind of bad row unless the policy is to drop bad rows."""
    if reasons.bad.any() and policy != "drop":
        raise _rows.bad_rows_error(path, reasons.faults())


def quarantine(reasons: Reasons, raw: pd.DataFrame) -> pd.DataFrame:
    """The bad rows as read, with their 1-based data row number and every reason."""
    out = raw[reasons.bad].copy()
    out.insert(0, REASON_COLUMN, reasons.reason[reasons.bad])
    out.insert(0, ROW_COLUMN, np.flatnonzero(reasons.bad) + 1)
    return out


def report(
    reasons: Reasons,
    path: Path,
    good: pd.DataFrame,
    excluded: dict[str, int] | None = None,
    netted: int = 0,
) -> IntakeReport:
    """The accounting of one file: every row read is used, quarantined or excluded."""
    result = IntakeReport(
        source=str(path),
        rows_read=reasons.bad.size,
        rows_used=len(good),
        rows_quarantined=int(reasons.bad.sum()),
        quarantined={r: f.count for r, f in reasons.faults().items()},
        excluded=excluded or {},
        missing_share={str(c): float(good[c].isna().mean()) for c in good.columns},
        netted=netted,
    )
    accounted = result.rows_used + result.rows_quarantined + sum(result.excluded.values())
    assert accounted == result.rows_read, "every input row must be used or accounted for"
    return result


def attribute_values(
    path: Path, values: pd.Series, reasons: Reasons, categorical: bool
) -> pd.Series:
    """An attribute column as numbers (when nearly all its cells are) or as trimmed text.

    Raises
    ------
    DataError
        Numbers mixed with text (between ``MIXED_SHARE`` and ``NUMERIC_SHARE`` numbers).
    """
    column = str(values.name)
    share = 0.0 if categorical else _numeric_share(values)
    if MIXED_SHARE <= share < NUMERIC_SHARE:
        example = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
        raise DataError(
            f"{path}: column {column!r} mixes numbers and text ({share:.0%} of its values "
            f"are numbers, e.g. {example.iloc[0]!r}); fix the values or declare it in "
            "features.categorical"
        )
    if share >= NUMERIC_SHARE:
        return numeric(values, column, reasons, allow_missing=True)
    return values.astype("string").str.strip()


def _numeric_share(values: pd.Series) -> float:
    """The share of the non-empty cells that parse as numbers (1.0 for a numeric dtype)."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return 1.0
    present = values.dropna()
    if present.empty:
        return 0.0
    return float(pd.to_numeric(present, errors="coerce").notna().mean())
