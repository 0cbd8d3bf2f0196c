"""Data intake: read the spec's sources, validate them, quarantine bad rows, count everything."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from segml import _intake, _rows
from segml._intake import NUMERIC_SHARE, REASON_COLUMN, ROW_COLUMN, IntakeReport
from segml._io import read_table
from segml._rows import Reasons
from segml._transactions import RETURN_COLUMN, validate_transactions
from segml.errors import DataError
from segml.privacy import warn_personal
from segml.spec import DataSpec, Spec

__all__ = [
    "NUMERIC_SHARE",
    "REASON_COLUMN",
    "RETURN_COLUMN",
    "ROW_COLUMN",
    "Intake",
    "IntakeReport",
    "read_attribute_table",
    "read_customers",
]


@dataclass(frozen=True, slots=True)
class Intake:
    """Validated rows of the spec's sources, the rows set aside, and the accounting."""

    frame: pd.DataFrame
    quarantine: pd.DataFrame
    reports: tuple[IntakeReport, ...]
    attributes: pd.DataFrame | None = None


def read_customers(
    spec: Spec, reference_date: dt.date | None = None, customers: Path | None = None
) -> Intake:
    """Read and validate the spec's data source (and attribute table, if any).

    Parameters
    ----------
    spec
        The experiment spec; ``spec.data.bad_rows`` decides between failing and quarantining.
    reference_date
        Overrides ``spec.data.reference_date``: transactions after it are excluded and counted.
    customers
        Overrides ``spec.data.customers``: the attribute table of this batch.

    Raises
    ------
    DataError
        The file cannot be read, a declared column is absent, or (with ``bad_rows: fail``)
        a row is invalid. The message names the file, the column and every reason.
    """
    data = spec.data
    categorical = set(spec.features.categorical)
    raw = _read(data.source, data)
    if data.kind == "customers":
        frame, quarantine, report = _validate_customers(data, raw, data.source, categorical)
        return Intake(frame, quarantine, (report,))
    frame, quarantine, report = validate_transactions(data, raw, reference_date, categorical)
    table = customers or data.customers
    if table is None:  # the spec's check: then no attribute comes from a table
        return Intake(frame, quarantine, (report,))
    attributes, bad, table_report = _validate_customers(
        data, _read(table, data), table, categorical
    )
    quarantine = pd.concat([quarantine, bad.assign(source=str(table))])
    return Intake(frame, quarantine, (report, table_report), attributes)


def read_attribute_table(spec: Spec, path: Path) -> pd.DataFrame:
    """A transaction log's attribute table ``path``, validated as at intake; a bad row fails
    (there is no quarantine file to set it aside in)."""
    data = spec.data.model_copy(update={"bad_rows": "fail"})
    categorical = set(spec.features.categorical)
    table, _, _ = _validate_customers(data, _read(path, data), path, categorical)
    return table


def _read(path: Path, data: DataSpec) -> pd.DataFrame:
    frame = read_table(path, data.delimiter)
    if frame.empty:
        raise DataError(f"{path}: no data rows (only a header)")
    warn_personal(path, frame, data)
    return frame.drop(columns=[c for c in data.personal if c in frame.columns])


def _validate_customers(
    data: DataSpec, raw: pd.DataFrame, path: Path, categorical: set[str]
) -> tuple[pd.DataFrame, pd.DataFrame, IntakeReport]:
    """A customer table (or a transaction log's attribute table): one row per id."""
    declared = {data.id_column: "data.id_column"}
    attributes = (
        data.table_attributes if data.kind == "transactions" else data.attributes.columns()
    )
    for kind, columns in data.attributes.model_dump(exclude={"from_log"}).items():
        for column in columns:
            if column in attributes:
                declared.setdefault(column, f"data.attributes.{kind}")
    if path == data.source:
        for role, column in data.outcomes.columns().items():
            declared.setdefault(column, f"data.outcomes.{role}")
    _intake.require(path, raw, declared)
    reasons = Reasons(len(raw))
    ids = _intake.clean_ids(raw[data.id_column], reasons)
    # Every row of a repeated id is set aside: the intake cannot tell which one is right.
    duplicated = ids.duplicated(keep=False) & ids.notna()
    reasons.flag(_intake.mask(duplicated), _rows.duplicate_id(data.id_column))
    clean = pd.DataFrame({data.id_column: ids})
    for column in list(declared)[1:]:
        clean[column] = _intake.attribute_values(path, raw[column], reasons, column in categorical)
        if column in attributes and clean[column].isna().all():
            raise DataError(f"{path}: column {column!r} has no values (all {len(raw)} missing)")
    _intake.fail_or_keep(reasons, data.bad_rows, path)
    good = clean[~reasons.bad].reset_index(drop=True)
    return good, _intake.quarantine(reasons, raw), _intake.report(reasons, path, good)
