"""``tune``: one tracked tuning run, from the spec's data to a logged segment model."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from segml import finalists, report, selection, studies, tuning
from segml import tracking as keys
from segml.alignment import Alignment
from segml.errors import SpecError
from segml.families import FAMILIES, Space
from segml.families.segmentation import Segmentation
from segml.features import (
    FeatureSet,
    build_features,
    build_preprocessor,
    outcome_frame,
    value_outcome,
)
from segml.metrics import feature_profile, granularity_checks, segment_table
from segml.model import Segmenter, build_segmenter, log_segment_model
from segml.registry import ModelRef, align_to_champion, load_segmenter, register_run
from segml.segment_report import (
    SegmentReport,
    profile_heatmap,
    segment_html,
    segment_markdown,
    segment_report,
    size_value_chart,
    summary_table,
)
from segml.spec import Spec, spec_digest
from segml.tuning import ProgressFn as ProgressFn
from segml.workers import Coordinator, coordinator

POLL_SECONDS = 1.0
"""How often a worker with no trial left to claim looks at the study again."""


@dataclass(frozen=True, slots=True)
class TuneResult:
    """Where a tuning run left its results, and what it chose."""

    study_name: str
    experiment_id: str
    parent_run_id: str
    chosen: tuning.TrialResult
    final_metrics: dict[str, float]
    n_trials: int
    n_feasible: int
    segmenter: Segmenter
    model_uri: str
    model_version: str | None
    finalised_here: bool
    choice: dict[str, Any]
    """``finalists`` (what the pick weighed, as in ``study/finalists.json``) and ``checks``
    (under- and over-segmentation of the pick)."""
    segments: pd.DataFrame | None = None
    """Per segment, size and predicted value (:func:`segml.segment_report.summary_table`);
    None where another worker finalised (its run holds ``segments/report.md``)."""


@dataclass(frozen=True, slots=True)
class _Worker:
    """One tuning worker's handles: tracking client, experiment, parent run, study and peers."""

    client: Any
    experiment: str
    parent: str
    study: optuna.Study
    peers: Coordinator
    digest: str


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
    Before the first trial, a new study scans every number of segments of k-means and GMM
    (:func:`segml.selection.scan_segment_counts`) and runs the best of each first.
    ``n_trials`` is the study's total budget, those trials included. A resumed study
    (same ``storage`` and ``study_name``) runs only the trials it still lacks, and workers
    running at once on a shared storage split it. The worker that completes the study picks,
    refits and registers, exactly once; the others return that result. Command-line values
    override the spec's ``search`` section.
    """
    unknown = set(families or ()) - set(spec.search.families)
    if unknown:
        raise SpecError(
            f"{spec.path}: --families {sorted(unknown)[0]!r} is not in search.families "
            f"(declared: {', '.join(spec.search.families)})"
        )
    seed = spec.search.seed if seed is None else seed
    spaces = tuning.search_spaces(spec, families)
    budget = n_trials or spec.search.n_trials
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    kept = studies.kept_storage(keys.resolve_tracking_uri(tracking_uri))
    # A kept study gets a name of its own, so the next tune starts a new study, not resumes this.
    defaulted = study_name is None and storage is None and kept is not None
    name = f"{spec.name} {started}" if defaulted else (study_name or spec.name)
    run_name = name if defaulted else f"{name} {started}"
    storage = storage or kept
    digest = spec_digest(spec)

    built = build_features(spec)
    preprocessor, X = search_matrix(spec, built)
    data = tuning.search_data(X, value_outcome(spec, built.table), seed, spec.search.sample_size)
    objectives = tuning.objective_keys(data.value is not None)
    evaluate_trial = functools.partial(
        tuning.run_trial,
        data=data,
        spec=spec,
        spaces=spaces,
        objectives=objectives,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with contextlib.closing(coordinator(storage, name)) as peers:
        worker = _join(
            tracking_uri, peers, spec, built, data, spaces, storage, (name, run_name), digest
        )
        deadline = time.monotonic() + (timeout or spec.search.timeout or np.inf)
        if _search(worker, evaluate_trial, budget, deadline, on_trial) is studies.Step.DONE:
            return _finalised(worker, name)
        with keys.failed_on_error(worker.client, worker.parent):
            return _finalise(worker, name, spec, built, preprocessor, data, objectives, register)


def search_matrix(spec: Spec, built: FeatureSet) -> tuple[Any, np.ndarray]:
    """The fitted preprocessing step and the customers as the search sees them.

    Raises
    ------
    DataError
        Data no search could segment (see :func:`segml.tuning.check_segmentable`).
    """
    preprocessor = build_preprocessor(spec, built.table).fit(built.table)
    X = preprocessor.transform(built.table)
    tuning.check_segmentable(X, spec.constraints, spec.data.source)
    return preprocessor, X


def _join(
    tracking_uri: str | None,
    peers: Coordinator,
    spec: Spec,
    built: FeatureSet,
    data: tuning.SearchData,
    spaces: dict[str, Space],
    storage: str | None,
    names: tuple[str, str],
    digest: str,
) -> _Worker:
    """Under the study lock, connect to the tracking store and open the study ``names[0]``
    and its parent run ``names[1]`` (the first worker creates it, after the scan of segment
    counts; so, with a new store, are its tables)."""
    name, run_name = names
    objectives = tuning.objective_keys(data.value is not None)
    with peers.lock():
        client = keys.connect(tracking_uri)
        experiment, project = keys.run_home(client, spec.name)
        study = studies.create_study(spec, objectives, storage, name, data.seed)
        parent = study.user_attrs.get(studies.PARENT_RUN_ATTR)
        if parent is not None:  # a resumed study: its trials join its run's experiment
            experiment = client.get_run(parent).info.experiment_id
        else:
            scan = selection.scan_segment_counts(
                data.X, spaces, sample_size=spec.search.silhouette_sample, seed=data.seed
            )
            first = selection.first_trials(
                scan,
                spaces,
                tuning.reduction_space(spec),
                n_customers=len(data.X),
                min_share=spec.constraints.min_share,
            )
            studies.enqueue(study, first)
            # Recorded last, the study's run is found again by name if a worker was killed
            # after creating it, and its first logs are written again.
            names = (name, studies.run_name(study, run_name))
            parent = keys.find_study_run(client, experiment, names) or keys.study_run(
                client, experiment, names, digest, None, project
            )
            _log_scan(client, parent, scan)
            keys.log_dataset(
                client,
                parent,
                built.table[built.features],
                keys.dataset_name(spec.data.source, spec.data.reference_date),
                source=str(spec.data.source),
            )
            if spec.path is not None:
                client.log_artifact(parent, str(spec.path), "spec")
            study.set_user_attr(studies.PARENT_RUN_ATTR, parent)
    return _Worker(client, experiment, parent, study, peers, digest)


def _log_scan(client: Any, parent: str, scan: Sequence[selection.ScanPoint]) -> None:
    """The scan of segment counts on the study run: a table and its plot against k."""
    table = pd.DataFrame(
        [{"family": p.family, "k": p.k, "criterion": p.criterion, "value": p.value} for p in scan]
    )
    client.log_table(parent, table, "study/k_scan.json")
    if scan:
        client.log_figure(parent, report.scan_plot(table), "study/k_scan.png")


def _search(
    worker: _Worker,
    evaluate_trial: Callable[[optuna.Trial], tuple[tuning.TrialResult, Any]],
    budget: int,
    deadline: float,
    on_trial: ProgressFn | None,
) -> studies.Step:
    """Run trials while the study's budget lasts (until ``deadline``), each logged as a
    nested run; then return FINALISE (this worker finalises) or DONE (another one did)."""
    while True:
        step = _next(worker, budget, deadline)
        if step is studies.Step.WAIT:
            time.sleep(POLL_SECONDS)
        elif isinstance(step, studies.Step):
            return step
        else:
            _run(worker, step, evaluate_trial, budget, on_trial)


def _next(worker: _Worker, budget: int, deadline: float) -> optuna.Trial | studies.Step:
    """Under the study lock: a trial for this worker, else what to do once none is left."""
    peers, study = worker.peers, worker.study
    with peers.lock():
        studies.reap_lost_trials(study, peers.worker, peers.alive)
        trial = (
            studies.claim_trial(study, budget, peers.worker)
            if time.monotonic() < deadline
            else None
        )
        return trial or studies.finalise_step(study, peers.worker, peers.alive)


def _run(
    worker: _Worker,
    trial: optuna.Trial,
    evaluate_trial: Callable[[optuna.Trial], tuple[tuning.TrialResult, Any]],
    budget: int,
    on_trial: ProgressFn | None,
) -> None:
    """Evaluate one claimed trial as a nested run that lasts as long as the trial does, and
    tell the study."""
    client = worker.client
    run_id = keys.start_trial(
        client, worker.experiment, worker.parent, trial.number, worker.digest
    )
    with keys.failed_on_error(client, run_id):
        try:
            result, _ = evaluate_trial(trial)
        except (ValueError, np.linalg.LinAlgError) as exc:
            studies.record_error(trial, exc)
            worker.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            client.set_terminated(run_id, "FAILED")
            return
        studies.record_result(trial, result)
        worker.study.tell(trial, list(result.objectives))
        keys.finish_trial(
            client, run_id, result.number, result.params, result.metrics, result.feasible
        )
    if on_trial is not None:
        on_trial(result, budget)


def _finalise(
    worker: _Worker,
    name: str,
    spec: Spec,
    built: FeatureSet,
    preprocessor: Any,
    data: tuning.SearchData,
    objectives: Sequence[str],
    register: bool,
) -> TuneResult:
    """Pick, refit, log and (with ``register``) register the model; record it in the study.

    The caller marks the parent run FAILED if any of it fails; running the same tune again
    (same storage) finalises the study then.
    """
    client, parent = worker.client, worker.parent
    results = studies.completed_results(worker.study)
    if not results:
        cause = studies.first_error(worker.study) or "none ran"
        raise SpecError(
            f"{spec.path}: no trial completed ({cause}); widen search.families or the budget"
        )
    keys.study_run(client, worker.experiment, (name, name), worker.digest, parent)
    keys.settle_trials(client, parent, {r.number: r for r in results}, worker.digest)
    reference = selection.kmeans_reference(
        data.X,
        tuning.search_spaces(spec, ["kmeans"])["kmeans"],
        sample_size=spec.search.silhouette_sample,
        seed=data.seed,
    )
    remeasured = finalists.remeasure(selection.finalists(results), data, spec, reference)
    picked = selection.choose(
        [r for r, *_ in remeasured.values()], spec.constraints.min_stability, reference
    )
    chosen = next(r for r in results if r.number == picked.number)
    final = picked.metrics | {keys.STUDY_SAMPLE_SIZE: float(len(data.X))}
    segmentation = remeasured[picked.number][1]
    if data.everyone is not None:
        seed = tuning.trial_seed(data.seed, picked.number)
        segmentation, final[keys.STUDY_REFIT_ARI] = tuning.confirm(segmentation, data, seed)
    segmentation, Z = _of_everyone(segmentation, data)
    weighed = finalists.record(remeasured, picked, reference)
    client.log_dict(parent, weighed, "study/finalists.json")
    segmenter = build_segmenter(
        spec, built.features, preprocessor, segmentation, built.table, Z, built.value
    )
    segmenter, alignment = align_to_champion(client, spec.model_name, segmenter, built.table)
    ids = segmenter.segment_ids(segmenter.segmentation.labels)
    segments = segment_report(
        spec,
        built.table,
        segmenter.features,
        ids,
        segmenter.segment_names(),
        f"{spec.model_name} on {len(built.table):,} customers ({data_period(spec, built)})",
    )
    front = _log_study(
        client, parent, spec, results, chosen, final, objectives, segmenter, built.table, Z
    )
    keys.tag_trials(client, parent, _trial_marks(results, front, chosen))
    _log_segments(client, parent, segments)
    _log_provenance(client, parent, spec, built, results, alignment)
    pages = {"segment_report.html": segment_html(segments)}
    claim = studies.Final.of(worker.study)
    model_uri = claim.logged_model if claim else None  # logged before this finaliser's kill
    if model_uri is None:
        model_uri = log_segment_model(segmenter, built.table, parent, pages=pages)
        client.set_tag(parent, keys.TAG_MODEL_URI, model_uri)
        if claim is not None:
            dataclasses.replace(claim, logged_model=model_uri).save(worker.study)
    client.set_terminated(parent)
    version = register_run(client, parent, segmenter, segments)[1] if register else None
    value, min_share = data.customers.value, spec.constraints.min_share
    found = granularity_checks(ids, value, min_share, spec.min_report_size)
    checks = [c.as_dict() for c in found]
    client.log_dict(parent, {"checks": checks}, "segments/checks.json")
    choice = {"finalists": weighed["finalists"], "checks": checks}
    record = studies.Final(
        worker.peers.worker, len(results), chosen.number, model_uri, version, final, choice
    )
    record.save(worker.study)
    result = _result(worker, name, results, chosen, record, segmenter, finalised_here=True)
    return dataclasses.replace(result, segments=summary_table(segments))


def _of_everyone(segmentation: Segmentation, data: tuning.SearchData) -> tuple[Segmentation, Any]:
    """The pick with every customer's segment as its labels, and every customer in the
    clusterer's space: the fit's own, or, after a fit on a sample, the model's assignment."""
    if data.everyone is None:
        reducer = segmentation.reducer
        return segmentation, data.X if reducer is None else reducer.embedding_
    Z = segmentation.embed(data.everyone.X)
    labels = FAMILIES[segmentation.family].assign(segmentation.estimator, Z).labels
    return dataclasses.replace(segmentation, labels=labels), Z


