"""Business view of a segmentation: segment sizes and outcomes, value R², feature profiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

NOISE = -1

OUTCOME_ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    "revenue": (("revenue_share", "share"), ("revenue_mean", "mean")),
    "monetary": (("spend_mean", "mean"),),
    "clv": (("clv_mean", "mean"), ("clv_total", "sum"), ("clv_share", "share")),
    "p_alive": (("p_alive_mean", "mean"),),
    "expected_purchases": (("expected_purchases_mean", "mean"),),
    "conversion": (("conversion_rate", "mean"),),
    "repeat": (("repeat_rate", "mean"),),
    "recency": (("recency_mean", "mean"),),
    "churn": (("churn_rate", "mean"),),
}
"""Outcome columns named after a role, and the ``(output column, statistic)`` pairs they give.
(``monetary`` gives ``spend_mean``, not ``monetary_mean``, the feature of mean order value.)

``share`` is the segment's part of the column's total over all rows, ``sum`` that total and
``mean`` the segment mean (a rate for 0/1 columns). Columns with any other name give
``<name>_mean``.
"""

LIFT_MIN_MEAN = 0.01
"""Lift is reported only where the overall mean is at least this many overall standard
deviations away from zero; closer to zero, a ratio of means is noise (see ``feature_profile``)."""


@dataclass(frozen=True, slots=True)
class Business:
    """Size and value structure of a segmentation; shares are over all rows, noise included."""

    n_segments: int
    min_share: float
    max_share: float
    noise_share: float
    value_r2: float


def segment_table(labels: np.ndarray, outcomes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per segment with its size and outcome statistics.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer segment ids; -1 marks noise.
    outcomes : DataFrame, optional
        Numeric outcome columns aligned with ``labels`` by position. Columns named after a role
        in ``OUTCOME_ROLES`` (``revenue``, ``monetary``, ``clv``, ``p_alive``,
        ``expected_purchases``, ``conversion``, ``repeat``, ``recency``, ``churn``) give the
        statistics listed there; 0/1 roles (``conversion``,
        ``repeat``, ``churn``) give rates. Any other column gives ``<name>_mean``. Missing
        values are skipped.

    Returns
    -------
    DataFrame
        Columns ``segment_id, is_noise, customers, share`` then the outcome statistics, sorted
        by ``segment_id`` with the noise row (if any rows are noise) last. ``share`` is over all
        rows.
    """
    labels = np.asarray(labels)
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    table = pd.DataFrame(
        {
            "segment_id": ids,
            "is_noise": ids == NOISE,
            "customers": counts,
            "share": counts / labels.size,
        }
    )
    if outcomes is not None:
        _check_rows(outcomes, labels)
        grouped = outcomes.reset_index(drop=True).groupby(inverse, sort=True)
        means, sums = grouped.mean(), grouped.sum()
        for column in outcomes.columns:
            stats = OUTCOME_ROLES.get(str(column), ((f"{column}_mean", "mean"),))
            for name, stat in stats:
                if stat == "share":
                    values = sums[column] / outcomes[column].sum()
                elif stat == "sum":
                    values = sums[column]
                else:
                    values = means[column]
                table[name] = values.to_numpy(dtype=float)
    order = np.argsort(table["is_noise"].to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def business_metrics(
    labels: np.ndarray, value: np.ndarray | None = None, min_count: int = 1
) -> Business:
    """Segment count, size spread and how much of a value's variance the segments explain.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer segment ids; -1 marks noise.
    value : ndarray of shape (n_samples,), optional
        A per-customer value (revenue, CLV, ...).
    min_count : int
        The spec's ``min_report_size``: the share of a segment of fewer customers is not
        given (its size could be read from it beside the customer count).

    Returns
    -------
    Business
        ``min_share``/``max_share`` are the smallest and largest segment's share of all rows
        (noise is not a segment; NaN without segments, or when that segment holds fewer than
        ``min_count`` customers). ``value_r2`` is eta squared, the
        between-segment share of the variance of ``value`` over non-noise rows with a finite
        value; NaN if ``value`` is None, constant there, or there are no such rows.
    """
    labels = np.asarray(labels)
    n = labels.size
    segment = labels >= 0
    _, counts = np.unique(labels[segment], return_counts=True)
    shares = counts / n if n else counts.astype(float)
    return Business(
        n_segments=int(counts.size),
        min_share=float(shares.min()) if counts.size and counts.min() >= min_count else np.nan,
        max_share=float(shares.max()) if counts.size and counts.max() >= min_count else np.nan,
        noise_share=float(1 - segment.mean()) if n else np.nan,
        value_r2=np.nan if value is None else _eta_squared(labels, np.asarray(value, float)),
    )


def _eta_squared(labels: np.ndarray, value: np.ndarray) -> float:
    """Between-group sum of squares over total sum of squares, noise and NaN rows excluded."""
    keep = (labels >= 0) & np.isfinite(value)
    y = value[keep]
    if y.size == 0:
        return np.nan
    _, group, counts = np.unique(labels[keep], return_inverse=True, return_counts=True)
    centred = y - y.mean()
    total = float(centred @ centred)
    if total <= 1e-12 * max(float(y @ y), 1.0):
        return np.nan
    group_means = np.bincount(group, weights=centred) / counts
    return float(counts @ group_means**2 / total)


def feature_profile(X_df: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Each segment's mean and median of each feature, as a lift and in standard deviations.

    Missing values are left out of every statistic (one-off buyers have no inter-purchase
    interval), so a feature missing for some customers still has a mean per segment.

    Parameters
    ----------
    X_df : DataFrame of shape (n_samples, n_features)
        Numeric (or boolean) features aligned with ``labels`` by position, usually on their
        original business scale rather than the standardised model input.
    labels : ndarray of shape (n_samples,)
        Integer segment ids; -1 marks noise (profiled as its own row).

    Returns
    -------
    DataFrame
        Long format, one row per (segment, feature): ``segment_id, feature, mean, median,
        present, overall_mean, lift, std_diff``. ``present`` is the share of the segment with
        a value. ``lift`` = segment mean / overall mean (all rows); it is NaN where the
        overall mean is within ``LIFT_MIN_MEAN`` overall standard deviations of zero (centred
        or standardised features), where a ratio is meaningless. ``std_diff`` = (segment mean
        - overall mean) / overall standard deviation (ddof=0), defined wherever the segment
        has a value (0 for a constant feature); read it where ``lift`` is NaN. A segment
        without any value of a feature has NaN statistics for it.
    """
    labels = np.asarray(labels)
    _check_rows(X_df, labels)
    values = X_df.to_numpy(dtype=float)
    known = ~np.isnan(values)
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((ids.size, values.shape[1]))
    present = np.zeros_like(sums)
    np.add.at(sums, inverse, np.where(known, values, 0.0))
    np.add.at(present, inverse, known)
    medians = X_df.reset_index(drop=True).astype(float).groupby(inverse).median().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / present
        overall = np.nanmean(values, axis=0) if values.size else np.full(values.shape[1], np.nan)
        spread = np.nanstd(values, axis=0) if values.size else np.full(values.shape[1], np.nan)
        lift = np.where(np.abs(overall) >= LIFT_MIN_MEAN * spread, means / overall, np.nan)
        std_diff = np.where(spread > 0, (means - overall) / spread, np.where(present, 0.0, np.nan))
    n_seg, n_feat = means.shape
    return pd.DataFrame(
        {
            "segment_id": np.repeat(ids, n_feat),
            "feature": np.tile(np.asarray(X_df.columns, dtype=object), n_seg),
            "mean": means.ravel(),
            "median": medians.ravel(),
            "present": (present / counts[:, None]).ravel(),
            "overall_mean": np.tile(overall, n_seg),
            "lift": lift.ravel(),
            "std_diff": std_diff.ravel(),
        }
    )


def _check_rows(frame: pd.DataFrame, labels: np.ndarray) -> None:
    if len(frame) != labels.size:
        raise ValueError(
            f"{len(frame)} rows of data for {labels.size} labels; "
            "pass one row per labelled customer, in the same order"
        )
