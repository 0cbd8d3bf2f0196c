"""The search: the spaces an Optuna study searches over the segmentation families, what one trial
fits and measures, its objectives and constraints, and the pick.

Where the study is stored and how workers share it is :mod:`segml.studies`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import optuna
from sklearn.metrics import adjusted_rand_score

from segml import tracking as keys
from segml.errors import DataError
from segml.families import FAMILIES, REDUCTION_SPACE, Choice, FloatRange, IntRange, Space, suggest
from segml.families.hdbscan import knn_tree, neighbours
from segml.families.segmentation import Segmentation, fit_segmentation
from segml.metrics import bootstrap_stability, business_metrics, quality_metrics
from segml.privacy import published_share
from segml.spec import Choices, Constraints, Dimension, Range, Spec

STABILITY_KEYS = (
    keys.STABILITY_JACCARD_MIN,
    keys.STABILITY_JACCARD_MEAN,
    keys.STABILITY_ARI_MEAN,
    keys.STABILITY_N_DISSOLVED,
    keys.STABILITY_N_STABLE,
)
CONFIRM_FACTOR = 4
"""Above ``search.sample_size``, the pick is refitted on this many times as many customers."""
CONFIRM_ARI = 0.95
"""Agreement (ARI) with that refit below which the refit replaces the sample's fit."""
WORST = {
    keys.QUALITY_SILHOUETTE: -1.0,
    keys.STABILITY_JACCARD_MEAN: 0.0,
    keys.BUSINESS_VALUE_R2: 0.0,
}


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One evaluated segmentation: namespaced params, metrics and feasibility."""

    number: int
    family: str
    params: dict[str, Any]
    metrics: dict[str, float]
    constraints: dict[str, float]
    objectives: tuple[float, ...] = field(default=())

    @property
    def feasible(self) -> bool:
        """True when every actionability constraint holds."""
        return all(c <= 0 for c in self.constraints.values())


@dataclass(frozen=True, slots=True)
class Customers:
    """Every customer's features and value outcome (if any), when trials fit on a sample."""

    X: np.ndarray
    value: np.ndarray | None


@dataclass(frozen=True, slots=True)
class SearchData:
    """What every trial needs: the rows it fits on and their value outcome (if any), and, when
    those rows are a sample, ``everyone``, whom the business metrics count."""

    X: np.ndarray
    value: np.ndarray | None
    seed: int
    everyone: Customers | None = None

    @property
    def customers(self) -> Customers:
        """Every customer: ``everyone``, or the rows trials fit on when they are all."""
        return self.everyone or Customers(self.X, self.value)


def search_data(
    X: np.ndarray, value: np.ndarray | None, seed: int, sample_size: int
) -> SearchData:
    """The search's data: up to ``sample_size`` customers, all of them; beyond, a seeded sample
    of ``sample_size`` (in the customers' order), with every customer kept as ``everyone``."""
    if len(X) <= sample_size:
        return SearchData(X, value, seed)
    rows = np.sort(np.random.default_rng(seed).choice(len(X), size=sample_size, replace=False))
    sampled_value = None if value is None else value[rows]
    return SearchData(X[rows], sampled_value, seed, Customers(X, value))


def scaled(family: str, params: dict[str, Any], factor: float) -> dict[str, Any]:
    """``params`` for a fit on ``factor`` times as many customers: those counted in customers
    (``Family.count_params``) scaled, so that they mean the same."""
    counted = FAMILIES[family].count_params
    return {
        k: max(1, round(v * factor)) if k in counted and v is not None else v
        for k, v in params.items()
    }


def confirm(segmentation: Segmentation, data: SearchData, seed: int) -> tuple[Segmentation, float]:
    """The pick, fitted on the search's sample, checked against the same configuration refitted
    on a seeded sample ``CONFIRM_FACTOR`` times larger (all customers, if fewer).

    Returns the sample's fit when the two assign the larger sample's customers alike (ARI at
    least ``CONFIRM_ARI``), else the larger fit: more customers changed the answer. With it,
    their ARI.
    """
    everyone = data.customers.X
    size = min(len(everyone), CONFIRM_FACTOR * len(data.X))
    rng = np.random.default_rng(seed + 1)
    X = everyone[np.sort(rng.choice(len(everyone), size=size, replace=False))]
    family = segmentation.family
    params = scaled(family, segmentation.params, size / len(data.X))
    larger = fit_segmentation(X, family, params, segmentation.reduction, seed)
    agreement = float(adjusted_rand_score(larger.labels, segmentation.assign(X).labels))
    return (segmentation if agreement >= CONFIRM_ARI else larger), agreement


