"""Business metrics on tiny hand-computed examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segml.metrics import Business, business_metrics, feature_profile, segment_table

LABELS = np.array([0, 0, 1, 1, 1, -1])


def test_segment_table_by_hand() -> None:
    outcomes = pd.DataFrame(
        {
            "revenue": [10.0, 30.0, 5.0, 5.0, 20.0, 30.0],  # total 100
            "conversion": [1, 0, 0, 0, 1, 1],
            "churn": [0, 0, 1, 1, 0, 1],
            "visits": [2, 4, 1, 1, 1, 9],
        },
        index=[10, 11, 12, 13, 14, 15],  # aligned by position, not by index
    )
    table = segment_table(LABELS, outcomes)
    assert list(table.columns) == [
        "segment_id", "is_noise", "customers", "share",
        "revenue_share", "revenue_mean", "conversion_rate", "churn_rate", "visits_mean",
    ]  # fmt: skip
    assert table["segment_id"].tolist() == [0, 1, -1]  # noise last
    assert table["is_noise"].tolist() == [False, False, True]
    assert table["customers"].tolist() == [2, 3, 1]
    np.testing.assert_allclose(table["share"], [2 / 6, 3 / 6, 1 / 6])
    np.testing.assert_allclose(table["revenue_share"], [0.40, 0.30, 0.30])
    np.testing.assert_allclose(table["revenue_mean"], [20.0, 10.0, 30.0])
    np.testing.assert_allclose(table["conversion_rate"], [0.5, 1 / 3, 1.0])
    np.testing.assert_allclose(table["churn_rate"], [0.0, 2 / 3, 1.0])
    np.testing.assert_allclose(table["visits_mean"], [3.0, 1.0, 9.0])


def test_segment_table_roles_and_missing_values() -> None:
    labels = np.array([1, 1, 2])
    outcomes = pd.DataFrame(
        {"monetary": [2.0, np.nan, 5.0], "clv": [1.0, 3.0, 8.0], "recency": [4, 6, 1],
         "repeat": [True, False, True]}
    )  # fmt: skip
    table = segment_table(labels, outcomes)
    assert "is_noise" in table and not table["is_noise"].any()
    np.testing.assert_allclose(table["spend_mean"], [2.0, 5.0])  # NaN skipped
    np.testing.assert_allclose(table["clv_mean"], [2.0, 8.0])
    np.testing.assert_allclose(table["recency_mean"], [5.0, 1.0])
    np.testing.assert_allclose(table["repeat_rate"], [0.5, 1.0])


def test_segment_table_without_outcomes_and_bad_length() -> None:
    table = segment_table(LABELS)
    assert list(table.columns) == ["segment_id", "is_noise", "customers", "share"]
    with pytest.raises(ValueError, match="5 rows of data for 6 labels"):
        segment_table(LABELS, pd.DataFrame({"revenue": range(5)}))


def test_business_metrics_by_hand() -> None:
    # value: segment 0 = {1, 3} (mean 2), segment 1 = {5, 5, 8} (mean 6); noise row ignored.
    # grand mean over the 5 non-noise rows = 22 / 5 = 4.4
    # SS_total = 3.4² + 1.4² + 0.6² + 0.6² + 3.6² = 27.2
    # SS_between = 2 * 2.4² + 3 * 1.6² = 19.2  ->  eta² = 19.2 / 27.2
    value = np.array([1.0, 3.0, 5.0, 5.0, 8.0, 1000.0])
    b = business_metrics(LABELS, value)
    assert b == Business(
        n_segments=2,
        min_share=pytest.approx(2 / 6),
        max_share=pytest.approx(3 / 6),
        noise_share=pytest.approx(1 / 6),
        value_r2=pytest.approx(19.2 / 27.2),
    )


@pytest.mark.parametrize(
    "value",
    [None, np.full(6, 7.0), np.array([1.0, 1.0, 1.0, 1.0, 1.0, 9.0])],
    ids=["no-value", "constant", "constant-outside-noise"],
)
def test_value_r2_is_nan_when_undefined(value: np.ndarray | None) -> None:
    assert np.isnan(business_metrics(LABELS, value).value_r2)


def test_value_r2_skips_missing_values_and_is_one_for_perfect_split() -> None:
    value = np.array([2.0, 2.0, 9.0, np.nan, 9.0, 0.0])
    assert business_metrics(LABELS, value).value_r2 == pytest.approx(1.0)


def test_business_metrics_without_segments() -> None:
    b = business_metrics(np.full(4, -1))
    assert b.n_segments == 0 and b.noise_share == 1.0
    assert np.isnan(b.min_share) and np.isnan(b.max_share)


def test_feature_profile_by_hand() -> None:
    X = pd.DataFrame(
        {
            "spend": [10.0, 30.0, 5.0, 5.0, 20.0, 0.0],  # mean 70 / 6, std ddof=0
            "centred": [-1.0, -1.0, 1.0, 1.0, 1.0, -1.0],  # mean 0: lift undefined
            "flat": [3.0] * 6,
        }
    )
    profile = feature_profile(X, LABELS)
    assert list(profile.columns) == [
        "segment_id", "feature", "mean", "median", "present", "overall_mean", "lift", "std_diff"
    ]  # fmt: skip
    assert profile["segment_id"].tolist() == [-1] * 3 + [0] * 3 + [1] * 3
    row = profile.set_index(["segment_id", "feature"])
    spend_mean, spend_std = 70 / 6, np.std([10.0, 30.0, 5.0, 5.0, 20.0, 0.0])
    assert row.loc[(0, "spend"), "mean"] == 20.0
    assert row.loc[(0, "spend"), "lift"] == pytest.approx(20.0 / spend_mean)
    assert row.loc[(1, "spend"), "std_diff"] == pytest.approx((10.0 - spend_mean) / spend_std)
    assert row.loc[(-1, "spend"), "lift"] == 0.0
    assert np.isnan(row.loc[(1, "centred"), "lift"])
    assert row.loc[(1, "centred"), "std_diff"] == pytest.approx(1.0)
    assert row.loc[(0, "flat"), "lift"] == 1.0 and row.loc[(0, "flat"), "std_diff"] == 0.0


def test_feature_profile_leaves_missing_values_out() -> None:
    """One-off buyers have no inter-purchase interval: the means are over those who do."""
    X = pd.DataFrame({"interpurchase_days": [np.nan, 30.0, np.nan, 10.0, 20.0, np.nan]})
    row = feature_profile(X, LABELS).set_index("segment_id")
    assert row.loc[0, "mean"] == 30.0 and row.loc[0, "present"] == 0.5
    assert row.loc[1, "mean"] == 15.0 and row.loc[1, "median"] == 15.0
    assert row.loc[0, "overall_mean"] == 20.0
    assert row.loc[1, "std_diff"] == pytest.approx(-5.0 / np.std([30.0, 10.0, 20.0]))
    assert np.isnan(row.loc[-1, "mean"]) and row.loc[-1, "present"] == 0.0
