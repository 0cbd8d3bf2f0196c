"""quality_metrics: known values, noise handling, sampling and NaN where undefined."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from segml.metrics import Quality, quality_metrics


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=600, centers=4, n_features=3, cluster_std=0.5, random_state=3)
    return X, y


def test_matches_sklearn_without_noise(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    q = quality_metrics(X, y)
    assert q.silhouette == pytest.approx(silhouette_score(X, y))
    assert q.davies_bouldin == pytest.approx(davies_bouldin_score(X, y))
    assert q.calinski_harabasz == pytest.approx(calinski_harabasz_score(X, y))
    assert q.noise_share == 0.0
    assert q.n_segments == 4
    assert np.isnan(q.dbcv)


def test_noise_rows_score_zero_silhouette_and_are_counted(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = blobs
    labels = y.copy()
    labels[::10] = -1
    q = quality_metrics(X, labels)
    kept = labels >= 0
    # a customer left without a segment scores 0: noise cannot buy silhouette
    assert q.silhouette == pytest.approx(0.9 * silhouette_score(X[kept], labels[kept]))
    assert q.davies_bouldin == pytest.approx(davies_bouldin_score(X[kept], labels[kept]))
    assert q.noise_share == pytest.approx(0.1)
    assert q.n_segments == 4


def test_silhouette_is_sampled_and_seeded(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = blobs
    a = quality_metrics(X, y, sample_size=200, seed=1)
    assert a == quality_metrics(X, y, sample_size=200, seed=1)
    assert a.silhouette != quality_metrics(X, y).silhouette
    assert a.silhouette == pytest.approx(quality_metrics(X, y).silhouette, abs=0.05)
    assert a.davies_bouldin == quality_metrics(X, y).davies_bouldin  # not sampled


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros(600, dtype=int),  # one segment
        np.full(600, -1),  # noise only
        np.r_[np.zeros(599, dtype=int), -1],  # one segment plus noise
    ],
    ids=["one-segment", "all-noise", "one-segment-and-noise"],
)
def test_undefined_metrics_are_nan(
    blobs: tuple[np.ndarray, np.ndarray], labels: np.ndarray
) -> None:
    q = quality_metrics(blobs[0], labels, with_dbcv=True)
    assert np.isnan([q.silhouette, q.davies_bouldin, q.calinski_harabasz, q.dbcv]).all()
    assert q.n_segments == (0 if (labels < 0).all() else 1)


def test_as_many_segments_as_rows_is_nan() -> None:
    X = np.arange(8.0).reshape(4, 2)
    q = quality_metrics(X, np.arange(4))
    assert np.isnan(q.silhouette) and np.isnan(q.calinski_harabasz)
    assert q.n_segments == 4


def test_dbcv_on_sample_with_noise_and_tiny_segment() -> None:
    X, y = make_blobs(n_samples=3_000, centers=3, n_features=2, cluster_std=0.4, random_state=0)
    labels = y.copy()
    labels[:150] = -1
    labels[150] = 9  # a one-row segment: scored as noise inside the DBCV sample
    q = quality_metrics(X.astype(np.float32), labels, with_dbcv=True, seed=2)
    assert 0.3 < q.dbcv <= 1.0
    assert q.dbcv == pytest.approx(quality_metrics(X, labels, with_dbcv=True, seed=2).dbcv)
    assert q.n_segments == 4


def test_dbcv_prefers_the_true_segmentation() -> None:
    X, y = make_blobs(n_samples=900, centers=3, n_features=2, cluster_std=0.4, random_state=0)
    shuffled = np.random.default_rng(0).permutation(y)
    good = quality_metrics(X, y, with_dbcv=True).dbcv
    bad = quality_metrics(X, shuffled, with_dbcv=True).dbcv
    assert good > 0.5 > bad


def test_result_is_frozen(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    q = quality_metrics(*blobs)
    assert isinstance(q, Quality)
    with pytest.raises(AttributeError):
        q.silhouette = 0.0  # type: ignore[misc]
