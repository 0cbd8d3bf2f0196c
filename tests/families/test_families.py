"""The algorithm catalogue on blobs with known truth, parametrized over every family."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import hdbscan as hdbscan_lib
import numpy as np
import optuna
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from segml.families import (
    FAMILIES,
    REDUCTION_SPACE,
    Choice,
    FloatRange,
    IntRange,
    _base,
    fit_reducer,
    row_batches,
    suggest,
)
from segml.families import gmm as seg_gmm
from segml.families import hdbscan as seg_hdbscan
from segml.families import kmeans as seg_kmeans
from tests.oracles import reference_assign, reference_novelty

CENTERS = np.array([[0, 0, 0], [9, 0, 0], [0, 9, 0], [0, 0, 9]], dtype=float)
PARAMS: dict[str, dict[str, Any]] = {
    "kmeans": {"n_clusters": 4},
    "gmm": {"n_components": 4, "covariance_type": "full", "reg_covar": 1e-6},
    "hdbscan": {"min_cluster_size": 30, "min_samples": 5},
}
SEED = 7


@pytest.fixture(scope="module")
def blobs() -> dict[str, np.ndarray]:
    """Four well-separated 3-d blobs: 2,000 training rows and 1,000 held-out rows."""
    X, y = make_blobs(3_000, centers=CENTERS, cluster_std=0.8, random_state=0)
    return {"X": X[:2_000], "y": y[:2_000], "X_new": X[2_000:], "y_new": y[2_000:]}


@pytest.fixture(scope="module")
def fitted(blobs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: FAMILIES[name].fit(blobs["X"], PARAMS[name], SEED) for name in FAMILIES}


def far_points(n: int, seed: int = 0) -> np.ndarray:
    """Rows at distance 40-60 from every blob centre."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return CENTERS.mean(axis=0) + direction * rng.uniform(45, 60, size=(n, 1))


def test_catalogue_names_and_spaces() -> None:
    assert list(FAMILIES) == ["kmeans", "gmm", "hdbscan"]
    for key, family in FAMILIES.items():
        assert family.name == key
        assert set(PARAMS[key]) <= set(family.default_space)
    assert set(REDUCTION_SPACE) == {"reducer", "n_components", "n_neighbors", "min_dist"}


def test_hdbscan_module_does_not_shadow_the_library() -> None:
    assert seg_hdbscan.hdbscan_lib is hdbscan_lib
    assert hdbscan_lib.__name__ == "hdbscan"
    assert issubclass(seg_hdbscan.SegmentHDBSCAN, hdbscan_lib.HDBSCAN)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fit_recovers_the_blobs(name: str, blobs: dict, fitted: dict) -> None:
    labels = FAMILIES[name].training_labels(fitted[name])
    assert labels.dtype == np.int64
    assert labels.shape == blobs["y"].shape
    assert adjusted_rand_score(blobs["y"], labels) >= 0.95


@pytest.mark.parametrize("name", list(FAMILIES))
def test_assign_held_out_rows(name: str, blobs: dict, fitted: dict) -> None:
    labels, confidence, novelty = FAMILIES[name].assign(fitted[name], blobs["X_new"])
    assert labels.dtype == np.int64 and confidence.dtype == novelty.dtype == np.float64
    assert labels.shape == confidence.shape == novelty.shape == blobs["y_new"].shape
    assert adjusted_rand_score(blobs["y_new"], labels) >= 0.95
    assert np.all((confidence >= 0.0) & (confidence <= 1.0))
    assert np.median(confidence[labels >= 0]) > 0.5


@pytest.mark.parametrize("name", list(FAMILIES))
def test_assign_agrees_with_training_labels(name: str, blobs: dict, fitted: dict) -> None:
    family = FAMILIES[name]
    labels = family.assign(fitted[name], blobs["X"]).labels
    assert adjusted_rand_score(family.training_labels(fitted[name]), labels) >= 0.99


@pytest.mark.parametrize("name", list(FAMILIES))
def test_far_points_are_more_novel_than_training_rows(
    name: str, blobs: dict, fitted: dict
) -> None:
    family = FAMILIES[name]
    train = family.assign(fitted[name], blobs["X"]).novelty
    far = family.assign(fitted[name], far_points(50)).novelty
    assert train.dtype == far.dtype == np.float64
    assert far.min() > np.quantile(train, 0.99)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_empty_input(name: str, fitted: dict) -> None:
    family = FAMILIES[name]
    for values in family.assign(fitted[name], np.empty((0, 3))):
        assert values.shape == (0,)


