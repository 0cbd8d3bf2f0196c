"""Privacy: what may leave the customers' data, and in what form.

Columns that look personal are named at intake; a value shared by fewer than
``min_report_size`` customers (k) never leaves the data (categories are pooled, numeric
references are means of k customers, the model's input example is made up); fitted
estimators are saved without their training rows where assigning does not need them; and a
published count never shows a group of fewer than k customers, not even as the difference
between a known total and the counts beside it.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segml.errors import SegmlWarning
from segml.spec import DataSpec

RARE_CATEGORY = "other (rare)"
"""What a category shared by fewer than k customers is pooled into, everywhere it is kept."""
EXAMPLE_ID = "example-customer"
"""The customer id of the model's input example: no customer's."""

_WORD = r"(?:^|_){}(?:_|$)"
PERSONAL_NAMES = {
    "an email address": re.compile(_WORD.format(r"e_?mail(?:_?address)?")),
    "a phone number": re.compile(_WORD.format(r"(?:tele)?phone(?:_?(?:number|no))?|mobile")),
    "a person's name": re.compile(
        r"^name$|"
        + _WORD.format(r"(?:first|last|full|given|family|middle|customer|contact)_?name")
        + "|"
        + _WORD.format(r"surname|forename")
    ),
    "a birth date": re.compile(
        _WORD.format(r"birth_?(?:date|day)|date_?of_?birth|dob|birthdate|birthday")
    ),
    "an IP address": re.compile(_WORD.format(r"ip(?:_?(?:address|addr|v4|v6))?")),
    "a postcode": re.compile(_WORD.format(r"post_?code|postal_?code|zip(?:_?code)?")),
}
"""Column names (in snake case) that name personal data."""
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
VALUE_SAMPLE = 200
"""Distinct values of a text column looked at for email and IP-address patterns."""
VALUE_SHARE = 0.5
"""A column whose sampled values match a pattern at least this often looks personal."""
TRAINING_ROW_ATTRIBUTES = (
    "labels_",
    "probabilities_",
    "_raw_data",
    "_condensed_tree",
    "_single_linkage_tree",
    "_min_spanning_tree",
    "_outlier_scores",
    "_prediction_data",
    "_finite_index",
    "_branch_detection_data",
)
"""Fitted attributes of scikit-learn and hdbscan clusterers that hold one entry per training
row (or the rows themselves) and that assigning new customers does not read."""


# ---------------------------------------------------------------------------------------------
# Personal columns at intake


def snake_case(name: str) -> str:
    """``CustomerEMail`` -> ``customer_e_mail``; ``Zip Code`` -> ``zip_code``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name).strip())
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def looks_personal(column: str, values: pd.Series) -> str | None:
    """What personal data ``column`` seems to hold (by its name, or by its values for emails
    and IP addresses), e.g. "an email address (by its values)"; None if nothing."""
    name = snake_case(column)
    for what, pattern in PERSONAL_NAMES.items():
        if pattern.search(name):
            return what
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    sample = values.dropna().astype(str).str.strip().drop_duplicates().head(VALUE_SAMPLE)
    if sample.empty:
        return None
    if sample.str.fullmatch(_EMAIL).mean() >= VALUE_SHARE:
        return "an email address (by its values)"
    if sample.map(_is_ip).mean() >= VALUE_SHARE:
        return "an IP address (by its values)"
    return None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def warn_personal(path: Path, frame: pd.DataFrame, data: DataSpec) -> None:
    """A ``SegmlWarning`` per column of ``frame`` (read from ``path``) that looks personal
    but is not declared in ``data.personal``, saying whether the model uses it.

    Python shows a warning once per message, so each column is named once per run.
    """
    declared = set(data.personal) | {data.id_column}
    used = set(data.attributes.columns()) | set(data.outcomes.columns().values())
    for column in frame.columns:
        what = None if column in declared else looks_personal(column, frame[column])
        if what is None:
            continue
        fate = (
            "the model uses it: values shared by fewer than min_report_size customers are "
            "pooled, but prefer a coarser column"
            if column in used
            else "it is not used; list it in data.personal to drop it on read"
        )
        warnings.warn(
            f"{path}: column {column!r} looks like {what}; {fate}", SegmlWarning, stacklevel=2
        )


# ---------------------------------------------------------------------------------------------
# Values shared by fewer than k customers


def common_values(values: pd.Series, min_count: int) -> np.ndarray:
    """The values of ``values`` that at least ``min_count`` rows hold."""
    counts = values.value_counts(dropna=True)
    return counts.index[counts >= min_count].to_numpy(dtype=object)


def pool_rare(frame: pd.DataFrame, columns: Iterable[str], k: int) -> pd.DataFrame:
    """``frame`` with the values of ``columns`` that fewer than ``k`` of its rows share
    replaced by ``RARE_CATEGORY`` (missing values stay missing): what reports and the model's
    references may show of a categorical column."""
    pooled = {}
    for column in columns:
        if column in frame.columns:
            values = frame[column]
            keep = values.isin(common_values(values, k)) | values.isna()
            if not keep.all():
                pooled[column] = values.astype(object).where(keep, RARE_CATEGORY)
    return frame.assign(**pooled) if pooled else frame


