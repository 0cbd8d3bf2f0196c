"""The pick: the scan of segment counts, each pool's finalist, and the rule among finalists."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs

from segml import tracking as keys
from segml.families import REDUCTION_SPACE, Choice, FloatRange, IntRange
from segml.selection import (
    CHALLENGER_MARGIN,
    choose,
    contenders,
    finalists,
    first_trials,
    representative,
    scan_segment_counts,
)
from segml.spec import Constraints
from segml.tuning import TrialResult, default_space


def _trial(number: int, family: str, feasible: bool = True, reducer: str = "none", **metrics):
    named = {
        keys.QUALITY_SILHOUETTE: metrics.get("silhouette", np.nan),
        keys.QUALITY_DBCV: metrics.get("dbcv", np.nan),
        keys.QUALITY_BIC: metrics.get("bic", np.nan),
        keys.STABILITY_JACCARD_MEAN: metrics.get("jaccard", 0.9),
        keys.STABILITY_JACCARD_MIN: metrics.get("jaccard_min", 0.8),
        keys.BUSINESS_N_SEGMENTS: metrics.get("k", 3),
    }
    params = {keys.PARAM_FAMILY: family, keys.param_key(keys.PREP_NAMESPACE, "reducer"): reducer}
    return TrialResult(number, family, params, named, {"c": -1.0 if feasible else 1.0})


def test_representative_values_are_midpoints_and_first_choices() -> None:
    space = {
        "k": IntRange(2, 12),
        "reg": FloatRange(1e-6, 1e-2, log=True),
        "kind": Choice(("full", "diag")),
        "n_init": 3,
    }
    got = representative(space)
    assert got["k"] == 7 and got["kind"] == "full" and got["n_init"] == 3
    assert np.isclose(got["reg"], 1e-4)


def test_scan_fits_every_k_and_the_first_trials_cover_each_family() -> None:
    X, _ = make_blobs(600, centers=[[-8, -8], [8, -8], [-8, 8], [8, 8]], random_state=0)
    limits = Constraints(min_segments=2, max_segments=8)
    spaces = {name: default_space(name, limits) for name in ("kmeans", "gmm", "hdbscan")}
    scan = scan_segment_counts(X, spaces, sample_size=1_000, seed=0)
    assert [(p.family, p.k) for p in scan] == [
        (f, k) for f in ("kmeans", "gmm") for k in range(2, 9)
    ], "every k of each family with a number of segments; none of HDBSCAN"
    first = first_trials(scan, spaces, REDUCTION_SPACE, n_customers=600, min_share=0.05)
    described = [
        (
            t[keys.PARAM_FAMILY],
            t.get(
                "kmeans.n_clusters", t.get("gmm.n_components", t.get("hdbscan.min_cluster_size"))
            ),
            t["prep.reducer"],
        )
        for t in first
    ]
    assert described[:4:2] == [("kmeans", 4, "none"), ("gmm", 4, "none")], "best k first"
    # The smallest allowed segment is 5% of 600 = 30 customers: 30, 90 and 270 (after UMAP: 90).
    assert described[4:] == [
        ("hdbscan", 30, "none"),
        ("hdbscan", 90, "none"),
        ("hdbscan", 270, "none"),
        ("hdbscan", 90, "umap"),
    ]
    assert first[2]["gmm.covariance_type"] == "full"
    assert first[-1]["hdbscan.cluster_selection_epsilon"] == 0.0
    assert first[-1]["prep.min_dist"] == 0.0 and first[-1]["prep.n_neighbors"] == 15


def test_finalists_are_each_pools_best_by_its_own_criterion() -> None:
    results = [
        _trial(0, "kmeans", silhouette=0.5),
        _trial(1, "kmeans", silhouette=0.6),
        _trial(2, "kmeans", feasible=False, silhouette=0.99),
        _trial(3, "gmm", bic=100.0, silhouette=0.7),
        _trial(4, "gmm", bic=80.0, silhouette=0.3),  # lower BIC wins, not silhouette
        _trial(5, "hdbscan", dbcv=0.2, silhouette=0.8),
        _trial(6, "hdbscan", dbcv=0.4, silhouette=0.1),
        _trial(7, "kmeans", reducer="umap", silhouette=0.4),  # its own pool
    ]
    assert [r.number for r in finalists(results)] == [1, 4, 6, 7]


def test_kmeans_stays_unless_a_finalist_beats_kmeans_at_its_own_k() -> None:
    kmeans_dbcv = {2: -0.5, 3: 0.1}.get
    kmeans = _trial(0, "kmeans", dbcv=0.2, k=3)
    gmm = _trial(1, "gmm", dbcv=0.1 + CHALLENGER_MARGIN - 0.01, k=3)
    assert choose([kmeans, gmm], 0.6, kmeans_dbcv) is kmeans, "short of the margin"
    density = _trial(2, "hdbscan", dbcv=-0.5 + CHALLENGER_MARGIN + 0.05, k=2)
    assert choose([kmeans, gmm, density], 0.6, kmeans_dbcv) is density, (
        "a lower DBCV than the k-means finalist's, but far above 2-means'"
    )
    one_shaky_segment = _trial(2, "hdbscan", dbcv=0.9, k=2, jaccard_min=0.45)
    assert choose([kmeans, one_shaky_segment], 0.6, kmeans_dbcv) is kmeans, (
        "a challenger whose segment would fail the review's stability gate stays out"
    )
    shaky = _trial(2, "hdbscan", dbcv=0.9, k=2, jaccard=0.5)
    assert choose([kmeans, shaky], 0.6, kmeans_dbcv) is kmeans, "unstable: out"
    assert choose([shaky], 0.6, kmeans_dbcv) is shaky, "all unstable: the best of them"
    assert choose([gmm, density], 0.6, kmeans_dbcv) is density, "no k-means: the largest lead"


def test_only_finalists_that_could_be_picked_pay_for_their_stability() -> None:
    """Whatever stability the others have, :func:`choose` picks the same: the contenders are
    all the finalists whose re-measured stability can change the pick."""
    kmeans_dbcv = {2: -0.5, 3: 0.1}.get
    kmeans = _trial(0, "kmeans", dbcv=0.2, k=3)
    short = _trial(1, "gmm", dbcv=0.1 + CHALLENGER_MARGIN - 0.01, k=3)
    ahead = _trial(2, "hdbscan", dbcv=-0.5 + CHALLENGER_MARGIN + 0.05, k=2)
    umap = _trial(3, "kmeans", reducer="umap", dbcv=0.0, k=3)
    assert contenders([kmeans, short, ahead, umap], 0.6, kmeans_dbcv) == [ahead]
    for jaccard in (0.1, 0.9):
        others = [_trial(n, "gmm", dbcv=0.1, k=3, jaccard=jaccard) for n in (1, 3)]
        assert choose([kmeans, *others, ahead], 0.6, kmeans_dbcv) is ahead
    unstable = _trial(0, "kmeans", dbcv=0.2, k=3, jaccard=0.5)
    assert contenders([unstable, short, umap], 0.6, kmeans_dbcv) == [short, umap], (
        "an unstable k-means finalist: any stable finalist may be picked"
    )
    assert contenders([short, umap], 0.6, kmeans_dbcv) == [short, umap], "no k-means: all"


def test_the_scan_puts_first_the_best_k_whose_segments_meet_min_share() -> None:
    blobs, _ = make_blobs(600, centers=[[-8, -8], [8, -8], [-8, 8], [8, 8]], random_state=0)
    X = np.vstack([blobs, [[60, 60], [61, 60], [60, 61]]])  # three far-out customers
    limits = Constraints(min_segments=2, max_segments=6)
    spaces = {"kmeans": default_space("kmeans", limits)}
    scan = scan_segment_counts(X, spaces, sample_size=1_000, seed=0)
    five = next(p for p in scan if p.k == 5)
    assert five.min_share == 3 / 603, "k = 5 gives the far-out three a segment of their own"

    def best_k(min_share: float) -> int:
        first = first_trials(
            scan, spaces, {"reducer": "none"}, n_customers=603, min_share=min_share
        )
        return first[0]["kmeans.n_clusters"]

    assert best_k(0.0) == 5, "by silhouette alone"
    assert best_k(0.02) == 4, "the constraints would refuse a segment of 0.5%"