@pytest.mark.parametrize("name", ["kmeans", "gmm"])
def test_assign_refuses_rows_it_cannot_score(name: str, fitted: dict) -> None:
    family, rows = FAMILIES[name], np.zeros((2, 3))
    rows[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        family.assign(fitted[name], rows)
    with pytest.raises(ValueError, match=r"2-D array of rows and features, got shape \(3,\)"):
        family.assign(fitted[name], np.zeros(3))
    with pytest.raises(ValueError, match="expected numbers, got values of type complex128"):
        family.assign(fitted[name], np.zeros((2, 3), dtype=complex))
    as_ints = family.assign(fitted[name], np.ones((2, 3), dtype=int))
    assert as_ints.labels.tolist() == family.assign(fitted[name], np.ones((2, 3))).labels.tolist()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_batches_do_not_change_results(
    name: str, blobs: dict, fitted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    family, est, X = FAMILIES[name], fitted[name], blobs["X_new"]
    whole = family.assign(est, X)
    monkeypatch.setattr(_base, "BATCH_ROWS", 97)
    batched = family.assign(est, X)
    for a, b in zip(whole, batched, strict=True):
        np.testing.assert_array_equal(a, b)


def _assert_same_assignment(family: Any, a: Any, b: Any, X: np.ndarray) -> None:
    """Labels, confidence and novelty of ``a`` and ``b`` on ``X`` are identical."""
    for left, right in zip(family.assign(a, X), family.assign(b, X), strict=True):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_same_seed_same_segmentation(name: str, blobs: dict, fitted: dict) -> None:
    family = FAMILIES[name]
    again = family.fit(blobs["X"], PARAMS[name], SEED)
    np.testing.assert_array_equal(
        family.training_labels(again), family.training_labels(fitted[name])
    )
    _assert_same_assignment(family, again, fitted[name], blobs["X_new"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fitted_estimator_pickles(name: str, blobs: dict, fitted: dict) -> None:
    family = FAMILIES[name]
    restored = pickle.loads(pickle.dumps(fitted[name]))
    _assert_same_assignment(family, restored, fitted[name], blobs["X_new"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_suggest_names_params_by_family_and_fits(name: str, blobs: dict) -> None:
    family = FAMILIES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(trial, name, family.default_space)
    searched = {
        k
        for k, dim in family.default_space.items()
        if isinstance(dim, IntRange | FloatRange | Choice)
    }
    assert set(trial.params) == {f"{name}.{k}" for k in searched}
    assert set(params) == set(family.default_space)
    for key, value in params.items():
        if key in searched:
            assert trial.params[f"{name}.{key}"] == value
        else:
            assert value == family.default_space[key]
    labels = family.training_labels(family.fit(blobs["X"][:500], params, SEED))
    assert labels.shape == (500,)


def test_suggest_types() -> None:
    trial = optuna.create_study().ask()
    space = {"n": IntRange(2, 5), "r": FloatRange(1e-3, 1.0, log=True), "c": Choice(("a", "b"))}
    params = suggest(trial, "fam", space | {"fixed": "x"})
    assert isinstance(params["n"], int) and 2 <= params["n"] <= 5
    assert isinstance(params["r"], float) and params["c"] in ("a", "b")
    assert params["fixed"] == "x" and "fam.fixed" not in trial.params


def test_row_batches_cover_every_row_once() -> None:
    slices = list(row_batches(10, 4))
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 8), (8, 10)]
    assert list(row_batches(0, 4)) == []


# k-means -------------------------------------------------------------------------------------


def test_kmeans_switches_to_minibatch_on_large_inputs(
    blobs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = FAMILIES["kmeans"]
    assert type(family.fit(blobs["X"], PARAMS["kmeans"], SEED)) is KMeans
    monkeypatch.setattr(seg_kmeans, "MINIBATCH_MIN_ROWS", 1_000)
    est = family.fit(blobs["X"], PARAMS["kmeans"], SEED)
    assert isinstance(est, MiniBatchKMeans)
    assert adjusted_rand_score(blobs["y"], family.training_labels(est)) >= 0.95


def test_kmeans_confidence_is_the_distance_margin(blobs: dict, fitted: dict) -> None:
    family, est = FAMILIES["kmeans"], fitted["kmeans"]
    centres = est.cluster_centers_
    midpoint = (centres[0] + centres[1]) / 2
    labels, confidence, novelty = family.assign(est, np.vstack([centres, midpoint]))
    np.testing.assert_array_equal(labels[:4], np.arange(4))
    np.testing.assert_allclose(confidence, [1, 1, 1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(novelty[:4], 0.0, atol=1e-6)
    one = family.fit(blobs["X"], {"n_clusters": 1}, SEED)
    assert np.all(family.assign(one, blobs["X_new"]).confidence == 1.0)


def _kmeans_assign_from_transform(est: Any, X: np.ndarray) -> tuple[np.ndarray, ...]:
    """What ``KMeansFamily.assign`` computed from ``estimator.transform`` before it went lean."""
    dist = est.transform(X)
    labels = dist.argmin(axis=1)
    at = np.arange(labels.size)
    d1 = dist[at, labels]
    dist[at, labels] = np.inf
    d2 = dist.min(axis=1)
    ratio = np.divide(d1, d2, out=np.ones_like(d1), where=d2 > 0)
    return labels, np.clip(1.0 - ratio, 0.0, 1.0), d1


@pytest.mark.parametrize(
    "estimator",
    [KMeans(2), KMeans(4), KMeans(7), MiniBatchKMeans(4, batch_size=256), KMeans(1)],
    ids=["k2", "k4", "k7", "minibatch", "single"],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_assign_matches_predict_and_the_transform_formulas(
    blobs: dict, estimator: Any, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    est = clone(estimator).set_params(random_state=SEED, n_init=3).fit(blobs["X"].astype(dtype))
    X = np.vstack([blobs["X_new"], far_points(50)]).astype(dtype)
    monkeypatch.setattr(_base, "BATCH_ROWS", 333)
    labels, confidence, novelty = FAMILIES["kmeans"].assign(est, X)
    np.testing.assert_array_equal(labels, est.predict(X))
    expected_labels, expected_confidence, expected_novelty = _kmeans_assign_from_transform(est, X)
    np.testing.assert_array_equal(labels, expected_labels)
    if dtype is np.float32:  # computed as before, by sklearn in float32
        np.testing.assert_array_equal(confidence, expected_confidence)
        np.testing.assert_array_equal(novelty, expected_novelty)
    else:
        np.testing.assert_allclose(confidence, expected_confidence, rtol=1e-9)
        np.testing.assert_allclose(novelty, expected_novelty, rtol=1e-9)
    assert est.n_clusters > 1 or np.all(confidence == 1.0)


# GMM -----------------------------------------------------------------------------------------


def test_gmm_matches_sklearn_predict_and_score(blobs: dict, fitted: dict) -> None:
    family, est = FAMILIES["gmm"], fitted["gmm"]
    labels, confidence, novelty = family.assign(est, blobs["X_new"])
    np.testing.assert_array_equal(labels, est.predict(blobs["X_new"]))
    np.testing.assert_allclose(confidence, est.predict_proba(blobs["X_new"]).max(axis=1))
    np.testing.assert_allclose(novelty, -est.score_samples(blobs["X_new"]))
    np.testing.assert_array_equal(family.training_labels(est), est.predict(blobs["X"]))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("n_features", [2, 4, 7, 8, 13])
def test_gmm_log_probabilities_are_sklearns_to_the_last_bit(
    covariance_type: str, n_features: int
) -> None:
    """The stacked product (full, tied) sums squares in numpy's order, below and from 8."""
    rng = np.random.default_rng(n_features)
    X = rng.normal(size=(1_500, n_features)) + rng.integers(0, 3, size=(1_500, 1)) * 3
    est = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    X_new = rng.normal(scale=4.0, size=(20_000, n_features))
    weighted = seg_gmm._weighted_log_prob(est)(X_new)
    np.testing.assert_array_equal(weighted, est._estimate_weighted_log_prob(X_new))
    labels, confidence, novelty = FAMILIES["gmm"].assign(est, X_new)
    np.testing.assert_array_equal(labels, est.predict(X_new))
    np.testing.assert_allclose(confidence, est.predict_proba(X_new).max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(novelty, -est.score_samples(X_new), rtol=1e-12)


# HDBSCAN: the fast assign against hdbscan's approximate_predict -------------------------------

HDBSCAN_CASES = [
    {"min_cluster_size": 30, "min_samples": 5},
    {"min_cluster_size": 15, "min_samples": 1},
    {"min_cluster_size": 25},
    {"min_cluster_size": 10, "min_samples": 8, "cluster_selection_method": "leaf"},
    {"min_cluster_size": 20, "min_samples": 3, "cluster_selection_epsilon": 0.8},
]


@pytest.fixture(scope="module")
def noisy() -> dict[str, np.ndarray]:
    """Blobs of unequal spread with uniform background noise; new rows include far ones."""
    rng = np.random.default_rng(3)
    X, _ = make_blobs(
        2_400, n_features=3, centers=5, cluster_std=[0.4, 0.8, 1.2, 1.6, 2.5], random_state=3
    )
    X = rng.permutation(np.vstack([X, rng.uniform(-15, 15, size=(200, 3))]))
    X_new = np.vstack([X[1_800:], X[:100], far_points(50, seed=1)])
    return {"X": X[:1_800], "X_new": X_new}


def _reference(est: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels, strength = reference_assign(est, X)
        return labels, strength, reference_novelty(est, X)


@pytest.mark.parametrize("params", HDBSCAN_CASES, ids=lambda p: "-".join(map(str, p.values())))
def test_hdbscan_fast_assign_matches_approximate_predict(params: dict, noisy: dict) -> None:
    family = FAMILIES["hdbscan"]
    est = family.fit(noisy["X"], params, SEED)
    labels, strength, scores = family.assign(est, noisy["X_new"])
    ref_labels, ref_strength, ref_scores = _reference(est, noisy["X_new"])
    assert (labels == ref_labels).mean() >= 0.995
    np.testing.assert_allclose(strength, ref_strength, atol=1e-9)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-9)


def test_hdbscan_plain_clusterer_with_prediction_data(noisy: dict) -> None:
    plain = hdbscan_lib.HDBSCAN(min_cluster_size=30, min_samples=5, prediction_data=True)
    plain.fit(noisy["X"])
    labels, strength, _ = FAMILIES["hdbscan"].assign(plain, noisy["X_new"])
    ref_labels, ref_strength, _ = _reference(plain, noisy["X_new"])
    assert (labels == ref_labels).mean() >= 0.995
    np.testing.assert_allclose(strength, ref_strength, atol=1e-9)


def test_hdbscan_without_prediction_data_says_how_to_fix(noisy: dict) -> None:
    plain = hdbscan_lib.HDBSCAN(min_cluster_size=30).fit(noisy["X"])
    family = FAMILIES["hdbscan"]
    refitted = family.fit(noisy["X"], {"min_cluster_size": 30}, SEED)
    refitted.set_params(prediction_data=False).fit(noisy["X"])  # no stale index survives
    for est in (plain, refitted):
        for call in (family.assign, reference_assign):
            with pytest.raises(ValueError, match="prediction_data=True"):
                call(est, noisy["X_new"])


def test_hdbscan_rejects_wrong_feature_count(fitted: dict) -> None:
    with pytest.raises(ValueError, match="fitted on 3 features"):
        FAMILIES["hdbscan"].assign(fitted["hdbscan"], np.zeros((5, 4)))


def test_hdbscan_without_clusters_assigns_noise() -> None:
    X = np.random.default_rng(0).uniform(size=(300, 2))
    family = FAMILIES["hdbscan"]
    est = family.fit(X, {"min_cluster_size": 200, "min_samples": 5}, SEED)
    assert np.all(family.training_labels(est) == -1)
    labels, strength, scores = family.assign(est, X[:20])
    assert np.all(labels == -1) and np.all(strength == 0.0)
    ref_labels, _, ref_scores = _reference(est, X[:20])
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(scores, ref_scores)


def test_hdbscan_tree_clusters_are_every_level_with_strengths_within_each() -> None:
    rng = np.random.default_rng(3)
    blobs = [rng.normal(c, 1.0, size=(300, 2)) for c in ((-10, 0), (10, 0))]
    X = np.vstack([*blobs, rng.uniform(-40, 40, size=(60, 2))])
    clusters = seg_hdbscan.tree_clusters(X, 50, 10)
    root, *below = clusters
    assert root.parent == -1 and sorted(root.rows.tolist()) == list(range(660))
    children = [c for c in below if c.parent == 0]
    assert len(children) == 2, "the root splits into the two blobs"
    for child in children:
        blob = np.bincount(child.rows // 300, minlength=3)
        assert sorted(blob[:2].tolist())[0] == 0 and blob.max() >= 290, "one blob each"
    # In the root the scattered rows are weak and the blobs strong; strengths lie in [0, 1].
    assert root.strength.max() == 1.0 and root.strength.min() >= 0.0
    strength = dict(zip(root.rows.tolist(), root.strength.tolist(), strict=True))
    assert np.median([strength[r] for r in range(600, 660)]) < 0.2 * np.median(
        [strength[r] for r in range(600)]
    )
    # A tree that never splits is its root alone, every row in it.
    one = seg_hdbscan.tree_clusters(np.vstack([blobs[0], X[600:]]), 100, 10)
    assert len(one) == 1 and one[0].rows.size == 360


# reduction -----------------------------------------------------------------------------------


def test_no_reducer() -> None:
    assert fit_reducer(np.zeros((10, 3)), {"reducer": "none"}, SEED) is None
    assert fit_reducer(np.zeros((10, 3)), {}, SEED) is None
    with pytest.raises(ValueError, match="'pca'"):
        fit_reducer(np.zeros((10, 3)), {"reducer": "pca"}, SEED)


@pytest.mark.slow
def test_umap_reducer_is_seeded(blobs: dict) -> None:
    params = {"reducer": "umap", "n_components": 2, "n_neighbors": 10, "min_dist": 0.1}
    X = blobs["X"][:300]
    first, second = fit_reducer(X, params, SEED), fit_reducer(X, params, SEED)
    assert first.embedding_.shape == (300, 2)
    np.testing.assert_array_equal(first.embedding_, second.embedding_)
