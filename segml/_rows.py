"""The row check of every path (the intake and both scoring engines): one wording per fault.

A row is bad for the first reason found. Each path tests its own columns (text from a CSV
reader, Arrow batches), and states what is wrong with the functions here, so that one fault
reads the same in an intake error, a scoring error and a quarantine file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def unseen_category(column: str) -> str:
    """A category the model never saw at training."""
    return f"unseen category in column {column!r}"


class Reasons:
    """The first reason each row of a batch is bad: ``bad`` per row, and ``reason`` (None for a
    good row)."""

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
        """Give ``reason`` to the rows where ``mask`` is true that have no reason yet."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        new = mask & ~self.bad
        self.reason[new] = reason
        self.bad |= new


def bad_rows_error(path: Path, reason: str, row: int, count: int | None = None) -> DataError:
    """The error that rejects an input for its bad rows (``data.bad_rows: fail``).

    ``row`` is the 1-based data row of the first row with ``reason``. A streaming engine stops
    at that row, so only the intake, which reads everything first, knows their ``count``.
    """
    if count is None:
        return DataError(
            f"{path}: data row {row}: {reason}; fix it or set data.bad_rows: drop to quarantine "
            "such rows"
        )
    return DataError(
        f"{path}: {count} row(s) with {reason} (first at data row {row}); "
        "fix them or set data.bad_rows: drop to quarantine them"
    )
