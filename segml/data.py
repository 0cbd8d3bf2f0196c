"""Data intake: read the spec's sources, validate them, quarantine bad rows, count everything."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segml import _rows
from segml._io import read_table
from segml._rows import Reasons
from segml.errors import DataError
from segml.spec import DataSpec, Spec

ROW_COLUMN = "row"
REASON_COLUMN = "reason"
EARLIEST_DATE = pd.Timestamp("1900-01-01")
NUMERIC_SHARE = 0.95
"""A text column is numeric when at least this share of its non-empty cells parse as numbers."""
MIXED_SHARE = 0.5
"""Below ``NUMERIC_SHARE`` but at least this share: numbers mixed with text, rejected."""


@dataclass(frozen=True, slots=True)
class IntakeReport:
    """What happened to every row of one input file."""

    source: str
    rows_read: int
    rows_used: int
    quarantined: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Intake:
    """Validated rows of the spec's sources, the rows set aside, and the accounting."""

    frame: pd.DataFrame
    quarantine: pd.DataFrame
    reports: tuple[IntakeReport, ...]
    attributes: pd.DataFrame | None = None


def read_customers(spec: Spec, reference_date: dt.date | None = None) -> Intake:
    """Read and validate the spec's data source (and attribute table, if any).

    Parameters
    ----------
    spec
        The experiment spec; ``spec.data.bad_rows`` decides between failing and quarantining.
    reference_date
        Overrides ``spec.data.reference_date``: transactions after it are excluded and counted.

    Raises
    ------
    DataError
        The file cannot be read, a declared column is absent, or (with ``bad_rows: fail``)
        a row is invalid. The message names the file, the column and the reason.
    """
    data = spec.data
    categorical = set(spec.features.categorical)
    raw = _read(data.source, data)
    if data.kind == "transactions":
        frame, quarantine, report = _validate_transactions(data, raw, reference_date)
        attributes = None
        reports = [report]
        if data.customers is not None:
            attr_raw = _read(data.customers, data)
            attributes, attr_bad, attr_report = _validate_customers(
                data, attr_raw, data.customers, categorical
            )
            quarantine = pd.concat([quarantine, attr_bad.assign(source=str(data.customers))])
            reports.append(attr_report)
        return Intake(frame, quarantine, tuple(reports), attributes)
    frame, quarantine, report = _validate_customers(data, raw, data.source, categorical)
    return Intake(frame, quarantine, (report,))


def _read(path: Path, data: DataSpec) -> pd.DataFrame:
    frame = read_table(path, data.delimiter)
    if frame.empty:
        raise DataError(f"{path}: no data rows (only a header)")
    return frame.drop(columns=[c for c in data.personal if c in frame.columns])


def _require(path: Path, frame: pd.DataFrame, declared: dict[str, str]) -> None:
    """Fail on the first declared column (column -> spec key) that the file lacks."""
    for column, key in declared.items():
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns[:12]))
            what = "id column" if key == "data.id_column" else f"column declared at {key}"
            hint = "; is data.delimiter right?" if len(frame.columns) == 1 else ""
            raise DataError(f"{path}: missing {what} {column!r} (found: {found}){hint}")


def _validate_transactions(
    data: DataSpec, raw: pd.DataFrame, reference_date: dt.date | None
) -> tuple[pd.DataFrame, pd.DataFrame, IntakeReport]:
    tx = data.transactions
    assert tx is not None  # guaranteed by DataSpec
    declared = {data.id_column: "data.id_column"}
    for key, column in tx.model_dump(exclude={"timestamp_format"}).items():
        if column:
            declared.setdefault(column, f"data.transactions.{key}")
    _require(data.source, raw, declared)
    reasons = Reasons(len(raw))
    ids = _clean_ids(raw[data.id_column], reasons)
    stamps = pd.to_datetime(raw[tx.timestamp], format=tx.timestamp_format, errors="coerce")
    reasons.flag(_mask(stamps.isna()), _rows.unparseable_date(tx.timestamp))
    today = pd.Timestamp(dt.date.today())
    out_of_range = (stamps < EARLIEST_DATE) | (stamps > today)
    reasons.flag(_mask(out_of_range), _rows.date_out_of_range(tx.timestamp))
    amount = _numeric(raw[tx.amount], tx.amount, reasons, allow_missing=False)
    reasons.flag(_mask(amount < 0), _rows.negative("amount", tx.amount))
    columns = {data.id_column: ids, tx.timestamp: stamps, tx.amount: amount}
    if tx.quantity:
        quantity = _numeric(raw[tx.quantity], tx.quantity, reasons, allow_missing=True)
        reasons.flag(_mask(quantity < 0), _rows.negative("quantity", tx.quantity))
        columns[tx.quantity] = quantity
    if tx.order_id:
        columns[tx.order_id] = raw[tx.order_id].astype("string")
    clean = pd.DataFrame(columns)
    _fail_or_keep(reasons, data, data.source)
    good = clean[~reasons.bad]
    excluded: dict[str, int] = {}
    cutoff = reference_date or data.reference_date
    if cutoff is not None:
        late = good[tx.timestamp].dt.normalize() > pd.Timestamp(cutoff)
        if late.any():
            excluded[f"after reference date {cutoff}"] = int(late.sum())
        good = good[~late]
    report = _report(reasons, data.source, len(good), excluded, good)
    return good.reset_index(drop=True), _quarantine(reasons, raw), report