def microaggregate(values: np.ndarray, k: int) -> np.ndarray:
    """A pseudo-sample of ``values`` (same size, sorted) in which no value is a customer's: the
    means of runs of ``k`` sorted neighbours (the last run takes the remainder), each at its
    run's middle rank, with the ranks between interpolated (univariate microaggregation; the
    interpolation keeps the distribution function smooth for two-sample tests)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        return ordered
    starts = np.arange(max(ordered.size // k, 1)) * k
    sizes = np.diff(np.append(starts, ordered.size))
    means = np.add.reduceat(ordered, starts) / sizes
    ranks = np.arange(ordered.size) + 0.5
    return np.interp(ranks, starts + sizes / 2, means)


def example_row(
    table: pd.DataFrame, id_column: str, features: list[str], k: int
) -> dict[str, Any]:
    """A made-up customer for a model's input example: ``EXAMPLE_ID``, each numeric feature's
    median to two significant digits (whole for whole-numbered columns), and each other
    feature's most common value when at least ``k`` customers share it, else
    ``RARE_CATEGORY``. No value in it is a single customer's."""
    row: dict[str, Any] = {id_column: EXAMPLE_ID}
    for column in features:
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            common = values.value_counts()
            shared = not common.empty and common.iloc[0] >= k
            row[column] = common.index[0] if shared else RARE_CATEGORY
            continue
        median = float(values.median())
        if np.isnan(median):
            row[column] = 0
            continue
        rounded = float(f"{median:.2g}")
        present = values.dropna()
        whole = bool((present == present.round()).all())
        row[column] = int(round(rounded)) if whole else rounded
    return row


def without_training_rows(estimator: Any) -> Any:
    """A shallow copy of a fitted clusterer without the ``TRAINING_ROW_ATTRIBUTES`` (HDBSCAN's
    training data, trees and labels; k-means' labels): what a saved model keeps. HDBSCAN still
    assigns through its ``assign_index_``, whose neighbour index needs the training points."""
    stripped = copy.copy(estimator)
    for name in TRAINING_ROW_ATTRIBUTES:
        vars(stripped).pop(name, None)
    return stripped


# ---------------------------------------------------------------------------------------------
# Published counts


def published_share(share: float, total: int, k: int) -> float:
    """``share`` of ``total`` customers as a report may show it: NaN when it is a group of 1
    to ``k - 1`` customers (beside the total, the share would give the group's size)."""
    count = round(share * total)
    return float("nan") if 0 < count < k else share


def hidden_segments(sizes: pd.DataFrame, k: int) -> set[int]:
    """The segments (index) a publication of ``sizes`` must blank; each column is a set of
    segment sizes whose total is known (e.g. each model's customers per segment).

    Every segment with 1 to ``k - 1`` customers in some column; then, per column, while the
    blanked ones are fewer than two or add up to fewer than ``k`` customers, the smallest
    shown one too, so a blanked size cannot be read as the total minus the others.
    """
    values = sizes.fillna(0).to_numpy(dtype=np.float64)
    hidden = np.asarray(((values > 0) & (values < k)).any(axis=1))
    while True:
        before = hidden.copy()
        for line in values.T:
            _protect_line(line, hidden, k)
        if (hidden == before).all():
            return {int(s) for s in sizes.index[hidden]}


def hidden_cells(
    counts: pd.DataFrame, k: int, rows: Iterable[int] = (), columns: Iterable[int] = ()
) -> np.ndarray:
    """Cells of a cross table of customers to blank: every count from 1 to ``k - 1``, the
    whole ``rows`` and ``columns`` (segments blanked elsewhere), then, in every row and
    column (whose totals other tables show), the smallest shown counts until the blanked
    ones are at least two and add up to at least ``k``."""
    values = counts.to_numpy(dtype=np.float64)
    hidden = (values > 0) & (values < k)
    hidden[np.asarray(counts.index.isin(list(rows)))] = True
    hidden[:, np.asarray(counts.columns.isin(list(columns)))] = True
    while True:
        before = hidden.copy()
        for i in range(values.shape[0]):
            _protect_line(values[i], hidden[i], k)
        for j in range(values.shape[1]):
            _protect_line(values[:, j], hidden[:, j], k)
        if (hidden == before).all():
            return hidden


def _protect_line(sizes: np.ndarray, hidden: np.ndarray, k: int) -> None:
    """In place: blank the smallest shown positive ``sizes`` of a line with a known total
    while its blanked ones hold customers but are fewer than two or hold fewer than ``k``
    (blanked zeros alone give nobody away)."""
    while 0 < sizes[hidden].sum() and (hidden.sum() < 2 or sizes[hidden].sum() < k):
        shown = np.flatnonzero(~hidden & (sizes > 0))
        if shown.size == 0:
            return
        hidden[shown[np.argmin(sizes[shown])]] = True
