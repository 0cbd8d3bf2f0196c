"""Drift of a batch against training: segment-share PSI and chi-square, per-feature drift.

Per-feature drift follows Evidently's default choice of method: a two-sample test when a
sample is small (Kolmogorov-Smirnov for numeric columns, chi-square for categorical ones, a
z-test for two-valued ones; drift when p < ``p_value``), a distance otherwise (Wasserstein
normed by the reference's standard deviation for numeric columns, Jensen-Shannon for
categorical ones; drift when the distance >= ``distance``). Numeric columns with at most
``FEW_VALUES`` distinct values are compared as categories, as Evidently does. Evidently decides
on the reference's size; here the smaller sample decides, so that a small batch gets a test.
PSI is reported for every column (0.1 moderate, 0.25 major shift are the usual readings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from segml.privacy import RARE_CATEGORY, microaggregate

PSI_EPS = 1e-4
"""Shares of zero are raised to this before the PSI's logarithm (Evidently's choice)."""
REFERENCE_QUANTILES = 1_000
"""Quantiles kept per numeric training column: the reference without any training row."""
FEW_VALUES = 5
"""Numeric columns with at most this many distinct training values are compared as categories."""
PSI_BINS = 10
"""PSI of a numeric column uses the training deciles as bin edges."""
NUMERIC, CATEGORICAL = "numeric", "categorical"


@dataclass(frozen=True, slots=True)
class DriftReference:
    """The training distribution of each input column, kept as aggregates only.

    Attributes
    ----------
    rows : int
        Training customers described.
    quantiles : dict of str to ndarray
        Per numeric column, ``min(rows, REFERENCE_QUANTILES)`` evenly spaced quantiles of
        its microaggregated values: a pseudo-sample of the column, missing values left out.
    counts : dict of str to dict of str to int
        Per categorical (or few-valued numeric) column, customers per value (as text).
    """

    rows: int
    quantiles: dict[str, np.ndarray]
    counts: dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class ShareDrift:
    """Segment shares of a batch against training, per segment and overall."""

    table: pd.DataFrame
    psi: float
    chi2: float
    p_value: float


def category_keys(values: pd.Series) -> pd.Series:
    """Values as the text both sides of a categorical comparison use; missing values dropped."""
    return values.dropna().astype(str)


def drift_reference(
    frame: pd.DataFrame, categorical: Sequence[str], min_count: int = 1
) -> DriftReference:
    """Summarise the training columns of ``frame`` for later drift checks.

    Parameters
    ----------
    frame : DataFrame
        The training customers' input columns (categories of fewer than ``min_count``
        customers already pooled, see :func:`segml.privacy.pool_rare`).
    categorical : sequence of str
        Columns compared as categories whatever their type.
    min_count : int
        Numeric quantiles are taken of the values microaggregated by ``min_count``
        (:func:`segml.privacy.microaggregate`): none is a single customer's value.
    """
    quantiles: dict[str, np.ndarray] = {}
    counts: dict[str, dict[str, int]] = {}
    for column in frame.columns:
        values = frame[column]
        if column in categorical or values.nunique() <= FEW_VALUES:
            tally = category_keys(values).value_counts().sort_index()
            counts[column] = {str(k): int(v) for k, v in tally.items()}
        else:
            present = microaggregate(values.dropna().to_numpy(dtype=float), min_count)
            size = min(present.size, REFERENCE_QUANTILES)
            probs = (np.arange(size) + 0.5) / max(size, 1)
            quantiles[column] = np.quantile(present, probs, method="inverted_cdf")
    return DriftReference(len(frame), quantiles, counts)


def psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-bin PSI terms ``(a - e) * ln(a / e)`` of two share vectors; their sum is the PSI."""
    e = np.clip(np.asarray(expected, dtype=float), PSI_EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), PSI_EPS, None)
    return (a - e) * np.log(a / e)


def share_drift(expected: pd.Series, counts: pd.Series) -> ShareDrift:
    """Segment shares of a batch against training.

    Parameters
    ----------
    expected : Series
        Training customers per segment id (-1 for no segment).
    counts : Series
        Batch customers per segment id.

    Returns
    -------
    ShareDrift
        ``table``: per segment ``segment_id, expected_share, customers, share, psi, p_value``,
        the p-value of a chi-square test of that segment's share in training vs the batch;
        overall, the PSI (sum of the terms) and a chi-square test of homogeneity of all
        counts. Both tests treat training as a sample too, not as the truth.
    """
    ids = expected.index.union(counts.index)
    train = expected.reindex(ids, fill_value=0).to_numpy(dtype=float)
    batch = counts.reindex(ids, fill_value=0).to_numpy(dtype=float)
    terms = psi(train / train.sum(), batch / batch.sum())
    occupied = (train + batch) > 0
    overall = stats.chi2_contingency(np.vstack([train, batch])[:, occupied], correction=False)
    table = pd.DataFrame(
        {
            "segment_id": ids.to_numpy(dtype=np.int64),
            "expected_share": train / train.sum(),
            "customers": batch.astype(np.int64),
            "share": batch / batch.sum(),
            "psi": terms,
            "p_value": _segment_p_values(train, batch),
        }
    )
    return ShareDrift(table, float(terms.sum()), float(overall.statistic), float(overall.pvalue))


