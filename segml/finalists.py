"""The pick's finalists: each pool's best trial refitted and measured with DBCV, its stability
re-measured where it can change the pick, and the record of what the pick weighed
(``study/finalists.json``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from segml import selection, studies, tuning
from segml import tracking as keys
from segml.families.segmentation import Segmentation, fit_segmentation
from segml.spec import Spec

TRIAL_STABILITY = (*tuning.STABILITY_KEYS, keys.COST_STABILITY_SECONDS)
Finalist = tuple[tuning.TrialResult, Segmentation, int]
"""A finalist re-measured, its refitted segmentation and the resamples its stability took."""


def remeasure(
    finalists: Sequence[tuning.TrialResult],
    data: tuning.SearchData,
    spec: Spec,
    reference: Callable[[int], float],
) -> dict[int, Finalist]:
    """The finalists refitted with their trials' seeds and measured with DBCV, so that a
    missing DBCV does not decide; the k-means finalist and the others whose stability can
    change the pick (:func:`selection.contenders`) at ``search.bootstrap_final`` resamples, so
    that bootstrap noise at the search's size does not either. The others keep their trial's
    stability (``bootstraps`` in ``study/finalists.json`` says which): by trial number."""
    remeasured = {}
    for result in finalists:
        params, reduction = tuning.split_params(result)
        seed = tuning.trial_seed(data.seed, result.number)
        segmentation = fit_segmentation(data.X, result.family, params, reduction, seed)
        measured = tuning.measure(segmentation, data, spec, seed, with_dbcv=True)
        stability = {key: result.metrics.get(key, np.nan) for key in TRIAL_STABILITY}
        trial = dataclasses.replace(result, metrics=stability | measured)
        remeasured[result.number] = (trial, segmentation, spec.search.bootstrap_search)
    base = selection.kmeans_finalist([r for r, *_ in remeasured.values()])
    stabilise(remeasured, base, data, spec)
    for result in selection.contenders(
        [r for r, *_ in remeasured.values()], spec.constraints.min_stability, reference
    ):
        stabilise(remeasured, result, data, spec)
    return remeasured


def stabilise(
    remeasured: dict[int, Finalist],
    result: tuning.TrialResult | None,
    data: tuning.SearchData,
    spec: Spec,
) -> None:
    """Re-measure the stability of the finalist ``result`` (None: none) in ``remeasured`` at
    ``search.bootstrap_final`` resamples."""
    if result is None or result.metrics[keys.BUSINESS_N_SEGMENTS] < 1:
        return
    segmentation = remeasured[result.number][1]
    seed = tuning.trial_seed(data.seed, result.number)
    n_boot = spec.search.bootstrap_final
    stability = tuning.stability_metrics(segmentation, data, n_boot, seed)
    metrics = result.metrics | stability
    remeasured[result.number] = (
        dataclasses.replace(result, metrics=metrics),
        segmentation,
        n_boot,
    )


def record(
    remeasured: dict[int, Finalist],
    picked: tuning.TrialResult,
    reference: Callable[[int], float],
) -> dict[str, Any]:
    """What the pick weighed: each finalist's parameters, re-measured metrics and the DBCV of
    k-means with as many segments."""
    shown = (
        keys.BUSINESS_N_SEGMENTS,
        keys.QUALITY_SILHOUETTE,
        keys.QUALITY_DBCV,
        keys.QUALITY_BIC,
        keys.QUALITY_NOISE_SHARE,
        keys.STABILITY_JACCARD_MEAN,
        keys.STABILITY_JACCARD_MIN,
        keys.BUSINESS_VALUE_R2,
    )
    finalists = []
    for result, _, n_boot in remeasured.values():
        k = int(result.metrics[keys.BUSINESS_N_SEGMENTS])
        metrics = {key: studies.json_float(result.metrics[key]) for key in shown}
        kmeans = studies.json_float(reference(k)) if k >= 2 else None
        finalists.append(
            {"trial": result.number, **result.params, **metrics}
            | {"kmeans_dbcv": kmeans, "bootstraps": n_boot}
        )
    return {
        "chosen": picked.number,
        "challenger_margin": selection.CHALLENGER_MARGIN,
        "finalists": finalists,
    }