def _validate_customers(
    data: DataSpec, raw: pd.DataFrame, path: Path, categorical: set[str]
) -> tuple[pd.DataFrame, pd.DataFrame, IntakeReport]:
    declared = {data.id_column: "data.id_column"}
    for kind, columns in data.attributes.model_dump().items():
        for column in columns:
            declared.setdefault(column, f"data.attributes.{kind}")
    if path == data.source:
        for role, column in data.outcomes.columns().items():
            declared.setdefault(column, f"data.outcomes.{role}")
    _require(path, raw, declared)
    reasons = Reasons(len(raw))
    ids = _clean_ids(raw[data.id_column], reasons)
    # Every row of a repeated id is set aside: the intake cannot tell which one is right.
    duplicated = ids.duplicated(keep=False) & ids.notna()
    reasons.flag(_mask(duplicated), _rows.duplicate_id(data.id_column))
    clean = pd.DataFrame({data.id_column: ids})
    for column in list(declared)[1:]:
        values = raw[column]
        share = 0.0 if column in categorical else _numeric_share(values)
        if MIXED_SHARE <= share < NUMERIC_SHARE:
            example = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
            raise DataError(
                f"{path}: column {column!r} mixes numbers and text ({share:.0%} of its values "
                f"are numbers, e.g. {example.iloc[0]!r}); fix the values or declare it in "
                "features.categorical"
            )
        if share >= NUMERIC_SHARE:
            clean[column] = _numeric(values, column, reasons, allow_missing=True)
        else:
            clean[column] = values.astype("string").str.strip()
        if column in data.attributes.columns() and clean[column].isna().all():
            raise DataError(f"{path}: column {column!r} has no values (all {len(raw)} missing)")
    _fail_or_keep(reasons, data, path)
    good = clean[~reasons.bad].reset_index(drop=True)
    return good, _quarantine(reasons, raw), _report(reasons, path, len(good), {}, good)


def _clean_ids(values: pd.Series, reasons: Reasons) -> pd.Series:
    ids = values.astype("string").str.strip()
    missing = ids.isna() | (ids == "")
    reasons.flag(_mask(missing), _rows.missing_id(str(values.name)))
    return ids.mask(missing)


def _numeric_share(values: pd.Series) -> float:
    """The share of the non-empty cells that parse as numbers (1.0 for a numeric dtype)."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return 1.0
    present = values.dropna()
    if present.empty:
        return 0.0
    return float(pd.to_numeric(present, errors="coerce").notna().mean())


def _numeric(
    values: pd.Series, column: str, reasons: Reasons, *, allow_missing: bool
) -> pd.Series:
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    missing = values.isna() | (values.astype("string").str.strip() == "")
    reasons.flag(_mask(parsed.isna() & ~missing), _rows.non_numeric(column))
    if not allow_missing:
        reasons.flag(_mask(missing), _rows.missing_value(column))
    reasons.flag(np.isinf(parsed.to_numpy()), _rows.non_finite(column))
    return parsed.where(np.isfinite(parsed))


def _mask(flags: pd.Series) -> np.ndarray:
    """A row mask of ``flags`` by position (missing is false)."""
    return flags.fillna(False).to_numpy(dtype=bool)


def _fail_or_keep(reasons: Reasons, data: DataSpec, path: Path) -> None:
    """Raise on the first kind of bad row unless the spec says to drop bad rows."""
    if not reasons.bad.any() or data.bad_rows == "drop":
        return
    first = int(np.flatnonzero(reasons.bad)[0])
    reason = reasons.reason[first]
    count = int(np.count_nonzero(reasons.reason == reason))
    raise _rows.bad_rows_error(path, reason, first + 1, count)


def _quarantine(reasons: Reasons, raw: pd.DataFrame) -> pd.DataFrame:
    """The bad rows as read, with their 1-based data row number and reason."""
    out = raw[reasons.bad].copy()
    out.insert(0, REASON_COLUMN, reasons.reason[reasons.bad])
    out.insert(0, ROW_COLUMN, np.flatnonzero(reasons.bad) + 1)
    return out


def _report(
    reasons: Reasons, path: Path, used: int, excluded: dict[str, int], good: pd.DataFrame
) -> IntakeReport:
    counts = pd.Series(reasons.reason[reasons.bad], dtype=object).value_counts()
    quarantined = {str(k): int(v) for k, v in counts.items()}
    report = IntakeReport(
        source=str(path),
        rows_read=reasons.bad.size,
        rows_used=used,
        quarantined=quarantined,
        excluded=excluded,
        missing_share={c: float(good[c].isna().mean()) for c in good.columns},
    )
    accounted = used + sum(quarantined.values()) + sum(excluded.values())
    assert accounted == report.rows_read, "every input row must be used or accounted for"
    return report
