"""The pick: the scan that gives the study every number of segments, the finalist of each pool
of trials by that pool's own criterion, and the rule that chooses among the finalists.

Each step is measured against reference labels in ``benchmarks/bench_selection.py``; the rules
tried and what each gave are in ``benchmarks/results/selection_designs.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segml import tracking as keys
from segml.families import FAMILIES, Choice, FloatRange, IntRange, Space
from segml.metrics import quality_metrics
from segml.tuning import TrialResult

SCAN_PER_FAMILY = 2
"""Numbers of segments of each scanned family that the scan hands to the study as trials."""
DENSITY_SIZES = (1, 3, 9)
"""Multiples of the smallest segment the constraints allow (``min_share`` of the customers)
that a density family's ``min_cluster_size`` takes in the study's first trials."""
CHALLENGER_MARGIN = 0.4
"""How much more DBCV than k-means at the same number of segments another finalist needs to
replace the k-means finalist. DBCV judges segments of any shape but flatters density models
(it shares their notion of a segment), so a lead is asked for, not a win."""
CRITERIA: dict[str, tuple[str, float]] = {
    "kmeans": (keys.QUALITY_SILHOUETTE, 1.0),
    "gmm": (keys.QUALITY_BIC, -1.0),
}
"""A family's own model-selection criterion and its sign (+1: higher is better): silhouette for
k-means, BIC for a Gaussian mixture. Density families (no number of segments to set) use DBCV;
any pipeline with a reducer uses silhouette on the features (BIC would be in its embedding)."""


@dataclass(frozen=True, slots=True)
class ScanPoint:
    """One number of segments of one family, fitted with the space's representative values."""

    family: str
    k: int
    criterion: str
    value: float
    params: dict[str, Any]
    min_share: float
    """The smallest segment's share of the customers."""


def representative(space: Space) -> dict[str, Any]:
    """One value per dimension: a range's default, else its midpoint (geometric for a log
    range), a choice's first option (the family's or the spec's preferred one), a fixed value
    as it is."""
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, IntRange | FloatRange) and dim.default is not None:
            params[name] = dim.default
        elif isinstance(dim, IntRange | FloatRange):
            mid = math.sqrt(dim.low * dim.high) if dim.log else (dim.low + dim.high) / 2
            params[name] = round(mid) if isinstance(dim, IntRange) else mid
        elif isinstance(dim, Choice):
            params[name] = dim.options[0]
        else:
            params[name] = dim
    return params


def scan_segment_counts(
    X: np.ndarray, spaces: dict[str, Space], *, sample_size: int, seed: int
) -> list[ScanPoint]:
    """Fit every number of segments of every family that takes one (no reducer) and score each
    by the family's own criterion, noting its smallest segment's share.

    These fits are cheap next to a trial (no bootstrap, no reducer), and a sampler given a few
    dozen trials over every family leaves most values of k untried.
    """
    points = []
    for name, space in spaces.items():
        k_param = FAMILIES[name].n_segments_param
        dim = space.get(k_param) if k_param is not None else None
        if k_param is None or name not in CRITERIA or not isinstance(dim, IntRange):
            continue
        criterion = CRITERIA[name][0]
        for k in range(dim.low, dim.high + 1):
            params = representative(space) | {k_param: k}
            model = FAMILIES[name].fit(X, params, seed)
            labels = np.asarray(FAMILIES[name].assign(model, X).labels)
            if criterion == keys.QUALITY_BIC:
                value = float(model.bic(X))
            else:
                value = quality_metrics(X, labels, sample_size=sample_size, seed=seed).silhouette
            share = np.bincount(labels, minlength=k).min() / len(labels)
            points.append(ScanPoint(name, k, criterion, value, params, float(share)))
    return points


