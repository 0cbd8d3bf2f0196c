"""The row check of every path (the intake and both scoring engines): one wording per fault.

A row is bad for every reason found, and each reason is counted. Each path tests its own
columns (text from a CSV reader, Arrow batches), and states what is wrong with the functions
here, so that one fault reads the same in an intake error, a scoring error and a quarantine
file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segml.errors import DataError


def missing_id(column: str) -> str:
    """A row without an id."""
    return f"missing id in column {column!r}"


def duplicate_id(column: str) -> str:
    """A row whose id another row has."""
    return f"duplicate id in column {column!r}"


def missing_value(column: str) -> str:
    """A row without a value where one is required (an amount)."""
    return f"missing value in column {column!r}"


def non_numeric(column: str) -> str:
    """A cell of a numeric column that is present but does not parse as a number."""
    return f"non-numeric value in column {column!r}"


def non_finite(column: str) -> str:
    """A number that is infinite."""
    return f"non-finite value in column {column!r}"


def negative(what: str, column: str) -> str:
    """A negative ``what`` (amount, quantity) where only zero or more makes sense."""
    return f"negative {what} in column {column!r}"


def unparseable_date(column: str) -> str:
    """A date that does not parse (with the spec's format, if given)."""
    return f"unparseable date in column {column!r}"


def date_out_of_range(column: str) -> str:
    """A date before the earliest plausible one or after today."""
    return f"date out of range in column {column!r}"


def cancelled_order(column: str, prefix: str) -> str:
    """A line of an order the spec's marker names cancelled (``returns.order_prefix``)."""
    return f"cancelled order in column {column!r} (prefix {prefix!r})"


def dropped_return() -> str:
    """A return or cancellation line set aside as the spec asks (``returns.policy: drop``)."""
    return "return or cancellation line (data.transactions.returns.policy: drop)"


class Reasons:
    """Every reason each row of a batch is bad: ``bad`` per row, and per reason its rows.

    A row can be bad for several reasons; each is counted, and the quarantine file lists them
    all (joined by ``SEPARATOR``).
    """

    def __init__(self, n_rows: int) -> None:
        self.bad = np.zeros(n_rows, dtype=bool)
        self.rows: dict[str, np.ndarray] = {}

    def flag(self, mask: np.ndarray, reason: str) -> None:
        """Give ``reason`` to the rows where ``mask`` is true."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        known = self.rows.get(reason)
        self.rows[reason] = mask if known is None else known | mask
        self.bad |= mask

    @property
    def reason(self) -> np.ndarray:
        """Per row, its reasons joined by ``SEPARATOR``, or None for a good row."""
        joined = np.full(self.bad.size, None, dtype=object)
        for reason, mask in self.rows.items():
            rows = np.flatnonzero(mask)  # bad rows only: few, so a loop over them is cheap
            joined[rows] = [reason if r is None else r + SEPARATOR + reason for r in joined[rows]]
        return joined

    def faults(self, offset: int = 0) -> dict[str, Fault]:
        """Per reason, its rows' count and first row (1-based, after ``offset`` rows)."""
        return {
            reason: Fault(int(mask.sum()), offset + int(np.argmax(mask)) + 1)
            for reason, mask in self.rows.items()
        }


SEPARATOR = "; "
"""Between the reasons of one row in a quarantine file."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One reason rows are bad: how many rows have it, and the first (1-based data row)."""

    count: int
    first_row: int
    path: Path | None = None

    def plus(self, other: Fault) -> Fault:
        """This fault and ``other``, met later in the input."""
        return Fault(self.count + other.count, self.first_row, self.path)


def bad_rows_error(path: Path, faults: dict[str, Fault]) -> DataError:
    """The error that rejects an input for its bad rows (``data.bad_rows: fail``): every
    reason, with its exact count and first row (a row with several reasons counts under each).

    One reason makes one line; more make a line each after the first, in the order of their
    first rows (of the files, in input order). A fault met in another file than ``path``
    names it.
    """
    fix = "fix them or set data.bad_rows: drop to quarantine them"
    files = list(dict.fromkeys(fault.path for fault in faults.values()))
    ordered = sorted(
        faults.items(), key=lambda item: (files.index(item[1].path), item[1].first_row, item[0])
    )
    lines = [
        f"{fault.count} row(s) with {reason} (first at data row {fault.first_row}"
        + (f" of {fault.path}" if fault.path is not None and fault.path != path else "")
        + ")"
        for reason, fault in ordered
    ]
    if len(lines) == 1:
        return DataError(f"{path}: {lines[0]}; {fix}")
    total = f"{path}: bad rows for {len(lines)} reasons; {fix}:"
    return DataError("\n".join([total, *(f"  {line}" for line in lines)]))


_FLOAT_INTEGER = r"^-?\d+\.0+$"


def integer_ids(ids: pa.Array) -> pa.Array:
    """Trimmed text ids as users know them: when every present id is an integer written as a
    float (``"12346.0"``, as a float column's CSV export holds them), without the fraction.

    Float columns cast to text already lose it. The first id is looked at first, so that a
    batch of other ids costs one match.
    """
    present = ids if ids.null_count == 0 else ids.drop_null()  # no copy in the usual case
    if not len(present) or not str(present[0].as_py()).endswith(".0"):
        return ids
    if not pc.all(pc.match_substring_regex(present, _FLOAT_INTEGER)).as_py():
        return ids
    return pc.replace_substring_regex(ids, r"\.0+$", "")
