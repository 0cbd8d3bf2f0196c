"""Bootstrap stability of segments: clusterwise Jaccard and ARI (R ``fpc::clusterboot`` style).

Semantics follow Hennig (2007), "Cluster-wise assessment of cluster stability", and
``fpc::clusterboot(bootmethod="boot", noisemethod=TRUE)``:

* Each resample draws n row indices with replacement. By default (clusterboot's
  ``multipleboot=FALSE``) the clusterer is refitted on the *distinct* drawn rows only, because
  duplicated points distort density and linkage methods; ``multipleboot=True`` refits on all n
  draws and compares on the first copy of each row.
* Segment s scores, per resample, the best Jaccard similarity between its drawn rows and any
  segment of the refit, computed on the rows drawn. Noise is not a segment: original noise is
  never scored, and a segment that the refit turns into noise has dissolved (Jaccard 0 against
  noise), as clusterboot's ``noisemethod=TRUE`` does. ``noise_is_group=True`` lets the refit's
  noise compete as one more group instead.
* A segment with no rows in a resample scores 0 for that resample (clusterboot's
  ``clujaccard(..., zerobyzero=0)``), so it counts towards dissolution, not as missing.
* ``n_dissolved`` counts segments whose mean Jaccard is <= 0.5 and ``n_stable`` those whose mean
  is >= 0.75 (Hennig's dissolution and stability thresholds, applied to the means).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from threadpoolctl import threadpool_limits

Refit = Callable[[np.ndarray, int], np.ndarray]
"""``refit(X_resample, seed)`` refits the clusterer; returns the resample's labels (-1 = noise)."""

DISSOLVED = 0.5
STABLE = 0.75
PARALLEL_MIN_SECONDS = 3.0
"""Resamples go to worker processes (joblib's loky backend) only if the first one, timed
in-process, predicts that the workers would save more than this many seconds over running the
rest in-process: n workers save at most (n - 1) / n of that time, and starting a cold pool of
worker processes costs seconds (about this much on a quiet 2-core machine, more on a busy one).
A warm pool (joblib reuses it while it lives) costs nothing, so the rule is conservative then.
Processes, not threads: hdbscan holds the GIL. Measurements:
``benchmarks/results/stability.md``."""
REFIT_THREADS = 1
"""BLAS/OpenMP threads per refit, in-process and in every worker. The resamples are the
parallel grain (one per core), so threads inside a refit can only compete with the other
workers, and OpenMP threads that spin-wait at barriers collapse when a busy machine deschedules
one of them. One thread also makes the in-process timing of the first resample predict what a
worker will pay."""


@dataclass(frozen=True, slots=True)
class Stability:
    """Bootstrap stability of a segmentation (means over ``n_boot`` resamples)."""

    jaccard_per_segment: dict[int, float]
    jaccard_min: float
    jaccard_mean: float
    n_dissolved: int
    n_stable: int
    ari_mean: float
    n_boot: int


def jaccard_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jaccard similarity between every group of labelling ``a`` and every group of ``b``.

    Parameters
    ----------
    a, b : ndarray of shape (n_samples,)
        Two integer labellings of the same rows. Every label, -1 included, is a group here.

    Returns
    -------
    jaccard : ndarray of shape (n_groups_a, n_groups_b)
        ``|A_i & B_j| / |A_i | B_j|``, from one contingency matrix.
    groups_a, groups_b : ndarray
        The sorted group labels of the rows and columns.
    """
    inter, groups_a, groups_b = _contingency(a, b)
    return _jaccard(inter), groups_a, groups_b


def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``a``'s group i in ``b``'s group j, with the sorted group labels."""
    groups_a, ia = np.unique(a, return_inverse=True)
    groups_b, ib = np.unique(b, return_inverse=True)
    inter = np.zeros((groups_a.size, groups_b.size), dtype=np.int64)
    np.add.at(inter, (ia, ib), 1)
    return inter, groups_a, groups_b


def _jaccard(inter: np.ndarray) -> np.ndarray:
    union = inter.sum(axis=1, keepdims=True) + inter.sum(axis=0, keepdims=True) - inter
    return inter / union  # every group has a row, so union >= 1