def _finalised(worker: _Worker, name: str) -> TuneResult:
    """The result another worker finalised, read back from the study and the tracking store."""
    record = studies.Final.of(worker.study)
    assert record is not None and record.model_uri is not None, "the study is finalised"
    results = studies.completed_results(worker.study)
    chosen = next(r for r in results if r.number == record.chosen)
    segmenter = load_segmenter(ModelRef(record.model_uri))
    return _result(worker, name, results, chosen, record, segmenter, finalised_here=False)


def _result(
    worker: _Worker,
    name: str,
    results: list[tuning.TrialResult],
    chosen: tuning.TrialResult,
    record: studies.Final,
    segmenter: Segmenter,
    *,
    finalised_here: bool,
) -> TuneResult:
    return TuneResult(
        name,
        worker.experiment,
        worker.parent,
        chosen,
        record.metrics,
        len(results),
        sum(r.feasible for r in results),
        segmenter,
        record.model_uri or "",
        record.version,
        finalised_here,
        record.choice,
    )


def _log_study(
    client: Any,
    parent: str,
    spec: Spec,
    results: list[tuning.TrialResult],
    chosen: tuning.TrialResult,
    final: dict[str, float],
    objectives: Sequence[str],
    segmenter: Segmenter,
    table: Any,
    Z: np.ndarray,
) -> list[tuning.TrialResult]:
    """The parent run: chosen params and final metrics, plots and per-segment tables; returns
    the Pareto front of the feasible trials (of all, if none is feasible)."""
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
    front = tuning.pareto_front([r for r in results if r.feasible] or results)
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
    k = spec.min_report_size
    business = segment_table(ids, outcome_frame(spec, table))
    hidden = report.hidden_segments(business, k)  # with the noise row, as the segment report
    names = segmenter.segment_names()
    client.log_figure(
        parent, report.embedding_plot(Z, ids, names, hidden), "segments/embedding.png"
    )
    client.log_figure(parent, report.size_chart(segmenter.catalog, hidden), "segments/sizes.png")
    profile = feature_profile(table[segmenter.features].select_dtypes("number"), ids)
    client.log_table(
        parent, report.suppress_small(business, k, hidden=hidden), "segments/business.json"
    )
    client.log_table(
        parent,
        report.suppress_small(_sized(profile, business), k, hidden=hidden),
        "segments/profile.json",
    )
    return front


def _trial_marks(
    results: list[tuning.TrialResult],
    front: list[tuning.TrialResult],
    chosen: tuning.TrialResult,
) -> dict[int, dict[str, str]]:
    """Per trial, whether it is on the Pareto front and whether it is the pick (as tags)."""
    on_front = {r.number for r in front}
    return {
        r.number: {
            keys.TAG_PARETO: str(r.number in on_front).lower(),
            keys.TAG_CHOSEN: str(r.number == chosen.number).lower(),
        }
        for r in results
    }


def _log_segments(client: Any, parent: str, segments: SegmentReport) -> None:
    """The segment report on the study run: HTML, Markdown, its table and charts."""
    client.log_text(parent, segment_html(segments), "segments/report.html")
    client.log_text(parent, segment_markdown(segments), "segments/report.md")
    client.log_table(parent, segments.segments, "segments/report.json")
    client.log_figure(parent, profile_heatmap(segments), "segments/profile.png")
    client.log_figure(parent, size_value_chart(segments), "segments/size_value.png")


def _log_provenance(
    client: Any,
    parent: str,
    spec: Spec,
    built: FeatureSet,
    results: list[tuning.TrialResult],
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
