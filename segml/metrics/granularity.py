"""Under- and over-segmentation: the two failures practitioners' guides warn of, as checks a
reviewer can read (diverse customers lumped into one segment; segments too small to act on)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUMP_VALUE_SHARE = 0.5
"""A segment holding at least this share of the value (of the customers, without a value
outcome) is examined for lumping."""
LUMP_SPREAD = 0.8
"""...and flagged when its customers' value spreads at least this much of all customers' spread
(standard deviation of log1p value, so that a few large spenders do not decide)."""


@dataclass(frozen=True, slots=True)
class Check:
    """One granularity check: its name, whether it passed, and a sentence saying why."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        """The check as JSON holds it."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def granularity_checks(
    ids: np.ndarray, value: np.ndarray | None, min_share: float, min_count: int = 1
) -> list[Check]:
    """Over-segmentation (segments smaller than ``min_share`` of the customers) and
    under-segmentation (one segment holding most of the value with nearly all of its spread).

    Parameters
    ----------
    ids : ndarray of shape (n_customers,)
        Segment ids; negative ids are customers without a segment (not a segment).
    value : ndarray of shape (n_customers,), optional
        A non-negative value per customer (CLV or revenue); without it, the under-segmentation
        check looks at the largest segment by customers.
    min_share : float
        The spec's ``constraints.min_share``.
    min_count : int
        The spec's ``min_report_size``: a smaller segment's share is not given.
    """
    segments = np.unique(ids[ids >= 0])
    if segments.size == 0:
        return [Check("segments", False, "no customer is in a segment")]
    return [_small_segments(ids, segments, min_share, min_count), _lumped(ids, segments, value)]


def _small_segments(
    ids: np.ndarray, segments: np.ndarray, min_share: float, min_count: int
) -> Check:
    counts = np.array([np.count_nonzero(ids == s) for s in segments])
    shares = counts / ids.size
    small = segments[shares < min_share]
    smallest = int(segments[shares.argmin()])
    held = (
        f"{shares.min():.1%} of customers"
        if counts.min() >= min_count
        else f"fewer than {min_count} customers (min_report_size)"
    )
    detail = f"smallest segment {smallest} holds {held} (constraints.min_share {min_share:.1%})"
    if small.size:
        detail = f"{small.size} segment(s) below constraints.min_share; " + detail
    return Check("over-segmentation", not small.size, detail)


def _lumped(ids: np.ndarray, segments: np.ndarray, value: np.ndarray | None) -> Check:
    usable = value is not None and np.nansum(np.clip(value, 0, None)) > 0
    if not usable:
        shares = np.array([np.mean(ids == s) for s in segments])
        largest = int(segments[shares.argmax()])
        return Check(
            "under-segmentation",
            shares.max() < LUMP_VALUE_SHARE,
            f"largest segment {largest} holds {shares.max():.1%} of customers (no value outcome)",
        )
    assert value is not None
    spend = np.nan_to_num(np.clip(value, 0, None))
    shares = np.array([spend[ids == s].sum() for s in segments]) / spend.sum()
    top = segments[shares.argmax()]
    logged = np.log1p(spend)
    overall = logged.std()
    spread = logged[ids == top].std() / overall if overall > 0 else 0.0
    lumped = shares.max() >= LUMP_VALUE_SHARE and spread >= LUMP_SPREAD
    return Check(
        "under-segmentation",
        not lumped,
        f"segment {int(top)} holds {shares.max():.1%} of the value; its customers' value "
        f"spreads {spread:.2f} times as widely as all customers'",
    )
