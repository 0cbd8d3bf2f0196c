"""Segment names: the few traits that set a segment apart, in words its profile bears out.

A trait is a categorical value most of a segment shares, much more often than the base does;
a heavy-tailed value column (spend, basket, quantity) described by rank, where the segment's
median customer falls in the base ("top 10% spend"), because a standardised mean of such a
column is carried by a few very large customers (other heavy-tailed columns are judged by
rank too, and named by their words: "recent", "slow repeat"); or another numeric column's
standardised mean difference, when the segment's median lies on the same side of the base's
(reports show medians: a name must not contradict them). A column that is missing for most of
a segment names nothing
(one-off buyers have no inter-purchase interval, so a segment of them is never called "fast
repeat").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

NAME_MIN_EFFECT = 0.3
"""A trait names a segment when it sets it apart by this many standard units."""
MIN_CATEGORY_SHARE = 0.5
"""A category names a segment only when at least this share of it has the category."""
HEAVY_TAIL_SKEW = 1.0
"""Non-negative numeric columns more skewed than this are described by rank."""
WORDS_PER_NAME = 3
_WORDS = {
    "recency_days": ("lapsed", "recent"),
    "frequency": ("frequent", "infrequent"),
    "monetary_total": ("high value", "low value"),
    "monetary_mean": ("big baskets", "small baskets"),
    "tenure_days": ("long-standing", "new"),
    "interpurchase_days": ("slow repeat", "fast repeat"),
}
_RANKED = {"monetary_total": "spend", "monetary_mean": "basket", "quantity_total": "quantity"}


def segment_names(features: pd.DataFrame, ids: np.ndarray, segments: list[int]) -> dict[int, str]:
    """A distinct name per segment from the training customers' features (one row each) and
    their segment ids; "Typical" when nothing sets a segment apart."""
    traits: dict[int, dict[str, float]] = {s: {} for s in segments}
    for column in features.columns:
        values = features[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            found = _numeric_traits(values.astype(float), ids, segments)
        else:
            found = _categorical_traits(values, ids, segments)
        for segment, (word, strength) in found.items():
            traits[segment][word] = strength
    return _unique_names({s: _phrase(t) for s, t in traits.items()})


def _numeric_traits(
    values: pd.Series, ids: np.ndarray, segments: list[int]
) -> dict[int, tuple[str, float]]:
    """Per segment, the word for ``values`` and its strength (|standard units|), if any."""
    present = values.dropna()
    if present.size < 2 or present.std() == 0:
        return {}
    ranked = present.min() >= 0 and stats.skew(present) > HEAVY_TAIL_SKEW
    found = {}
    for segment in segments:
        member = values[ids == segment]
        if member.notna().mean() < MIN_CATEGORY_SHARE:
            continue  # most of the segment lacks the value: it cannot describe them
        if ranked:
            rank = float((present <= member.median()).mean())
            word, strength = _rank_word(str(values.name), rank, member)
        else:
            strength = float((member.mean() - present.mean()) / present.std())
            if (member.median() - present.median()) * strength <= 0:
                continue  # a few customers move the mean; the typical member does not agree
            word = _mean_word(str(values.name), strength, member)
            strength = abs(strength)
        if word and strength >= NAME_MIN_EFFECT:
            found[segment] = (word, strength)
    return found


def _rank_word(column: str, rank: float, member: pd.Series) -> tuple[str, float]:
    """Where a segment's median falls in the base (``rank``: the share at or below it): a
    value column by its rank, another column by its high or low word."""
    strength = abs(float(stats.norm.ppf(np.clip(rank, 0.001, 0.999))))
    label = _RANKED.get(column)
    if 0.25 < rank < 0.75:
        return "", 0.0
    if label is None:
        return _mean_word(column, rank - 0.5, member), strength
    if rank >= 0.9:
        return f"top 10% {label}", strength
    return (f"top 25% {label}" if rank >= 0.75 else f"bottom 25% {label}"), strength


def _mean_word(column: str, effect: float, member: pd.Series) -> str:
    """The high or low word of ``column`` (by the sign of ``effect``) for the segment
    ``member``; "one-off" only for a segment most of which bought once."""
    high, low = _WORDS.get(column, (f"high {column}", f"low {column}"))
    if column == "frequency" and effect < 0 and member.median() <= 1:
        return "one-off"
    return high if effect > 0 else low


def _categorical_traits(
    values: pd.Series, ids: np.ndarray, segments: list[int]
) -> dict[int, tuple[str, float]]:
    """Per segment, its most common category when most of it has it and the base far less."""
    base = values.value_counts(normalize=True, dropna=True) * values.notna().mean()
    found = {}
    for segment in segments:
        member = values[ids == segment]
        shares = member.value_counts(dropna=True) / len(member)
        if shares.empty:
            continue
        value, share = shares.index[0], float(shares.iloc[0])
        expected = float(base[value])
        if share < MIN_CATEGORY_SHARE or expected >= 1:
            continue
        strength = (share - expected) / np.sqrt(expected * (1 - expected))
        if strength >= NAME_MIN_EFFECT:
            found[segment] = (f"{values.name} {value}", float(strength))
    return found


def _phrase(traits: dict[str, float]) -> str:
    strongest = sorted(traits, key=lambda word: -traits[word])[:WORDS_PER_NAME]
    text = ", ".join(strongest) or "typical"
    return text[0].upper() + text[1:]


def differs_by(profile: pd.DataFrame, top: int = 3) -> str:
    """How a candidate differs from its nearest segment in the features' own units: its
    ``top`` most different features (standardised gap at least ``NAME_MIN_EFFECT``), e.g.
    "frequency 35 vs 4.1, monetary_mean 7,400 vs 38"."""
    gaps = profile.set_index("feature")
    size = gaps["std_diff"].abs().sort_values(ascending=False)
    strongest = size[size >= NAME_MIN_EFFECT].index[:top]
    means, bases = gaps["mean"].astype(float), gaps["segment_mean"].astype(float)
    return ", ".join(f"{f} {_amount(means[f])} vs {_amount(bases[f])}" for f in strongest)


def _amount(value: float) -> str:
    """A figure as a report gives it: whole from 100 on (with thousands separators), else
    two significant digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2g}"


def _unique_names(names: dict[int, str]) -> dict[int, str]:
    counts = pd.Series(list(names.values())).value_counts()
    return {s: f"{n} ({s})" if counts[n] > 1 else n for s, n in names.items()}