def first_trials(
    points: Sequence[ScanPoint],
    spaces: dict[str, Space],
    reduction: Space,
    *,
    n_customers: int,
    min_share: float,
) -> list[dict[str, Any]]:
    """The study parameters of the trials run before the sampler's: each scanned family's
    ``SCAN_PER_FAMILY`` best numbers of segments (those with no segment under ``min_share``
    first, as the constraints would judge them), and each density family at
    ``DENSITY_SIZES`` multiples of the smallest segment the constraints allow (and at the middle
    one after the reducer, where the spec allows one). Without these, a sampler drawn to the
    families that score best early leaves the others barely tried."""
    plain = _reduction(reduction, "none")
    trials = []
    for family in dict.fromkeys(p.family for p in points):
        sign = CRITERIA[family][1]
        ranked = sorted(
            (p for p in points if p.family == family and np.isfinite(p.value)),
            key=lambda p: (p.min_share < min_share, -sign * p.value, p.k),
        )
        trials += [_study_params(family, p.params, plain) for p in ranked[:SCAN_PER_FAMILY]]
    smallest = max(min_share * n_customers, 1.0)
    for name, space in spaces.items():
        dim = space.get("min_cluster_size")
        if FAMILIES[name].n_segments_param is not None or not isinstance(dim, IntRange):
            continue
        sizes = sorted(
            {int(np.clip(round(m * smallest), dim.low, dim.high)) for m in DENSITY_SIZES}
        )
        base = representative(space)
        trials += [_study_params(name, base | {"min_cluster_size": n}, plain) for n in sizes]
        reduced_params = _reduction(reduction, "umap")
        if reduced_params != plain:
            middle = base | {"min_cluster_size": sizes[len(sizes) // 2]}
            trials.append(_study_params(name, middle, reduced_params))
    return trials


def _reduction(space: Space, reducer: str) -> dict[str, Any]:
    """The reduction step's parameters with ``reducer`` where the space allows it (its
    representative values), else the space's own."""
    allowed = space["reducer"]
    options = allowed.options if isinstance(allowed, Choice) else (allowed,)
    if reducer not in options:
        reducer = options[0]
    return {"reducer": reducer} | (
        {} if reducer == "none" else representative(space) | {"reducer": reducer}
    )


def _study_params(family: str, params: dict[str, Any], reduction: dict[str, Any]) -> dict:
    named = {keys.PARAM_FAMILY: family}
    named |= {keys.param_key(family, k): v for k, v in params.items()}
    return named | {keys.param_key(keys.PREP_NAMESPACE, k): v for k, v in reduction.items()}


def finalists(results: Sequence[TrialResult]) -> list[TrialResult]:
    """The best feasible trial of each pool by that pool's own criterion (:data:`CRITERIA`).

    A pool is a family with or without a reducer. Falls back to every trial when none is
    feasible; ties go to the earlier trial.
    """
    pool = [r for r in results if r.feasible] or list(results)
    best: dict[tuple[str, bool], TrialResult] = {}
    for result in sorted(pool, key=lambda r: r.number):
        key = (result.family, reduced(result))
        if key not in best or _criterion(result) > _criterion(best[key]):
            best[key] = result
    return sorted(best.values(), key=lambda r: r.number)


def reduced(result: TrialResult) -> bool:
    """True when the trial's pipeline has a reducer before the family."""
    reducer = result.params.get(keys.param_key(keys.PREP_NAMESPACE, "reducer"), "none")
    return bool(reducer != "none")


def density(result: TrialResult) -> bool:
    """True for a family that finds the number of segments itself (a density family)."""
    return FAMILIES[result.family].n_segments_param is None


def _criterion(result: TrialResult) -> float:
    """The pool's criterion, higher is better; an undefined value ranks last."""
    key, sign = keys.QUALITY_SILHOUETTE, 1.0
    if density(result):
        key = keys.QUALITY_DBCV
    elif not reduced(result):
        key, sign = CRITERIA.get(result.family, (key, sign))
    return _finite(sign * result.metrics.get(key, np.nan))


def choose(
    remeasured: Sequence[TrialResult], min_stability: float, kmeans_dbcv: Callable[[int], float]
) -> TrialResult:
    """The pick among the finalists, re-measured at ``search.bootstrap_final`` with DBCV.

    Finalists whose mean bootstrap Jaccard is below ``min_stability`` drop out (all stay if
    none passes). The k-means finalist (k by silhouette) is the pick unless another finalist
    draws better segments than k-means does at that finalist's own number of segments: its DBCV
    beats ``kmeans_dbcv(k)`` by ``CHALLENGER_MARGIN`` and every one of its segments is stable
    (Jaccard at least ``min_stability``, what the review's stability gate asks); the largest
    such lead wins. Without a k-means finalist, the largest lead wins, whatever its size (ties:
    earlier trial).
    """
    stable = [r for r in remeasured if _stable(r, min_stability)] or list(remeasured)
    stable = sorted(stable, key=lambda r: r.number)
    base = kmeans_finalist(stable)
    if base is None:
        return max(stable, key=lambda r: lead(r, kmeans_dbcv))
    challengers = [
        r
        for r in stable
        if r is not base
        and lead(r, kmeans_dbcv) >= CHALLENGER_MARGIN
        and _finite(r.metrics[keys.STABILITY_JACCARD_MIN]) >= min_stability
    ]
    return max(challengers, key=lambda r: lead(r, kmeans_dbcv)) if challengers else base


def contenders(
    finalists: Sequence[TrialResult], min_stability: float, kmeans_dbcv: Callable[[int], float]
) -> list[TrialResult]:
    """The finalists besides the k-means one whose stability :func:`choose` depends on, given
    the k-means finalist's: with a stable k-means finalist, only those leading it by
    ``CHALLENGER_MARGIN`` can be picked, and the others' stability changes nothing; otherwise
    all of them. Their ``search.bootstrap_final`` refits (a UMAP finalist's cost most of a
    large tune) are spent only on these."""
    base = kmeans_finalist(finalists)
    others = [r for r in finalists if r is not base]
    if base is None or not _stable(base, min_stability):
        return others
    return [r for r in others if lead(r, kmeans_dbcv) >= CHALLENGER_MARGIN]


def kmeans_finalist(finalists: Sequence[TrialResult]) -> TrialResult | None:
    """The finalist of plain k-means (no reducer), if any."""
    return next((r for r in finalists if r.family == "kmeans" and not reduced(r)), None)


def lead(result: TrialResult, kmeans_dbcv: Callable[[int], float]) -> float:
    """How much the finalist's DBCV beats that of k-means with as many segments."""
    k = int(result.metrics[keys.BUSINESS_N_SEGMENTS])
    reference = kmeans_dbcv(k) if k >= 2 else np.nan
    return _finite(result.metrics[keys.QUALITY_DBCV] - reference)


def _stable(result: TrialResult, min_stability: float) -> bool:
    return _finite(result.metrics[keys.STABILITY_JACCARD_MEAN]) >= min_stability


def kmeans_reference(
    X: np.ndarray, space: Space, *, sample_size: int, seed: int
) -> Callable[[int], float]:
    """DBCV of k-means with ``k`` segments on ``X`` (the space's representative values),
    cached per k: what a challenger of the k-means finalist is compared with."""

    @functools.cache
    def dbcv(k: int) -> float:
        params = representative(space) | {"n_clusters": k}
        labels = np.asarray(FAMILIES["kmeans"].fit(X, params, seed).labels_)
        return quality_metrics(X, labels, sample_size=sample_size, seed=seed, with_dbcv=True).dbcv

    return dbcv


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else -np.inf
