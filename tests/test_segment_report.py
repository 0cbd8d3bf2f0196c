"""The segment report: rules that reproduce the segments, names its profile bears out, value."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from segml.metrics.surrogate import membership_rules
from segml.model import Segmenter
from segml.naming import _RANKED, _WORDS
from segml.segment_report import (
    SegmentReport,
    segment_html,
    segment_markdown,
    segment_report,
    value_table,
)

RANK_QUANTILE = {"top 10%": 0.9, "top 25%": 0.75, "bottom 25%": 0.25}
LEVELS = (("high", 1), ("low", -1))


@pytest.fixture(scope="module")
def cdnow_report(cdnow_model: tuple[Segmenter, pd.DataFrame]) -> SegmentReport:
    segmenter, table = cdnow_model
    ids = segmenter.segment_ids(segmenter.segmentation.labels)
    names = segmenter.segment_names()
    return segment_report(segmenter.spec, table, segmenter.features, ids, names, "CDNOW 1997")


def test_rules_recover_threshold_segments_in_the_data_units() -> None:
    rng = np.random.default_rng(0)
    orders, spend = rng.integers(0, 21, 3_000), rng.choice(np.arange(0, 10, 0.5), 3_000)
    ids = np.where(orders <= 10, 0, np.where(spend <= 5, 1, 2))
    rules = membership_rules(pd.DataFrame({"orders": orders, "spend": spend}), ids)
    assert rules.fidelity == 1.0 and rules.depth == 2
    assert rules.table["rule"].tolist() == [
        "orders <= 10",  # counts read as counts: orders <= 10.5 is orders <= 10
        "orders >= 11 and spend <= 5.25",
        "orders >= 11 and spend > 5.25",
    ]
    assert (rules.table[["precision", "coverage"]] == 1.0).all().all()


def test_a_rule_says_when_customers_without_a_value_belong() -> None:
    gap = np.arange(1, 101, dtype=float).repeat(20)
    gap[::4] = np.nan  # one-off buyers have no inter-purchase interval
    ids = np.where(np.isnan(gap) | (gap > 50), 0, 1)
    rules = membership_rules(pd.DataFrame({"gap": gap}), ids).table["rule"].tolist()
    assert rules == ["(gap >= 51 or none)", "gap <= 50"]


def test_a_rule_names_categories() -> None:
    country = pd.Series(["FR", "DE"] * 500, dtype="string")
    rules = membership_rules(pd.DataFrame({"country": country}), (country == "FR").to_numpy(int))
    assert rules.table["rule"].tolist()[1] in {"country = FR", "country != DE"}


def test_cdnow_rules_reproduce_the_segments(cdnow_report: SegmentReport) -> None:
    rules = cdnow_report.rules
    assert rules.fidelity >= 0.85 and rules.depth <= 5
    shown = cdnow_report.segments
    assert (shown["rule"].str.len() > 0).all()
    assert shown["precision"].between(0, 1).all() and shown["coverage"].between(0, 1).all()


def test_cdnow_profile_means_leave_one_off_buyers_out(cdnow_report: SegmentReport) -> None:
    gaps = cdnow_report.profile.query("feature == 'interpurchase_days'")
    with_gaps = gaps[gaps["present"] > 0]
    assert len(with_gaps) >= len(gaps) - 1 and with_gaps["mean"].notna().all()


def test_no_cdnow_segment_name_contradicts_its_profile(
    cdnow_report: SegmentReport, cdnow_model: tuple[Segmenter, pd.DataFrame]
) -> None:
    table = cdnow_model[1]
    profile = cdnow_report.profile.set_index(["segment_id", "feature"])
    checked = 0
    for segment, name in cdnow_report.segments[["segment_id", "segment_name"]].itertuples(False):
        for word in re.sub(r" \(\d+\)$", "", name).lower().split(", "):
            checked += _check_word(word, profile.loc[segment], table)
    assert checked >= len(cdnow_report.segments), "names say something to check"


def _check_word(word: str, profile: pd.DataFrame, table: pd.DataFrame) -> int:
    """Assert that ``word`` of a segment's name agrees with the segment's profile; return how
    many facts were checked."""
    ranked = re.fullmatch(r"(top 10%|top 25%|bottom 25%) (\w+)", word)
    if ranked:
        column = {label: c for c, label in _RANKED.items()}[ranked[2]]
        share_below = (table[column].dropna() <= profile.loc[column, "median"]).mean()
        quantile = RANK_QUANTILE[ranked[1]]
        assert share_below >= quantile if quantile > 0.5 else share_below <= quantile, word
        return 1
    if word == "one-off":
        assert profile.loc["frequency", "median"] <= 1, word
        return 1
    words = {w.lower(): (c, 1) for c, (w, _) in _WORDS.items()}
    words |= {w.lower(): (c, -1) for c, (_, w) in _WORDS.items()}
    words |= {f"{level} {c}": (c, sign) for c in profile.index for level, sign in LEVELS}
    if word in words:
        column, sign = words[word]
        mean, overall = profile.loc[column, "mean"], profile.loc[column, "overall_mean"]
        assert sign * (mean - overall) > 0, (word, mean, overall)
        median, base = profile.loc[column, "median"], table[column].median()
        assert sign * (median - base) >= 0, (word, median, base)
        return 1
    assert word == "typical", f"unknown word {word!r}"
    return 0


def test_value_and_priority_are_stated_and_ranked(cdnow_report: SegmentReport) -> None:
    value = value_table(cdnow_report)
    assert value["revenue_share"].sum() == pytest.approx(1.0)
    assert value["priority"].is_monotonic_decreasing
    assert value["rank"].tolist() == list(range(1, len(value) + 1))
    assert "share of customers x CLV per customer" in cdnow_report.priority_rule


def test_cdnow_segments_show_predicted_clv_and_probability_alive(
    cdnow_report: SegmentReport, cdnow_model: tuple[Segmenter, pd.DataFrame]
) -> None:
    segmenter, table = cdnow_model
    ids = segmenter.segment_ids(segmenter.segmentation.labels)
    shown = cdnow_report.segments.set_index("segment_id")
    for segment, row in shown.iterrows():
        members = table[ids == segment]
        assert row["clv_mean"] == pytest.approx(members["clv"].mean())
        assert row["clv_total"] == pytest.approx(members["clv"].sum())
        assert row["priority"] == pytest.approx(members["clv"].sum() / table["clv"].sum())
        assert row["p_alive_mean"] == pytest.approx(members["p_alive"].mean())
        assert row["expected_purchases_mean"] == pytest.approx(
            members["expected_purchases"].mean()
        )
    html = segment_html(cdnow_report)
    for header in ("mean CLV", "total CLV", "P(alive)", "expected purchases"):
        assert f">{header}</th>" in html


def test_the_pages_show_names_rules_and_no_missing_numbers(cdnow_report: SegmentReport) -> None:
    html, markdown = segment_html(cdnow_report), segment_markdown(cdnow_report)
    for name in cdnow_report.segments["segment_name"]:
        assert name in html and name in markdown
    for rule in cdnow_report.segments["rule"]:
        assert rule.replace("<", "&lt;").replace(">", "&gt;") in html
    assert "data:image/png;base64," in html and ">nan<" not in html
    assert "<th" in html and '<th class="blank' not in html
