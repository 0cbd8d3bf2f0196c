"""A transaction log's intake: amounts (a column, or quantity x unit price), returns and
cancellations, attribute columns read from the log, and the reference date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from segml import _intake, _rows
from segml._intake import IntakeReport
from segml._rows import Reasons
from segml.errors import DataError
from segml.spec import DataSpec, LineAmount, TransactionColumns, check_reference_date

RETURN_COLUMN = "_segml_return"
"""In a validated log: True for a return or cancellation line (kept under ``returns: net``)."""
NUMERIC_AGGREGATES = ("sum", "mean", "min", "max")


def validate_transactions(
    data: DataSpec, raw: pd.DataFrame, reference_date: dt.date | None, categorical: set[str]
) -> tuple[pd.DataFrame, pd.DataFrame, IntakeReport]:
    """The log's good lines (id, timestamp, signed amount, quantity, order, log attributes,
    ``RETURN_COLUMN``), the quarantined ones, and the accounting.

    Raises
    ------
    DataError
        A declared column is absent, or with ``bad_rows: fail`` a line is bad (every reason).
    """
    tx = data.transactions
    assert tx is not None  # guaranteed by DataSpec
    _intake.require(data.source, raw, _declared(data, tx))
    reasons = Reasons(len(raw))
    columns = {
        data.id_column: _intake.clean_ids(raw[data.id_column], reasons),
        tx.timestamp: _intake.timestamps(
            raw[tx.timestamp], tx.timestamp, tx.timestamp_format, reasons
        ),
    }
    amount, returned = _amounts(tx, raw, reasons)
    if tx.quantity:
        quantity = _intake.numeric(raw[tx.quantity], tx.quantity, reasons, allow_missing=True)
        returned = returned | _signed(quantity < 0, "quantity", tx.quantity, tx, reasons)
    if tx.order_id:
        orders = raw[tx.order_id].astype("string").str.strip()
        columns[tx.order_id] = orders
        prefix = tx.returns.order_prefix
        if prefix is not None:
            marked = _intake.mask(orders.str.startswith(prefix))
            cancelled = _rows.cancelled_order(tx.order_id, prefix)
            returned = returned | _flag_if_fail(marked, cancelled, tx, reasons)
    # A return counts against spend whatever its sign in the file (a marked line may be positive).
    columns[tx.amount_column] = amount.abs().where(~returned, -amount.abs())
    if tx.quantity:
        columns[tx.quantity] = quantity.abs().where(~returned, -quantity.abs())
    for column, how in data.attributes.from_log.items():
        columns[column] = _log_attribute(data, raw[column], how, column in categorical, reasons)
    clean = pd.DataFrame(columns).assign(**{RETURN_COLUMN: returned})
    _intake.fail_or_keep(reasons, data.bad_rows, data.source)
    if tx.returns.policy == "drop":  # after the check: a policy, not a fault of the file
        reasons.flag(returned, _rows.dropped_return())
    good, excluded = _in_period(data, clean[~reasons.bad], reference_date)
    netted = int(good[RETURN_COLUMN].sum())
    report = _intake.report(
        reasons, data.source, good.drop(columns=RETURN_COLUMN), excluded, netted
    )
    return good.reset_index(drop=True), _intake.quarantine(reasons, raw), report


def _declared(data: DataSpec, tx: TransactionColumns) -> dict[str, str]:
    """The log's columns, each with the spec key that names it."""
    declared = {data.id_column: "data.id_column", tx.timestamp: "data.transactions.timestamp"}
    if isinstance(tx.amount, LineAmount):
        declared.setdefault(tx.amount.quantity, "data.transactions.amount.quantity")
        declared.setdefault(tx.amount.unit_price, "data.transactions.amount.unit_price")
    else:
        declared.setdefault(tx.amount, "data.transactions.amount")
    for key in ("order_id", "quantity"):
        if column := getattr(tx, key):
            declared.setdefault(column, f"data.transactions.{key}")
    for column in data.attributes.from_log:
        declared.setdefault(column, "data.attributes.from_log")
    return declared


def _amounts(
    tx: TransactionColumns, raw: pd.DataFrame, reasons: Reasons
) -> tuple[pd.Series, np.ndarray]:
    """Each line's amount (a column, or quantity x unit price) and which lines are returns."""
    if not isinstance(tx.amount, LineAmount):
        amount = _intake.numeric(raw[tx.amount], tx.amount, reasons, allow_missing=False)
        return amount, _signed(amount < 0, "amount", tx.amount, tx, reasons)
    quantity_column, price_column = tx.amount.quantity, tx.amount.unit_price
    quantity = _intake.numeric(raw[quantity_column], quantity_column, reasons, allow_missing=False)
    price = _intake.numeric(raw[price_column], price_column, reasons, allow_missing=False)
    reasons.flag(_intake.mask(price < 0), _rows.negative("unit price", price_column))
    returned = _signed(quantity < 0, "quantity", quantity_column, tx, reasons)
    return quantity * price, returned


def _signed(
    negative: pd.Series, what: str, column: str, tx: TransactionColumns, reasons: Reasons
) -> np.ndarray:
    """The lines a negative ``what`` makes returns (bad rows under ``returns.policy: fail``)."""
    return _flag_if_fail(_intake.mask(negative), _rows.negative(what, column), tx, reasons)


def _flag_if_fail(
    lines: np.ndarray, reason: str, tx: TransactionColumns, reasons: Reasons
) -> np.ndarray:
    if tx.returns.policy == "fail":
        reasons.flag(lines, reason)
    return lines


def _log_attribute(
    data: DataSpec, values: pd.Series, how: str, categorical: bool, reasons: Reasons
) -> pd.Series:
    """A log column that an attribute is derived from: numbers for a numeric aggregate."""
    column = str(values.name)
    if how in NUMERIC_AGGREGATES:
        return _intake.numeric(values, column, reasons, allow_missing=True)
    return _intake.attribute_values(data.source, values, reasons, categorical)


def _in_period(
    data: DataSpec, good: pd.DataFrame, reference_date: dt.date | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The lines up to the reference date of customers who bought in it; the others counted."""
    excluded: dict[str, int] = {}
    cutoff = reference_date or data.reference_date
    assert data.transactions is not None
    if cutoff is not None:
        try:
            check_reference_date(cutoff)
        except ValueError as exc:
            raise DataError(f"{data.source}: {exc}") from None
        stamps = good[data.transactions.timestamp]
        late = stamps.dt.normalize() > pd.Timestamp(cutoff)
        if late.all() and len(good):
            raise DataError(
                f"{data.source}: no transaction on or before {cutoff} (the first is on "
                f"{stamps.min():%Y-%m-%d}); choose a later reference date"
            )
        if late.any():
            excluded[f"after reference date {cutoff}"] = int(late.sum())
        good = good[~late]
    # A customer with returns only has no purchase to net them against, nor any RFM.
    buyers = good.loc[~good[RETURN_COLUMN], data.id_column].unique()
    orphan = ~good[data.id_column].isin(buyers)
    if orphan.any():
        excluded["returns of customers without a purchase in the period"] = int(orphan.sum())
    return good[~orphan], excluded
