"""bootstrap_stability: clusterboot semantics on known cases, real refits, determinism."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import hdbscan
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_info, threadpool_limits

from segml.metrics import Stability, bootstrap_stability, jaccard_matrix
from segml.metrics import stability as stability_module

# Refits are module-level functions (picklable), as bootstrap_stability requires.


def kmeans_refit(X: np.ndarray, seed: int, k: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(X)


def hdbscan_refit(X: np.ndarray, seed: int) -> np.ndarray:
    return hdbscan.HDBSCAN(min_cluster_size=30).fit_predict(X)


def oracle_refit(X: np.ndarray, seed: int, truth: np.ndarray) -> np.ndarray:
    """Return the true labels of the resampled rows (column 0 of X holds the row number)."""
    return truth[X[:, 0].astype(int)]


def all_noise_refit(X: np.ndarray, seed: int) -> np.ndarray:
    return np.full(X.shape[0], -1)


def thread_recording_refit(X: np.ndarray, seed: int, log: Path) -> np.ndarray:
    """k-means refit that appends its process id and its BLAS/OpenMP thread counts to ``log``."""
    counts = " ".join(str(pool["num_threads"]) for pool in threadpool_info())
    with log.open("a") as out:
        out.write(f"{os.getpid()} {counts}\n")
    return kmeans_refit(X, seed, k=3)


def row_ids(n: int) -> np.ndarray:
    return np.arange(n, dtype=float)[:, None]


def test_jaccard_matrix_by_hand() -> None:
    a = np.array([0, 0, 0, 1, 1, -1])
    b = np.array([5, 5, 7, 7, 7, 7])
    jac, ga, gb = jaccard_matrix(a, b)
    np.testing.assert_array_equal(ga, [-1, 0, 1])
    np.testing.assert_array_equal(gb, [5, 7])
    # rows -1, 0, 1; columns 5, 7: e.g. J(0, 5) = 2 / 3, J(0, 7) = 1 / 6, J(1, 7) = 2 / 4
    np.testing.assert_allclose(jac, [[0, 1 / 4], [2 / 3, 1 / 6], [0, 2 / 4]])


def test_perfect_refit_scores_one_under_relabelling() -> None:
    truth = np.repeat([0, 1, 2], 100)
    relabelled = partial(oracle_refit, truth=np.array([7, 3, 5])[truth])
    s = bootstrap_stability(row_ids(300), truth, relabelled, n_boot=5, n_jobs=1)
    assert s.jaccard_per_segment == {0: 1.0, 1: 1.0, 2: 1.0}
    assert (s.jaccard_min, s.jaccard_mean, s.ari_mean) == (1.0, 1.0, 1.0)
    assert (s.n_stable, s.n_dissolved, s.n_boot) == (3, 0, 5)


def test_merged_segments_score_about_half() -> None:
    truth = np.repeat([0, 1, 2], 200)
    merged = partial(oracle_refit, truth=np.array([0, 0, 2])[truth])
    s = bootstrap_stability(row_ids(600), truth, merged, n_boot=10, n_jobs=1)
    assert s.jaccard_per_segment[2] == 1.0
    assert s.jaccard_per_segment[0] == pytest.approx(0.5, abs=0.05)
    assert s.n_stable == 1


def test_segment_turned_to_noise_is_dissolved() -> None:
    s = bootstrap_stability(row_ids(100), np.repeat([0, 1], 50), all_noise_refit, n_boot=4)
    assert s.jaccard_per_segment == {0: 0.0, 1: 0.0}
    assert s.n_dissolved == 2
    assert s.ari_mean == pytest.approx(0.0)


def test_noise_may_count_as_a_group_when_asked() -> None:
    truth = np.r_[np.zeros(90, dtype=int), np.ones(10, dtype=int)]
    refit = partial(oracle_refit, truth=np.where(truth == 1, -1, 0))  # segment 1 becomes noise
    default = bootstrap_stability(row_ids(100), truth, refit, n_boot=4, n_jobs=1)
    grouped = bootstrap_stability(
        row_ids(100), truth, refit, n_boot=4, n_jobs=1, noise_is_group=True
    )
    assert default.jaccard_per_segment[1] == 0.0
    assert grouped.jaccard_per_segment[1] == 1.0


def test_original_noise_is_never_a_segment() -> None:
    truth = np.r_[np.full(20, -1), np.repeat([0, 1], 40)]
    s = bootstrap_stability(row_ids(100), truth, partial(oracle_refit, truth=truth), n_boot=3)
    assert set(s.jaccard_per_segment) == {0, 1}
    assert s.ari_mean == 1.0


def test_segment_missing_from_a_resample_scores_zero_there() -> None:
    truth = np.r_[np.zeros(49, dtype=int), 1]  # segment 1 is one row, drawn ~63% of the time
    n_boot = 20
    s = bootstrap_stability(row_ids(50), truth, partial(oracle_refit, truth=truth), n_boot=n_boot)
    drawn = s.jaccard_per_segment[1] * n_boot
    assert 0 < s.jaccard_per_segment[1] < 1
    assert drawn == pytest.approx(round(drawn))  # each resample scored exactly 1 or 0


def test_no_segments_at_all() -> None:
    s = bootstrap_stability(row_ids(30), np.full(30, -1), all_noise_refit, n_boot=2)
    assert s.jaccard_per_segment == {}
    assert np.isnan(s.jaccard_min) and np.isnan(s.jaccard_mean)
    assert (s.n_dissolved, s.n_stable) == (0, 0)


@pytest.fixture(scope="module")
def clean_blobs() -> np.ndarray:
    X, _ = make_blobs(n_samples=2_000, centers=5, n_features=4, cluster_std=1.0, random_state=0)
    return X


def test_clean_segments_are_stable_and_structure_free_ones_are_not(
    clean_blobs: np.ndarray,
) -> None:
    refit5 = partial(kmeans_refit, k=5)
    clean = bootstrap_stability(clean_blobs, refit5(clean_blobs, 0), refit5, n_boot=20, n_jobs=1)
    noise_X = np.random.default_rng(0).normal(size=(2_000, 4))
    refit6 = partial(kmeans_refit, k=6)
    unstable = bootstrap_stability(noise_X, refit6(noise_X, 0), refit6, n_boot=20, n_jobs=1)
    assert clean.jaccard_mean >= 0.9 and clean.n_stable == 5
    assert unstable.jaccard_min < 0.75
    assert clean.jaccard_mean >= unstable.jaccard_mean + 0.2
    assert clean.ari_mean >= unstable.ari_mean + 0.2


def test_hdbscan_refit_with_noise() -> None:
    X, _ = make_blobs(n_samples=1_200, centers=4, n_features=2, cluster_std=0.5, random_state=4)
    background = np.random.default_rng(4).uniform(X.min(0) - 2, X.max(0) + 2, size=(150, 2))
    X = np.vstack([X, background])
    labels = hdbscan_refit(X, 0)
    assert (labels == -1).any()
    s = bootstrap_stability(X, labels, hdbscan_refit, n_boot=10, seed=3, n_jobs=1)
    assert -1 not in s.jaccard_per_segment
    assert set(s.jaccard_per_segment) == set(np.unique(labels[labels >= 0]).tolist())
    assert s.jaccard_mean >= 0.8
    assert s.ari_mean >= 0.8


def test_deterministic_and_independent_of_backend(
    clean_blobs: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    refit = partial(kmeans_refit, k=7)  # too many segments: the results vary per resample
    labels = refit(clean_blobs, 0)
    kwargs = {"n_boot": 6, "seed": 11, "multipleboot": True}
    serial = bootstrap_stability(clean_blobs, labels, refit, n_jobs=1, **kwargs)
    assert serial == bootstrap_stability(clean_blobs, labels, refit, n_jobs=1, **kwargs)
    monkeypatch.setattr(stability_module, "PARALLEL_MIN_SECONDS", -1.0)
    parallel = bootstrap_stability(clean_blobs, labels, refit, n_jobs=2, **kwargs)
    assert parallel == serial
    other_seed = bootstrap_stability(
        clean_blobs, labels, refit, n_jobs=1, **{**kwargs, "seed": 12}
    )
    assert other_seed != serial
    assert isinstance(serial, Stability)


def test_refits_run_single_threaded_in_process_and_in_workers(
    clean_blobs: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the cap, workers would start with 2 threads (loky passes these variables on
    # instead of its own cpu_count // n_jobs) and the in-process refit would run with 2.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "2")
    monkeypatch.setattr(stability_module, "PARALLEL_MIN_SECONDS", -1.0)
    log = tmp_path / "threads.log"
    refit = partial(thread_recording_refit, log=log)
    with threadpool_limits(limits=2):
        bootstrap_stability(clean_blobs, refit(clean_blobs, 0), refit, n_boot=4, n_jobs=2)
        assert threadpool_info()[0]["num_threads"] == 2, "the caller's limits are restored"
    records = [line.split() for line in log.read_text().splitlines()[1:]]  # [0]: the fit above
    pids = {pid for pid, *_ in records}
    assert len(records) == 4 and str(os.getpid()) in pids and len(pids) >= 2
    assert all(counts and set(counts) == {"1"} for _, *counts in records), records


@pytest.mark.parametrize("seed", range(6))
def test_adjusted_rand_from_the_contingency_equals_sklearn_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3_000))
    a = rng.integers(-1, int(rng.integers(1, 8)), size=n)
    cases = [
        (a, rng.integers(-1, int(rng.integers(1, 8)), size=n)),  # unrelated
        (a, np.where(rng.random(n) < 0.1, 5, a)),  # mostly the same
        (a, 7 - a),  # relabelled
        (a, np.zeros(n, dtype=int)),  # one group
        (a, np.arange(n)),  # every row its own group
    ]
    for x, y in cases:
        inter, _, _ = stability_module._contingency(x, y)
        assert stability_module._adjusted_rand(inter) == adjusted_rand_score(x, y)
