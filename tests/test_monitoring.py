"""Monitoring: drift statistics, emerging-candidate rules, migration counts, alerts, spec."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from segml.errors import SpecError
from segml.metrics import migration_matrix
from segml.metrics.drift import (
    PSI_BINS,
    REFERENCE_QUANTILES,
    drift_reference,
    feature_drift,
    psi,
    share_drift,
    wasserstein,
)
from segml.migration import MigrationCounter, migration_summary
from segml.model import Segmenter, novelty_thresholds
from segml.monitoring import (
    EMERGING_FIT_ROWS,
    EXPECTED,
    _cohesive_strength,
    _nearest_fitted,
    alerts,
    find_emerging,
    fit_rows,
    min_candidate_size,
    segment_space,
)
from segml.novelty import MicroClusters, TrainingDensity, fit_density, micro_clusters
from segml.report import drift_text, scoring_markdown
from segml.scoring import score
from segml.spec import Monitoring, load_spec

from .conftest import EXPERIMENTS

SETTINGS = Monitoring()


def _drift(reference: pd.DataFrame, current: pd.DataFrame, categorical=()) -> pd.DataFrame:
    return feature_drift(
        drift_reference(reference, categorical),
        current,
        test_max_rows=SETTINGS.test_max_rows,
        p_value=SETTINGS.p_value,
        distance=SETTINGS.distance,
    ).set_index("feature")


def test_psi_is_zero_for_equal_shares_and_matches_the_formula() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]).sum() == 0.0
    expected = (0.7 - 0.5) * np.log(0.7 / 0.5) + (0.3 - 0.5) * np.log(0.3 / 0.5)
    assert psi([0.5, 0.5], [0.7, 0.3]).sum() == pytest.approx(expected)
    assert np.isfinite(psi([1.0, 0.0], [0.5, 0.5]).sum()), "empty bins are smoothed"


def test_share_drift_separates_noise_from_a_shift() -> None:
    training = pd.Series({-1: 100, 0: 3_000, 1: 3_000, 2: 3_900})
    same = share_drift(training, pd.Series({-1: 11, 0: 299, 1: 301, 2: 389}))
    assert same.psi < 0.01 and same.p_value > 0.05
    shifted = share_drift(training, pd.Series({-1: 10, 0: 600, 1: 100, 2: 290}))
    assert shifted.psi > 0.25 and shifted.p_value < 1e-6
    table = shifted.table.set_index("segment_id")
    assert table.loc[1, "p_value"] < 1e-6 and table["psi"].sum() == pytest.approx(shifted.psi)
    assert table["customers"].sum() == 1_000
    for segment, row in table.iterrows():
        trained, scored = training.get(segment, 0), row["customers"]
        two_by_two = [[trained, training.sum() - trained], [scored, 1_000 - scored]]
        expected = stats.chi2_contingency(two_by_two, correction=False).pvalue
        assert row["p_value"] == pytest.approx(expected, rel=1e-9), f"segment {segment}"
    absent = share_drift(training, pd.Series({0: 500, 1: 500, 2: 0, 7: 0}))
    assert absent.table.set_index("segment_id").loc[7, "p_value"] == 1.0, "empty in both"


def test_reference_keeps_quantiles_and_counts_not_rows() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "x": rng.normal(size=5_000),
            "kids": rng.integers(0, 3, size=5_000).astype(float),
            "region": rng.choice(["n", "s"], size=5_000),
        }
    )
    reference = drift_reference(train, categorical=["region"])
    assert reference.rows == 5_000
    assert reference.quantiles["x"].size == REFERENCE_QUANTILES
    assert set(reference.counts) == {"kids", "region"}, "few-valued numbers are categories"
    assert sum(reference.counts["region"].values()) == 5_000


@pytest.mark.parametrize("sizes", [(1_000, 50_000), (7, 3), (1, 1)])
def test_wasserstein_is_scipys(sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    u, v = rng.normal(size=sizes[0]), rng.normal(0.3, 1.2, size=sizes[1])
    counts = rng.poisson(3, size=sizes[0]).astype(float), rng.poisson(3.5, size=sizes[1])
    for a, b in [(u, v), counts, (u, u[::-1])]:
        assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-12)


def test_feature_psi_bins_values_at_the_training_deciles() -> None:
    rng = np.random.default_rng(8)
    # Values on a 0.1 grid, so that many sit exactly on an edge.
    train = pd.DataFrame({"x": np.round(rng.normal(size=4_000), 1)})
    current = pd.DataFrame({"x": np.round(rng.normal(0.4, 1.0, size=3_000), 1)})
    reference = drift_reference(train, categorical=[])
    ref = reference.quantiles["x"]
    edges = np.unique(np.quantile(ref, np.arange(1, PSI_BINS) / PSI_BINS))

    def shares(values: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, values, "right")
        return np.bincount(bins, minlength=edges.size + 1) / values.size

    expected = psi(shares(ref), shares(current["x"].to_numpy())).sum()
    assert _drift(train, current, []).loc["x", "psi"] == pytest.approx(expected, rel=1e-12)


def test_feature_drift_uses_tests_for_small_samples_and_distances_above() -> None:
    rng = np.random.default_rng(1)
    train = pd.DataFrame(
        {"x": rng.normal(size=4_000), "c": rng.choice(["a", "b", "c"], size=4_000)}
    )
    big_same = pd.DataFrame({"x": rng.normal(size=3_000), "c": rng.choice(["a", "b", "c"], 3_000)})
    big_moved = pd.DataFrame(
        {
            "x": rng.normal(0.5, 1.0, size=3_000),
            "c": rng.choice(["a", "b", "c"], 3_000, p=[0.8, 0.1, 0.1]),
        }
    )
    same = _drift(train, big_same, ["c"])
    assert same["method"].tolist() == ["wasserstein", "jensenshannon"]
    assert not same["drifted"].any()
    moved = _drift(train, big_moved, ["c"])
    assert moved["drifted"].all() and (moved["psi"] > 0.1).all()
    small = _drift(train, big_moved.head(300), ["c"])
    assert small["method"].tolist() == ["ks", "chi2"]
    assert small["drifted"].all() and (small["score"] < 0.05).all(), "p-values"
    binary = _drift(
        train.assign(c=rng.choice(["a", "b"], 4_000)), big_same.head(200).assign(c="a"), ["c"]
    )
    assert binary.loc["c", "method"] == "z" and binary.loc["c", "drifted"]


def _blobs(rng: np.random.Generator, centres: list[tuple[float, float]], n: int) -> np.ndarray:
    return np.vstack([rng.normal(c, 1.0, size=(n, 2)) for c in centres])


def _space(rng: np.random.Generator):
    Z = _blobs(rng, [(0, 0), (10, 0)], 1_000)
    ids = np.repeat([0, 1], 1_000)
    numeric = pd.DataFrame({"a": Z[:, 0] + 20.0, "b": Z[:, 1] + 20.0})
    return segment_space(Z, ids, numeric)


def _emerging(
    Z: np.ndarray,
    space,
    previous: pd.DataFrame | None = None,
    n_scored: int = 20_000,
    density: TrainingDensity | None = None,
):
    numeric = pd.DataFrame({"a": Z[:, 0] + 20.0, "b": Z[:, 1] + 20.0})
    order = np.random.default_rng(0).permutation(len(Z)).astype(np.uint64)
    size = min_candidate_size(SETTINGS, n_scored, 20)
    return find_emerging(
        Z, numeric, order, n_scored, size, space, SETTINGS.candidate_max_spread,
        {0: "first", 1: "second"}, previous, density=density,
        min_growth=SETTINGS.candidate_min_growth,
    )  # fmt: skip


def _micro(centres: list[tuple[float, float]], counts: list[int]) -> MicroClusters:
    """Customers as unit-spread micro-clusters at ``centres``."""
    return MicroClusters(
        np.array(centres, float).reshape(-1, 2),
        np.ones((len(centres), 2)),
        np.array(counts, float),
    )


def _density(centres: list[tuple[float, float]], counts: list[int]) -> TrainingDensity:
    """Training customers at ``centres``, none of them novel."""
    return TrainingDensity(_micro(centres, counts), _micro([], []), 3.0, 1)


def test_a_group_as_common_as_at_training_is_not_a_candidate() -> None:
    # 400 of 20,000 batch customers (2%) sit in the group; at training, 2% (40 of 2,000) sat
    # there as well: the usual tail.
    rng = np.random.default_rng(3)
    space = _space(rng)
    group = rng.normal((5, 15), 1.0, size=(400, 2))
    there = _density([(0, 0), (10, 0), (5, 15)], [980, 980, 40])
    assert _emerging(group, space, density=there).table.empty
    found = _emerging(group, space, density=_density([(0, 0), (10, 0)], [1_000, 1_000]))
    assert found.ids == ["E1"]
    # About 63% of a 2-D normal group lies within its RMS radius: 1.3% of the batch, against
    # no training customer there (half of min_size 1 in 2,000, at the least).
    assert found.table["growth"].iloc[0] == pytest.approx(0.0126 * 4_000, rel=0.1)
    assert math.isnan(_emerging(group, space).table["growth"].iloc[0]), "no density, no growth"


def test_training_density_keeps_micro_clusters_of_enough_customers_not_rows() -> None:
    rng = np.random.default_rng(1)
    # A tight group of 15 customers, too few to be kept as such: they count as the tail.
    X = np.vstack([rng.normal(0, 1, size=(3_000, 3)), rng.normal(8, 0.1, size=(15, 3))])
    customers = micro_clusters(X, min_size=20)
    distance = customers.distance(X)
    threshold = np.quantile(distance, 0.99)
    density = fit_density(X, customers, threshold, 20, distance > threshold)
    customers = density.customers
    assert customers.counts.min() >= 20 and customers.counts.sum() == len(X)
    assert len(customers.centres) <= len(X) // 40, "aggregates, no row kept"
    assert density.novel.counts.tolist() == [31.0], "the 1% then novel, as one micro-cluster"
    assert (density.novelty(X) > density.threshold).mean() == pytest.approx(0.01, abs=0.002)
    assert (density.novelty(X[3_000:]) > density.threshold).all()
    far = np.array([[0.0, 0.0, 9.0], [4.0, 4.0, 4.0]])
    assert (density.novelty(far) > density.threshold).all()
    # One micro-cluster of deviation 1 in 2-D: the share within r is the chi-square mass,
    # 1 - e^(-r²/2).
    one = TrainingDensity(_micro([(0, 0)], [100]), _micro([], []), 3.0, 1)
    assert one.share_within(np.zeros(2), 1.5) == pytest.approx(1 - math.exp(-1.125), abs=0.02)
    assert one.share_within(np.array([50.0, 0.0]), 1.0) == 0.005, "never below half a customer"
    hidden = TrainingDensity(_micro([(0, 0)], [100]), _micro([], []), 3.0, 20)
    assert hidden.share_within(np.array([50.0, 0.0]), 1.0) == 0.1, "nor half a micro-cluster's"
    # Where the novel training customers lay, their own micro-clusters say how many were there.
    tail = TrainingDensity(_micro([(0, 0)], [100]), _micro([(50, 0)], [20]), 3.0, 1)
    assert tail.share_within(np.array([50.0, 0.0]), 1.5) == pytest.approx(
        20 * (1 - math.exp(-1.125)) / 100, abs=0.005
    )
    # A micro-cluster spread along one feature only puts its customers along that line.
    flat = MicroClusters(np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.array([100.0]))
    assert flat.within(np.array([0.0, 0.0]), 0.5) == pytest.approx(100 * 0.383, abs=3)


def test_a_dense_group_is_a_candidate_and_scattered_points_are_not() -> None:
    rng = np.random.default_rng(2)
    space = _space(rng)
    scattered = rng.uniform(-40, 40, size=(600, 2))
    assert _emerging(scattered, space).table.empty
    group = rng.normal((5, 15), 1.0, size=(400, 2))
    found = _emerging(np.vstack([scattered, group]), space)
    assert found.ids == ["E1"]
    members = found.labels[600:] == 1
    assert members.mean() > 0.95 and (found.labels[:600] == 1).mean() < 0.05
    row = found.table.iloc[0]
    assert row["nearest_segment_id"] in (0, 1) and row["spread_ratio"] < 1.5
    profile = found.profile.set_index("feature")
    assert profile.loc["b", "std_diff"] > 1, "the group sits high on b"


@pytest.mark.parametrize("fitted", [500, 100], ids=["all fitted", "a third fitted"])
def test_a_group_is_a_candidate_when_the_other_novel_points_are_too_few_to_split_off(
    monkeypatch, fitted: int
) -> None:
    # The loose cloud (250) is below the minimum size (300): the clustering never splits, and
    # the group is the densest part of its root. Cloud points fitted on leave the root early;
    # the other cloud points must not join the group through their nearest fitted neighbour.
    monkeypatch.setattr("segml.monitoring.FITTED_PER_CANDIDATE", fitted)
    rng = np.random.default_rng(9)
    space = _space(rng)
    cloud = rng.normal((-15, -15), 4.0, size=(250, 2))
    group = rng.normal((5, 15), 1.0, size=(400, 2))
    assert min_candidate_size(SETTINGS, 60_000, 20) == 300
    found = _emerging(np.vstack([cloud, group]), space, n_scored=60_000)
    assert found.ids == ["E1"]
    assert (found.labels[:250] == 1).mean() < 0.05 and (found.labels[250:] == 1).mean() > 0.95
    assert _emerging(cloud, space, n_scored=60_000).table.empty
    # Identical customers (default values, say) leave the root at an infinite lambda.
    alike = _emerging(np.vstack([cloud, np.tile([5.0, 15.0], (400, 1))]), space, n_scored=60_000)
    assert alike.ids == ["E1"] and (alike.labels[250:] == 1).all()


def test_the_cohesive_level_set_is_exact_far_from_the_origin_in_float32() -> None:
    rng = np.random.default_rng(10)
    Z = rng.normal(50.0, 0.5, size=(10_000, 2))
    strength = np.round(rng.random(10_000), 2)  # ties: rows of equal strength go together
    radius = float(np.sqrt(((Z - Z.mean(axis=0)) ** 2).sum(axis=1).mean()))
    as_float32 = Z.astype(np.float32)
    assert _cohesive_strength(as_float32, strength, radius * 1.0001) == 0.0, "all rows"
    assert _cohesive_strength(as_float32, strength, radius * 0.9999) > 0.0, "not all rows"
    assert _cohesive_strength(Z, strength, 0.0) == math.inf, "no level set has no spread"
    top = strength >= 0.5
    top_radius = np.sqrt(((Z[top] - Z[top].mean(axis=0)) ** 2).sum(axis=1).mean())
    assert _cohesive_strength(as_float32, strength, top_radius * 1.0001) <= 0.5


def test_too_small_a_group_is_not_a_candidate() -> None:
    rng = np.random.default_rng(3)
    group = rng.normal((5, 15), 1.0, size=(80, 2))
    assert min_candidate_size(SETTINGS, 20_000, 20) == 100
    assert _emerging(group, _space(rng)).table.empty


def test_a_candidate_near_a_previous_one_was_seen_before() -> None:
    rng = np.random.default_rng(4)
    space = _space(rng)
    first = _emerging(rng.normal((5, 15), 1.0, size=(400, 2)), space)
    again = _emerging(rng.normal((5.3, 15), 1.0, size=(400, 2)), space, first.table)
    elsewhere = _emerging(rng.normal((-15, -15), 1.0, size=(400, 2)), space, first.table)
    assert again.table["previous_id"].tolist() == ["E1"]
    assert elsewhere.table["seen_before"].tolist() == [False]


def test_migration_counts_match_the_in_memory_matrix() -> None:
    rng = np.random.default_rng(5)
    old = rng.integers(-1, 3, size=1_000)
    new = np.where(rng.random(1_000) < 0.2, rng.integers(0, 4, size=1_000), old)
    hashes = rng.permutation(1_000).astype(np.uint64) * np.uint64(7919)
    counter = MigrationCounter(hashes, old)
    for rows in np.array_split(np.arange(1_000), 3):
        counter.add(hashes[rows], new[rows])
    counter.add(np.array([1, 2], dtype=np.uint64) * np.uint64(7919 * 10_000), np.array([0, 0]))
    expected = migration_matrix(old, new)
    assert counter.matrix().to_numpy().tolist() == expected.to_numpy().tolist()
    matched, share = migration_summary(counter.matrix())
    assert matched == 1_000 and share == pytest.approx(float((old != new).mean()))


def test_alerts_follow_the_thresholds() -> None:
    rng = np.random.default_rng(6)
    space = _space(rng)
    none = _emerging(np.empty((0, 2)), space)
    calm = share_drift(pd.Series({0: 500, 1: 500}), pd.Series({0: 490, 1: 510}))
    moved = share_drift(pd.Series({0: 500, 1: 500}), pd.Series({0: 900, 1: 100}))
    features = pd.DataFrame({"feature": ["a", "b"], "drifted": [True, False]})
    assert alerts(none, calm, features.iloc[:0], SETTINGS) == ()
    assert "segment-share PSI" in alerts(none, moved, features.iloc[:0], SETTINGS)[0]
    assert "1 of 2 features drifted" in alerts(none, calm, features, SETTINGS)[0]
    stricter = Monitoring(drift_share=0.6)
    assert alerts(none, calm, features, stricter) == ()


def test_reference_spec_shows_the_monitoring_defaults() -> None:
    assert load_spec(EXPERIMENTS / "reference.yaml").monitoring == Monitoring()


def test_psi_levels_must_be_ordered(write_spec, synthetic_spec_file) -> None:
    spec = yaml.safe_load(synthetic_spec_file.read_text())
    spec["monitoring"] = {"psi_moderate": 0.3, "psi_major": 0.2}
    with pytest.raises(SpecError, match=r"monitoring: .*psi_moderate \(0.3\) exceeds psi_major"):
        load_spec(write_spec(spec))


@pytest.mark.parametrize(
    ("limit", "value"), [("EMERGING_FIT_ROWS", 2_500), ("FITTED_PER_CANDIDATE", 100)]
)
def test_candidates_fitted_on_a_subsample_take_in_the_rest(
    monkeypatch, limit: str, value: int
) -> None:
    rng = np.random.default_rng(7)
    space = _space(rng)
    group = rng.normal((5, 15), 1.0, size=(2_000, 2))
    Z = np.vstack([rng.uniform(-40, 40, size=(3_000, 2)), group])
    whole = _emerging(Z, space, n_scored=100_000)
    monkeypatch.setattr(f"segml.monitoring.{limit}", value)
    assert fit_rows(len(Z), min_candidate_size(SETTINGS, 100_000, 20)) <= len(Z) / 2
    sampled = _emerging(Z, space, n_scored=100_000)
    assert sampled.ids == whole.ids == ["E1"]
    assert (sampled.labels[3_000:] == 1).mean() > 0.95
    assert (sampled.labels == whole.labels).mean() > 0.97


def test_novel_customers_join_their_nearest_fitted_one_within_its_core_distance() -> None:
    # min_samples 1: each fitted row's core distance is its distance to the nearest other one.
    fitted = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])  # cores 1, 1, 2, 7
    in_cluster = np.array([True, False, True, True])
    others = np.array([[0.4, 0.0], [1.2, 0.0], [3.0, 1.9], [3.0, 2.1], [10.0, 7.0], [30.0, 0.0]])
    nearest, joins = _nearest_fitted(fitted, in_cluster, others, 1)
    # (1.2, 0) lies within the core distance of (3, 0) too, but its nearest is in no cluster.
    assert joins.tolist() == [True, False, True, False, True, False], "within, or at, the core"
    assert nearest.tolist() == [0, 2, 3]


def test_the_clustering_is_fitted_on_what_the_smallest_candidate_needs() -> None:
    assert fit_rows(9_395, 5_000) == 470, "a steady 1M batch: 250 of a 5,000 candidate"
    assert fit_rows(39_134, 5_000) == 1_957
    assert fit_rows(3_000_000, 50_000) == EMERGING_FIT_ROWS
    assert fit_rows(800, 100) == 800, "small batches: every novel customer"


def test_features_that_move_with_the_reference_date_raise_no_alert() -> None:
    rng = np.random.default_rng(6)
    none = _emerging(np.empty((0, 2)), _space(rng))
    calm = share_drift(pd.Series({0: 500, 1: 500}), pd.Series({0: 490, 1: 510}))
    features = pd.DataFrame(
        {
            "feature": ["recency_days", "frequency"],
            "drifted": [True, False],
            EXPECTED: [True, False],
        }
    )
    assert alerts(none, calm, features, SETTINGS) == ()
    assert (
        "1 of 1 features drifted" in alerts(none, calm, features.assign(drifted=True), SETTINGS)[0]
    )


def test_cdnow_scored_six_months_later_explains_its_drift(
    cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path: Path
) -> None:
    """The same customers as of mid-1998: recency grows for everyone who did not buy again,
    and the summary says so instead of counting it as drift."""
    segmenter = cdnow_model[0]
    source = EXPERIMENTS / "data" / "cdnow_master.txt"
    later = score(segmenter, source, tmp_path / "s.parquet", reference_date=dt.date(1998, 6, 30))
    features = later.report.features.set_index("feature")
    assert features.loc["recency_days", EXPECTED] and features.loc["recency_days", "drifted"]
    assert not features.drop(index="recency_days")[EXPECTED].any()
    assert not any("recency_days" in alert for alert in later.report.alerts)
    text = drift_text(later)
    assert "not counted: recency_days (days up to the reference date" in text
    assert "drifted: recency_days)" in text and "segment shares held steady" in text
    assert "recency_days" in scoring_markdown(later)


def test_two_novelty_tests_together_flag_the_share_one_would() -> None:
    """k-means' distance to a centroid and the distance to the training micro-clusters both
    flag customers: calibrated jointly, they flag 1% of the training customers, not 2%."""
    rng = np.random.default_rng(3)
    own, far = rng.normal(size=(2, 20_000))
    alone = novelty_thresholds(own, far, joint=False)
    assert ((own > alone[0]) | (far > alone[1])).mean() == pytest.approx(0.02, abs=0.001)
    joint = novelty_thresholds(own, far, joint=True)
    assert ((own > joint[0]) | (far > joint[1])).mean() == pytest.approx(0.01, abs=0.0005)


def test_cdnow_k_means_flags_one_percent_of_its_training_customers_novel(
    cdnow_model: tuple[Segmenter, pd.DataFrame],
) -> None:
    segmenter, table = cdnow_model
    assert segmenter.assign(table).is_novel.mean() == pytest.approx(0.01, abs=0.002)


def test_cdnow_scored_three_months_later_finds_no_new_kind_of_customer(
    cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path: Path
) -> None:
    """Customers who stopped buying have, three months on, a recency no training customer
    could have had: capped at the training maximum, they are lapsed customers, not novel."""
    source = EXPERIMENTS / "data" / "cdnow_master.txt"
    later = score(
        cdnow_model[0], source, tmp_path / "s.parquet", reference_date=dt.date(1998, 3, 31)
    )
    assert later.report.emerging.table.empty
    assert later.novel / later.rows_scored < 0.03
