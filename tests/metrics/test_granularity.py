"""Under- and over-segmentation checks on segmentations whose verdict is known."""

from __future__ import annotations

import numpy as np

from segml.metrics import granularity_checks


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_segment_below_min_share_is_over_segmentation() -> None:
    ids = np.r_[np.zeros(495), np.ones(495), np.full(10, 2)]
    checks = _by_name(granularity_checks(ids, None, min_share=0.02))
    over = checks["over-segmentation"]
    assert not over.passed
    assert over.detail.startswith("1 segment(s) below constraints.min_share")
    assert "smallest segment 2 holds 1.0% of customers" in over.detail
    assert _by_name(granularity_checks(ids, None, min_share=0.01))["over-segmentation"].passed


def test_one_segment_with_most_value_and_all_its_spread_is_under_segmentation() -> None:
    rng = np.random.default_rng(0)
    value = rng.lognormal(3, 1.5, 1_000)
    # Segments by something unrelated to value: the big one holds most of it, spread and all.
    lumped = np.where(rng.random(1_000) < 0.8, 0, 1)
    check = _by_name(granularity_checks(lumped, value, min_share=0.02))["under-segmentation"]
    assert not check.passed
    assert check.detail.startswith(
        "segment 0 holds 74.4% of the value; its customers' value spreads 0.99"
    )
    # Segments by value rank: the top segment holds most value but a narrow band of it.
    by_value = np.digitize(value, np.quantile(value, [0.5, 0.9]))
    check = _by_name(granularity_checks(by_value, value, min_share=0.02))["under-segmentation"]
    assert check.passed, check.detail


def test_without_value_the_largest_segment_is_reported() -> None:
    ids = np.r_[np.zeros(70), np.ones(30), -np.ones(5)]
    check = _by_name(granularity_checks(ids, None, min_share=0.02))["under-segmentation"]
    assert not check.passed
    assert check.detail == "largest segment 0 holds 66.7% of customers (no value outcome)"