def _adjusted_rand(inter: np.ndarray) -> float:
    """``sklearn.metrics.adjusted_rand_score`` from a contingency table, in the same arithmetic.

    The resample's contingency table is already built for the Jaccard matrix, and sklearn's
    function would build it again (a sixth of a cheap k-means resample's time). sklearn counts
    pairs in integers and divides once, as here, so the two agree exactly (a test checks it).
    """
    n = int(inter.sum())
    sum_squares = int((inter**2).sum())
    fp = int((inter @ inter.sum(axis=0)).sum()) - sum_squares
    fn = int((inter.T @ inter.sum(axis=1)).sum()) - sum_squares
    tp = sum_squares - n
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:  # sklearn's special case: full agreement
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def bootstrap_stability(
    X: np.ndarray,
    labels: np.ndarray,
    refit: Refit,
    *,
    n_boot: int = 20,
    seed: int = 0,
    n_jobs: int | None = -1,
    multipleboot: bool = False,
    noise_is_group: bool = False,
) -> Stability:
    """Clusterwise bootstrap Jaccard stability and mean ARI of a segmentation.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The rows the segmentation was fitted on.
    labels : ndarray of shape (n_samples,)
        The segmentation under test; -1 marks noise.
    refit : callable
        ``refit(X_resample, seed) -> labels`` refits the clusterer on a resample. It runs in
        worker processes, so it must be picklable (a module-level function or a
        ``functools.partial``); a deterministic ``refit`` makes the result deterministic.
    n_boot : int
        Number of bootstrap resamples.
    seed : int
        Seeds the resamples and the seeds handed to ``refit``.
    n_jobs : int or None
        joblib worker count (-1: all cores). Cheap refits run in-process regardless (see
        ``PARALLEL_MIN_SECONDS``); choose another backend with ``joblib.parallel_config``.
        Every refit runs with ``REFIT_THREADS`` BLAS/OpenMP threads.
    multipleboot : bool
        Refit on all n draws, duplicates included, instead of the distinct drawn rows.
    noise_is_group : bool
        Let the refit's noise match a segment as if it were one more segment.

    Returns
    -------
    Stability
        Per-segment mean Jaccard, its min and mean over segments, dissolved/stable counts and
        the mean ARI between original and refit labels on the drawn rows (noise as a label).
    """
    X = np.asarray(X)
    labels = np.asarray(labels)
    segments = np.unique(labels[labels >= 0])
    children = np.random.SeedSequence(seed).spawn(n_boot)
    job = delayed(_one_resample_capped)
    args = (X, labels, segments, refit, multipleboot, noise_is_group)
    results: list[tuple[np.ndarray, float]] = []
    # The caller's cap covers the in-process refits (and a thread backend's, since the limits
    # are process-wide); worker processes set their own, per resample, in _one_resample_capped.
    # Not joblib's inner_max_num_threads: it needs the loky backend named, which would
    # override a backend the caller chose with parallel_config, and it reaches a worker only
    # through the environment its pool started with.
    with threadpool_limits(limits=REFIT_THREADS):
        if n_boot:
            start = time.perf_counter()
            results.append(_one_resample(*args, children[0]))
            remaining = (time.perf_counter() - start) * (n_boot - 1)
            workers = min(effective_n_jobs(n_jobs), n_boot - 1)
            saving = remaining * (1 - 1 / workers) if workers > 1 else 0.0
            if workers > 1 and saving > PARALLEL_MIN_SECONDS:
                parallel = Parallel(n_jobs=workers, prefer="processes")
                results.extend(parallel(job(*args, child) for child in children[1:]))
            else:
                results.extend(_one_resample(*args, child) for child in children[1:])
    return _summarise(segments, results, n_boot)


def _one_resample(
    X: np.ndarray,
    labels: np.ndarray,
    segments: np.ndarray,
    refit: Refit,
    multipleboot: bool,
    noise_is_group: bool,
    seed_seq: np.random.SeedSequence,
) -> tuple[np.ndarray, float]:
    """Best Jaccard per original segment, and the ARI, for one bootstrap resample."""
    rng = np.random.default_rng(seed_seq)
    n = labels.shape[0]
    draws = rng.integers(0, n, size=n)
    refit_seed = int(seed_seq.generate_state(1)[0] & 0x7FFFFFFF)
    rows, first = np.unique(draws, return_index=True)
    if multipleboot:
        boot = np.asarray(refit(X[draws], refit_seed))[first]
    else:
        boot = np.asarray(refit(X[rows], refit_seed))
    orig = labels[rows]
    inter, groups_a, groups_b = _contingency(orig, boot)
    jac = _jaccard(inter)
    if not noise_is_group:
        jac = jac[:, groups_b >= 0]
    best = np.zeros(segments.size)
    if jac.shape[1]:
        present = np.searchsorted(segments, groups_a[groups_a >= 0])
        best[present] = jac[groups_a >= 0].max(axis=1)
    return best, _adjusted_rand(inter)


def _one_resample_capped(*args: Any) -> tuple[np.ndarray, float]:
    """``_one_resample(*args)`` under ``REFIT_THREADS``, for a worker process.

    The limit is set per resample and restored after it: the worker stays in joblib's
    reusable pool, where other callers' tasks expect their own thread settings.
    """
    with threadpool_limits(limits=REFIT_THREADS):
        return _one_resample(*args)


def _summarise(
    segments: np.ndarray, results: list[tuple[np.ndarray, float]], n_boot: int
) -> Stability:
    if results and segments.size:
        per_segment = np.mean([best for best, _ in results], axis=0)
    else:
        per_segment = np.full(segments.size, np.nan)
    ari = np.mean([a for _, a in results]) if results else np.nan
    has = segments.size > 0 and bool(results)
    return Stability(
        jaccard_per_segment=dict(zip(segments.tolist(), per_segment.tolist(), strict=True)),
        jaccard_min=float(per_segment.min()) if has else np.nan,
        jaccard_mean=float(per_segment.mean()) if has else np.nan,
        n_dissolved=int((per_segment <= DISSOLVED).sum()),
        n_stable=int((per_segment >= STABLE).sum()),
        ari_mean=float(ari),
        n_boot=n_boot,
    )