def _segment_p_values(train: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Per segment, the chi-square test (2 x 2, no continuity correction) that it holds the
    same share of both samples; 1 where a row or column of its table is empty."""
    n_train, n_batch = train.sum(), batch.sum()
    inside, outside = train + batch, (n_train - train) + (n_batch - batch)
    margins = n_train * n_batch * inside * outside
    tested = margins > 0
    cross = train * (n_batch - batch) - batch * (n_train - train)
    margins[~tested] = 1.0
    statistic = (n_train + n_batch) * cross**2 / margins
    return np.where(tested, stats.chi2.sf(statistic, 1), 1.0)


def feature_drift(
    reference: DriftReference,
    current: pd.DataFrame,
    *,
    test_max_rows: int,
    p_value: float,
    distance: float,
) -> pd.DataFrame:
    """Drift of each column of ``current`` (a batch or a sample of it) against ``reference``.

    Returns
    -------
    DataFrame
        One row per column: ``feature, kind, method, score, threshold, drifted, psi``;
        ``score`` is a p-value for tests and a distance otherwise.
    """
    small = min(reference.rows, len(current)) <= test_max_rows
    rows = []
    for column in current.columns:
        if column in reference.quantiles:
            ref = reference.quantiles[column]
            cur = current[column].dropna().to_numpy(dtype=float)
            method, score, term = _numeric(ref, cur, small)
            kind = NUMERIC
        else:
            ref_counts = pd.Series(reference.counts[column], dtype=float)
            cur_counts = _as_reference(category_keys(current[column]), ref_counts.index)
            cur_counts = cur_counts.value_counts().astype(float)
            method, score, term = _categorical(ref_counts, cur_counts, reference.rows, small)
            kind = CATEGORICAL
        threshold = p_value if small else distance
        drifted = bool(score < threshold) if small else bool(score >= threshold)
        rows.append((column, kind, method, score, threshold, drifted, term))
    columns = ["feature", "kind", "method", "score", "threshold", "drifted", "psi"]
    return pd.DataFrame(rows, columns=columns)


def _as_reference(keys: pd.Series, known: pd.Index) -> pd.Series:
    """A batch's categories as the reference counts them: when training pooled its rare
    categories, a category the reference lacks is one of them."""
    if RARE_CATEGORY not in known:
        return keys
    return keys.where(keys.isin(known), RARE_CATEGORY)


def _numeric(ref: np.ndarray, cur: np.ndarray, small: bool) -> tuple[str, float, float]:
    if cur.size == 0 or ref.size == 0:
        return ("ks" if small else "wasserstein"), np.nan, np.nan
    ref, cur = np.sort(ref), np.sort(cur)
    edges = np.unique(np.quantile(ref, np.arange(1, PSI_BINS) / PSI_BINS))
    term = float(psi(_binned(ref, edges), _binned(cur, edges)).sum())
    if small:
        return "ks", float(stats.ks_2samp(ref, cur).pvalue), term
    norm = max(float(np.std(ref)), 1e-3)
    return "wasserstein", _area_between_cdfs(ref, cur) / norm, term


def wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance between the samples ``u`` and ``v``, as
    ``scipy.stats.wasserstein_distance`` (unweighted) but from one merge of the sorted
    samples: the area between their empirical CDFs."""
    return _area_between_cdfs(np.sort(u), np.sort(v))


def _area_between_cdfs(u: np.ndarray, v: np.ndarray) -> float:
    """:func:`wasserstein` of the sorted samples ``u`` and ``v``."""
    values = np.concatenate([u, v])
    order = np.argsort(values, kind="stable")  # two sorted runs: one merge
    cdf_gap = np.cumsum(np.where(order < u.size, 1.0 / u.size, -1.0 / v.size))[:-1]
    return float(np.abs(cdf_gap) @ np.diff(values[order]))


def _binned(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of the sorted values ``ordered`` in each bin ``[edges[i - 1], edges[i])``
    (open-ended at both ends): one binary search per edge, not per value."""
    below = np.searchsorted(ordered, edges, "left")
    return np.diff(below, prepend=0, append=ordered.size) / ordered.size


def _categorical(
    ref: pd.Series, cur: pd.Series, ref_rows: int, small: bool
) -> tuple[str, float, float]:
    keys = ref.index.union(cur.index)
    e = ref.reindex(keys, fill_value=0.0)
    a = cur.reindex(keys, fill_value=0.0)
    if a.sum() == 0 or e.sum() == 0:
        return ("chi2" if small else "jensenshannon"), np.nan, np.nan
    e_share, a_share = (e / e.sum()).to_numpy(), (a / a.sum()).to_numpy()
    term = float(psi(e_share, a_share).sum())
    if not small:
        return "jensenshannon", float(jensenshannon(e_share, a_share)), term
    if len(keys) <= 2:
        return "z", _two_proportions(e_share[0], a_share[0], ref_rows, a.sum()), term
    expected = np.clip(e_share, PSI_EPS, None) * a.sum()
    expected *= a.sum() / expected.sum()
    return "chi2", float(stats.chisquare(a.to_numpy(), expected).pvalue), term


def _two_proportions(p1: float, p2: float, n1: float, n2: float) -> float:
    """Two-sided p-value of the z-test that two proportions are equal."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(p1 - p2) / se))