def everyone_labels(segmentation: Segmentation, data: SearchData) -> np.ndarray:
    """Every customer's segment (-1: none): the training labels, or, when the segmentation was
    fitted on a sample, the model's own assignment of every customer; after a reducer, the
    segment of the nearest sampled customer."""
    if data.everyone is None:
        return segmentation.labels
    if segmentation.reducer is None:
        return segmentation.assign(data.everyone.X).labels
    # UMAP's transform places a customer among its nearest fitted neighbours, and takes minutes
    # per million customers (benchmarks/results/scale.md): too slow for every trial.
    nearest = neighbours(knn_tree(data.X), data.everyone.X, 1)[1][:, 0]
    return segmentation.labels[nearest]


def objective_keys(has_value: bool) -> tuple[str, ...]:
    """The study's objectives, all maximised: quality, stability and (with an outcome) value."""
    base = (keys.QUALITY_SILHOUETTE, keys.STABILITY_JACCARD_MEAN)
    return (*base, keys.BUSINESS_VALUE_R2) if has_value else base


def to_space(dimensions: dict[str, Dimension], defaults: Space) -> Space:
    """The family's default space with the spec's dimensions laid over it."""
    space = dict(defaults)
    for name, dim in dimensions.items():
        space[name] = _to_dimension(dim, defaults[name])
    return space


def _to_dimension(dim: Dimension, default: Any) -> Any:
    if isinstance(dim, Range):
        # The family's first value to try stays when the spec's range still holds it.
        start = getattr(default, "default", None)
        start = start if start is not None and dim.low <= start <= dim.high else None
        if isinstance(default, IntRange) and dim.low.is_integer() and dim.high.is_integer():
            return IntRange(int(dim.low), int(dim.high), dim.log, start)
        return FloatRange(dim.low, dim.high, dim.log, start)
    if isinstance(dim, Choices):
        return Choice(tuple(dim.choices))
    return dim


def search_spaces(spec: Spec, families: Sequence[str] | None = None) -> dict[str, Space]:
    """Per family, the space the study searches: the family's defaults with the number of
    segments spanning the spec's constraints, and the spec's own dimensions laid over them."""
    overrides = cast(dict[str, dict[str, Dimension]], spec.search.families)
    chosen = families or list(overrides)
    return {
        name: to_space(overrides.get(name, {}), default_space(name, spec.constraints))
        for name in chosen
    }


def reduction_space(spec: Spec) -> Space:
    """The reduction step's space: the default with the spec's dimensions laid over it."""
    return to_space(spec.search.reduction, REDUCTION_SPACE)


def default_space(name: str, constraints: Constraints) -> Space:
    """A family's default space, its number of segments spanning the constraints."""
    space = dict(FAMILIES[name].default_space)
    k = FAMILIES[name].n_segments_param
    if k is not None:
        space[k] = IntRange(constraints.min_segments, constraints.max_segments)
    return space


