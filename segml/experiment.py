"""``tune``: one tracked tuning run, from the spec's data to a logged segment model."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from segml import report
from segml import tracking as keys
from segml.alignment import Alignment
from segml.errors import SpecError
from segml.features import (
    FeatureSet,
    build_features,
    build_preprocessor,
    outcome_frame,
    value_outcome,
)
from segml.metrics import feature_profile, segment_table
from segml.model import Segmenter, build_segmenter, log_segment_model
from segml.registry import align_to_champion, register_run
from segml.spec import Spec, spec_digest
from segml.tuning import (
    PARENT_RUN_ATTR,
    SearchData,
    TrialResult,
    completed_results,
    create_study,
    evaluate,
    fit_segmentation,
    objective_keys,
    pareto_front,
    pick,
    run_trial,
    search_spaces,
    split_params,
)
from segml.tuning import ProgressFn as ProgressFn


@dataclass(frozen=True, slots=True)
class TuneResult:
    """Where a tuning run left its results, and what it chose."""

    study_name: str
    experiment_id: str
    parent_run_id: str
    chosen: TrialResult
    final_metrics: dict[str, float]
    n_trials: int
    n_feasible: int
    segmenter: Segmenter
    model_uri: str
    model_version: str | None


def tune(
    spec: Spec,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    families: Sequence[str] | None = None,
    seed: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    tracking_uri: str | None = None,
    on_trial: ProgressFn | None = None,
    register: bool = True,
) -> TuneResult:
    """Search segmentations with Optuna, track every trial in MLflow, refit and log the pick.

    The picked model is aligned to the champion's segment ids and, with ``register``,
    registered as the ``challenger`` version of ``spec.model_name``.
    ``n_trials`` is the study's total budget: a resumed study (same ``storage`` and
    ``study_name``) runs only the trials it still lacks. Command-line values override the
    spec's ``search`` section.
    """
    unknown = set(families or ()) - set(spec.search.families)
    if unknown:
        raise SpecError(
            f"{spec.path}: --families {sorted(unknown)[0]!r} is not in search.families "
            f"(declared: {', '.join(spec.search.families)})"
        )
    seed = spec.search.seed if seed is None else seed
    budget = n_trials or spec.search.n_trials
    name = study_name or spec.name
    digest = spec_digest(spec)

    client = keys.connect(tracking_uri)
    experiment = keys.experiment_id(client, spec.name)
    built = build_features(spec)
    preprocessor = build_preprocessor(spec, built.table).fit(built.table)
    data = SearchData(preprocessor.transform(built.table), value_outcome(spec, built.table), seed)
    objectives = objective_keys(data.value is not None)
    spaces = search_spaces(spec, families)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(spec, objectives, storage, name, seed)
    resumed = study.user_attrs.get(PARENT_RUN_ATTR)
    parent = keys.study_run(client, experiment, name, digest, resumed)
    if resumed is None:
        study.set_user_attr(PARENT_RUN_ATTR, parent)
        keys.log_dataset(client, parent, built.table[built.features], spec.name)
        if spec.path is not None:
            client.log_artifact(parent, str(spec.path), "spec")
    _search(
        client,
        experiment,
        parent,
        study,
        data,
        spec,
        spaces,
        objectives,
        budget,
        timeout,
        digest,
        on_trial,
    )

    results = completed_results(study)
    if not results:
        raise SpecError(f"{spec.path}: no trial completed; widen search.families or the budget")
    chosen = pick(results)
    params, reduction = split_params(chosen)
    segmentation = fit_segmentation(data.X, chosen.family, params, reduction, seed)
    final = evaluate(segmentation, data, spec, spec.search.bootstrap_final, seed)
    Z = (
        segmentation.embed(data.X)
        if segmentation.reducer is None
        else segmentation.reducer.embedding_
    )
    segmenter = build_segmenter(spec, built.features, preprocessor, segmentation, built.table, Z)
    segmenter, alignment = align_to_champion(client, spec.model_name, segmenter, built.table)
    _log_study(client, parent, spec, results, chosen, final, objectives, segmenter, built.table, Z)
    _log_provenance(client, parent, spec, built, results, alignment)
    model_uri = log_segment_model(segmenter, built.table, parent)
    client.set_tag(parent, keys.TAG_MODEL_URI, model_uri)
    client.set_terminated(parent)
    version = register_run(client, parent, segmenter)[1] if register else None
    return TuneResult(
        name,
        experiment,
        parent,
        chosen,
        final,
        len(results),
        sum(r.feasible for r in results),
        segmenter,
        model_uri,
        version,
    )


def _search(
    client: Any,
    experiment: str,
    parent: str,
    study: optuna.Study,
    data: SearchData,
    spec: Spec,
    spaces: dict[str, Any],
    objectives: Sequence[str],
    budget: int,
    timeout: float | None,
    digest: str,
    on_trial: ProgressFn | None,
) -> None:
    """Run the trials the study still lacks, each logged as a nested run."""
    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    deadline = time.monotonic() + (timeout or spec.search.timeout or np.inf)
    for _ in range(max(0, budget - done)):
        if time.monotonic() > deadline:
            break
        trial = study.ask()
        try:
            result, _ = run_trial(trial, data, spec, spaces, objectives)
        except (ValueError, np.linalg.LinAlgError) as exc:
            trial.set_user_attr("segml.error", str(exc)[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, list(result.objectives))
        keys.log_trial(
            client,
            experiment,
            parent,
            result.number,
            result.params,
            result.metrics,
            result.feasible,
            digest,
        )
        if on_trial is not None:
            on_trial(result, budget)


def _log_study(
    client: Any,
    parent: str,
    spec: Spec,
    results: list[TrialResult],
    chosen: TrialResult,
    final: dict[str, float],
    objectives: Sequence[str],
    segmenter: Segmenter,
    table: Any,
    Z: np.ndarray,
) -> None:
    """The parent run: chosen params and final metrics, plots and per-segment tables."""
    keys.log_params(client, parent, chosen.params)
    keys.log_metrics(
        client,
        parent,
        final
        | {
            keys.STUDY_N_TRIALS: len(results),
            keys.STUDY_N_FEASIBLE: sum(r.feasible for r in results),
            keys.STUDY_BEST_TRIAL: chosen.number,
        },
    )
    client.set_tag(parent, keys.TAG_FAMILY, chosen.family)
    front = pareto_front([r for r in results if r.feasible] or results)
    client.log_dict(
        parent,
        {
            "objectives": list(objectives),
            "chosen": chosen.number,
            "front": [
                {"trial": r.number, **r.params, **dict(zip(objectives, r.objectives, strict=True))}
                for r in front
            ],
        },
        "study/pareto_front.json",
    )
    if len(objectives) >= 2:
        client.log_figure(
            parent,
            report.pareto_plot(results, front, chosen, objectives),
            "study/pareto_front.png",
        )
    client.log_figure(parent, report.history_plot(results, objectives), "study/history.png")
    ids = segmenter.segment_ids(segmenter.segmentation.labels)
    client.log_figure(
        parent, report.embedding_plot(Z, ids, segmenter.segment_names()), "segments/embedding.png"
    )
    client.log_figure(parent, report.size_chart(segmenter.catalog), "segments/sizes.png")
    k = spec.min_report_size
    business = segment_table(ids, outcome_frame(spec, table))
    profile = feature_profile(table[segmenter.features].select_dtypes("number"), ids)
    client.log_table(parent, report.suppress_small(business, k), "segments/business.json")
    client.log_table(
        parent, report.suppress_small(_sized(profile, business), k), "segments/profile.json"
    )


def _log_provenance(
    client: Any,
    parent: str,
    spec: Spec,
    built: FeatureSet,
    results: list[TrialResult],
    alignment: Alignment | None,
) -> None:
    """Tags the model card reads: data size and period, families tried, alignment."""
    tried = Counter(r.family for r in results)
    client.set_tag(parent, keys.TAG_DATA_CUSTOMERS, str(len(built.table)))
    client.set_tag(parent, keys.TAG_DATA_PERIOD, data_period(spec, built))
    client.set_tag(
        parent, keys.TAG_FAMILIES_TRIED, ", ".join(f"{f}: {n}" for f, n in tried.items())
    )
    if alignment is not None:
        client.set_tag(parent, keys.TAG_ALIGNED_TO, alignment.champion)
        client.log_dict(parent, alignment.as_dict(), "model/alignment.json")


def data_period(spec: Spec, built: FeatureSet) -> str:
    """``first..reference`` day of the transactions behind the features ("" for customers)."""
    tx = spec.data.transactions
    if tx is None or spec.data.kind != "transactions":
        return ""
    stamps = built.intake.frame[tx.timestamp]
    end = spec.data.reference_date or stamps.max()
    return f"{stamps.min():%Y-%m-%d}..{pd.Timestamp(end):%Y-%m-%d}"


def _sized(profile: Any, business: Any) -> Any:
    """The long feature profile with each segment's size, so small segments can be suppressed."""
    return profile.merge(business[["segment_id", "customers"]], on="segment_id", how="left")
