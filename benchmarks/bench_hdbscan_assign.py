"""Rows/s and agreement of segml's vectorised HDBSCAN assign vs ``hdbscan.approximate_predict``.

Usage: ``python benchmarks/bench_hdbscan_assign.py [--train 50000] [--rows 200000]``.
Fits the segml ``hdbscan`` family on ``--train`` rows of 4-feature blobs (5% uniform background
noise), then assigns ``--rows`` new rows from the same distribution with both implementations:
segml's one pass gives labels, membership strengths and GLOSH scores; hdbscan needs
``approximate_predict`` and ``approximate_predict_scores`` for the same.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from hdbscan.prediction import approximate_predict, approximate_predict_scores
from sklearn.datasets import make_blobs

from segml.families import FAMILIES

T = TypeVar("T")


def sample(n: int, n_features: int, seed: int) -> np.ndarray:
    """Blobs of unequal spread plus 5% uniform background noise."""
    rng = np.random.default_rng(seed)
    n_noise = n // 20
    X, _ = make_blobs(
        n - n_noise,
        n_features=n_features,
        centers=8,
        cluster_std=rng.uniform(0.5, 2.0, size=8),
        center_box=(-20, 20),
        random_state=seed,
    )
    noise = rng.uniform(-25, 25, size=(n_noise, n_features))
    return rng.permutation(np.vstack([X, noise]))


def timed(fn: Callable[..., T], *args: Any, repeat: int = 1) -> tuple[T, float]:
    """The result of ``fn(*args)`` and the best wall time over ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--min-cluster-size", type=int, default=50)
    parser.add_argument("--min-samples", type=int, default=10)
    args = parser.parse_args()

    family = FAMILIES["hdbscan"]
    X_train = sample(args.train, args.features, seed=0)
    X_new = sample(args.rows, args.features, seed=1)
    params = {"min_cluster_size": args.min_cluster_size, "min_samples": args.min_samples}
    est, fit_s = timed(family.fit, X_train, params, 0)
    n_segments = int(est.labels_.max()) + 1
    print(
        f"fit: {args.train:,} x {args.features} in {fit_s:.1f} s -> {n_segments} segments, "
        f"{(est.labels_ < 0).mean():.1%} noise; cores: {os.cpu_count()}"
    )

    (labels, strength, scores), fast_s = timed(family.assign, est, X_new, repeat=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (ref_labels, ref_strength), ref_s = timed(approximate_predict, est, X_new)
    ref_scores, ref_nov_s = timed(approximate_predict_scores, est, X_new)
    print(f"segml assign (labels, strength, GLOSH): {args.rows / fast_s:12,.0f} rows/s")
    print(f"hdbscan approximate_predict:            {args.rows / ref_s:12,.0f} rows/s")
    print(f"hdbscan approximate_predict_scores:     {args.rows / ref_nov_s:12,.0f} rows/s")
    print(f"speedup vs approximate_predict alone:   {ref_s / fast_s:12.1f} x")
    print(f"speedup vs both reference calls:        {(ref_s + ref_nov_s) / fast_s:12.1f} x")
    print(f"labels identical: {(labels == ref_labels).mean():.4%}")
    print(f"strength max |diff|: {np.abs(strength - ref_strength).max():.3g}")
    print(f"GLOSH max |diff|: {np.abs(scores - ref_scores).max():.3g}")


if __name__ == "__main__":
    main()