def suggest_trial(
    trial: optuna.Trial, spaces: dict[str, Space], reduction: Space
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Ask the trial for a family, its parameters and the reduction step's parameters."""
    family = trial.suggest_categorical(keys.PARAM_FAMILY, list(spaces))
    params = suggest(trial, family, spaces[family])
    reducer = suggest(trial, keys.PREP_NAMESPACE, {"reducer": reduction["reducer"]})
    if reducer["reducer"] != "none":
        rest = {k: v for k, v in reduction.items() if k != "reducer"}
        reducer |= suggest(trial, keys.PREP_NAMESPACE, rest)
    return family, params, reducer


def check_segmentable(X: np.ndarray, constraints: Constraints, source: object) -> None:
    """Refuse data that no search could segment: too few customers, or all of them alike.

    Raises
    ------
    DataError
        Fewer customers than ``constraints.min_segments``, or identical feature rows.
    """
    if len(X) < constraints.min_segments:
        raise DataError(
            f"{source}: {len(X)} customer(s); segmenting needs at least "
            f"constraints.min_segments ({constraints.min_segments})"
        )
    if np.ptp(X, axis=0).max(initial=0.0) == 0:
        raise DataError(
            f"{source}: all {len(X)} customers have identical features; nothing to segment"
        )


def trial_seed(seed: int, number: int) -> int:
    """The seed trial ``number`` fits with; the final refit reuses it to reproduce the trial."""
    return seed + number


def evaluate(
    segmentation: Segmentation,
    data: SearchData,
    spec: Spec,
    n_boot: int,
    seed: int,
    *,
    with_dbcv: bool = False,
) -> dict[str, float]:
    """Quality, stability, business and cost metrics of a fitted segmentation.

    Every trial is measured on one yardstick: quality in the preprocessed feature space (not a
    reducer's embedding), with customers left without a segment counted, and stability by
    refitting the whole pipeline (the reducer too) on each of ``n_boot`` resamples, so that a
    reducer cannot manufacture either. DBCV is computed for density families and with
    ``with_dbcv``. On a sample, quality and stability are the sample's, and the shares (noise
    included) and value separation every customer's (:func:`everyone_labels`).
    """
    metrics = measure(segmentation, data, spec, seed, with_dbcv=with_dbcv)
    if metrics[keys.BUSINESS_N_SEGMENTS] < 1:
        return metrics | dict.fromkeys(STABILITY_KEYS, np.nan) | {keys.COST_STABILITY_SECONDS: 0.0}
    return metrics | stability_metrics(segmentation, data, n_boot, seed)


def measure(
    segmentation: Segmentation, data: SearchData, spec: Spec, seed: int, *, with_dbcv: bool
) -> dict[str, float]:
    """Quality and business metrics of a fitted segmentation, as :func:`evaluate` measures
    them, without stability."""
    labels = segmentation.labels
    quality = quality_metrics(
        data.X,
        labels,
        sample_size=spec.search.silhouette_sample,
        seed=seed,
        with_dbcv=with_dbcv or FAMILIES[segmentation.family].n_segments_param is None,
    )
    everyone = everyone_labels(segmentation, data)
    business = business_metrics(everyone, data.customers.value, spec.min_report_size)
    noise_share = quality.noise_share if data.everyone is None else business.noise_share
    return {
        keys.QUALITY_SILHOUETTE: quality.silhouette,
        keys.QUALITY_DAVIES_BOULDIN: quality.davies_bouldin,
        keys.QUALITY_CALINSKI_HARABASZ: quality.calinski_harabasz,
        keys.QUALITY_DBCV: quality.dbcv,
        keys.QUALITY_NOISE_SHARE: published_share(
            noise_share, everyone.size, spec.min_report_size
        ),
        keys.QUALITY_BIC: _bic(segmentation, data.X),
        keys.BUSINESS_N_SEGMENTS: float(business.n_segments),
        keys.BUSINESS_MIN_SHARE: business.min_share,
        keys.BUSINESS_MAX_SHARE: business.max_share,
        keys.BUSINESS_VALUE_R2: business.value_r2,
    }


def stability_metrics(
    segmentation: Segmentation, data: SearchData, n_boot: int, seed: int
) -> dict[str, float]:
    """Bootstrap stability of a segmentation of ``data.X`` (the whole pipeline refitted on each
    of ``n_boot`` resamples), and the seconds it took."""
    started = time.perf_counter()
    refit = _Refit(segmentation.family, segmentation.params, segmentation.reduction)
    stability = bootstrap_stability(
        data.X, segmentation.labels, refit, n_boot=n_boot, seed=seed, noise_is_group=True
    )
    return {
        keys.STABILITY_JACCARD_MIN: stability.jaccard_min,
        keys.STABILITY_JACCARD_MEAN: stability.jaccard_mean,
        keys.STABILITY_ARI_MEAN: stability.ari_mean,
        keys.STABILITY_N_DISSOLVED: float(stability.n_dissolved),
        keys.STABILITY_N_STABLE: float(stability.n_stable),
        keys.COST_STABILITY_SECONDS: time.perf_counter() - started,
    }


def _bic(segmentation: Segmentation, X: np.ndarray) -> float:
    """A mixture's BIC on the features it was fitted on; NaN for other models, and after a
    reducer (whose embeddings differ from trial to trial, so their BICs do not compare)."""
    if segmentation.reducer is not None or not hasattr(segmentation.estimator, "bic"):
        return np.nan
    return float(segmentation.estimator.bic(X))


@dataclass(frozen=True, slots=True)
class _Refit:
    """A picklable refit of the whole pipeline with fixed parameters, for the bootstrap."""

    family: str
    params: dict[str, Any]
    reduction: dict[str, Any]

    def __call__(self, X: np.ndarray, seed: int) -> np.ndarray:
        return fit_segmentation(X, self.family, self.params, self.reduction, seed).labels


def constraint_values(metrics: dict[str, float], constraints: Constraints) -> dict[str, float]:
    """Optuna constraint values (<= 0 means satisfied), named after the spec's bounds."""
    n = metrics[keys.BUSINESS_N_SEGMENTS]
    return {
        "min_segments": constraints.min_segments - n,
        "max_segments": n - constraints.max_segments,
        "min_share": constraints.min_share - _finite(metrics[keys.BUSINESS_MIN_SHARE], 0.0),
        # NaN: fewer than min_report_size customers without a segment, as good as none.
        "max_noise_share": _finite(metrics[keys.QUALITY_NOISE_SHARE], 0.0)
        - constraints.max_noise_share,
        "min_stability": constraints.min_stability
        - _finite(metrics[keys.STABILITY_JACCARD_MEAN], 0.0),
    }


def objective_values(metrics: dict[str, float], objectives: Sequence[str]) -> tuple[float, ...]:
    """The objective values of a trial; undefined metrics count as the worst value."""
    return tuple(_finite(metrics.get(key, np.nan), WORST[key]) for key in objectives)


def _finite(value: float, fallback: float) -> float:
    return float(value) if np.isfinite(value) else fallback


def pareto_front(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Trials that no other trial beats on every objective (all maximised)."""
    values = np.array([r.objectives for r in results], dtype=float)
    front = []
    for i, result in enumerate(results):
        dominated = np.any(
            np.all(values >= values[i], axis=1) & np.any(values > values[i], axis=1)
        )
        if not dominated:
            front.append(result)
    return front


def run_trial(
    trial: optuna.Trial,
    data: SearchData,
    spec: Spec,
    spaces: dict[str, Space],
    objectives: Sequence[str],
) -> tuple[TrialResult, Segmentation]:
    """Fit and evaluate the segmentation ``trial`` suggests (the study keeps the result with
    :func:`segml.studies.record_result`)."""
    family, params, reducer_params = suggest_trial(trial, spaces, reduction_space(spec))
    seed = trial_seed(data.seed, trial.number)
    started = time.perf_counter()
    segmentation = fit_segmentation(data.X, family, params, reducer_params, seed)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate(segmentation, data, spec, spec.search.bootstrap_search, seed)
    metrics[keys.COST_FIT_SECONDS] = fit_seconds
    metrics[keys.COST_TRIAL_SECONDS] = time.perf_counter() - started
    constraints = constraint_values(metrics, spec.constraints)
    namespaced = {keys.PARAM_FAMILY: family}
    namespaced |= {keys.param_key(family, k): v for k, v in params.items()}
    namespaced |= {keys.param_key(keys.PREP_NAMESPACE, k): v for k, v in reducer_params.items()}
    result = TrialResult(
        trial.number,
        family,
        namespaced,
        metrics,
        constraints,
        objective_values(metrics, objectives),
    )
    return result, segmentation


def split_params(result: TrialResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """Family parameters and reduction parameters of a trial, without their namespaces."""
    family_prefix = f"{result.family}."
    prep_prefix = f"{keys.PREP_NAMESPACE}."
    params = {
        k.removeprefix(family_prefix): v
        for k, v in result.params.items()
        if k.startswith(family_prefix)
    }
    reduction = {
        k.removeprefix(prep_prefix): v
        for k, v in result.params.items()
        if k.startswith(prep_prefix)
    }
    return params, reduction


ProgressFn = Callable[[TrialResult, int], None]
