"""MLflow tracking: where runs go, and every key and tag name segml writes (defined only here)."""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, LoggedModelInput, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from segml.errors import RegistryError
from segml.locks import SQLITE_PREFIX, sqlite_file
from segml.store import ensure_store

if TYPE_CHECKING:
    from segml.tuning import TrialResult

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"

# Tags
TAG_ROLE = "segml.role"
TAG_SPEC_DIGEST = "segml.spec_digest"
TAG_FAMILY = "segml.family"
TAG_STUDY = "segml.study"
TAG_TRIAL = "segml.trial"
TAG_FEASIBLE = "segml.feasible"
TAG_PARETO = "segml.pareto"
TAG_CHOSEN = "segml.chosen"
TAG_PARENT = "mlflow.parentRunId"
TAG_MODEL_URI = "segml.model_uri"
TAG_FAMILIES_TRIED = "segml.families_tried"
TAG_DATA_PERIOD = "segml.data.period"
TAG_DATA_CUSTOMERS = "segml.data.customers"
TAG_ALIGNED_TO = "segml.aligned_to"
TAG_CHALLENGER = "segml.challenger"
TAG_CHAMPION = "segml.champion"
TAG_VERDICT = "segml.review.verdict"
TAG_REVIEW_RUN = "segml.review.run_id"
TAG_RUN_LINK = "segml.run_link"
TAG_SCORED_MODEL = "segml.scored_model"
TAG_COMMAND = "segml.command"
"""On a scoring run: a digest of the command's parameters, by which its rerun finds a run that
a killed process left RUNNING."""
VERDICT_PASSED = "passed"
VERDICT_FAILED = "failed"
ROLE_STUDY = "study"
ROLE_TRIAL = "trial"
ROLE_REVIEW = "review"
ROLE_SCORING = "scoring"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Opens segml's experiments in the MLflow UI's model-training view, not the GenAI one."""
PROJECT_RUN_ENV = "MLFLOW_RUN_ID"
"""Set by ``mlflow run``: the project's run, under which segml nests its study, review or
scoring run (in the project run's experiment)."""

# Parameters: `family`, `<family>.<param>`, `prep.<param>`
PARAM_FAMILY = "family"
PREP_NAMESPACE = "prep"

# Metrics, with the description docs/mlflow-keys.md shows.
QUALITY_SILHOUETTE = "quality.silhouette"
QUALITY_DAVIES_BOULDIN = "quality.davies_bouldin"
QUALITY_CALINSKI_HARABASZ = "quality.calinski_harabasz"
QUALITY_DBCV = "quality.dbcv"
QUALITY_NOISE_SHARE = "quality.noise_share"
QUALITY_BIC = "quality.bic"
STABILITY_JACCARD_MIN = "stability.jaccard_min"
STABILITY_JACCARD_MEAN = "stability.jaccard_mean"
STABILITY_ARI_MEAN = "stability.ari_mean"
STABILITY_N_DISSOLVED = "stability.n_dissolved"
STABILITY_N_STABLE = "stability.n_stable"
BUSINESS_N_SEGMENTS = "business.n_segments"
BUSINESS_MIN_SHARE = "business.min_share"
BUSINESS_MAX_SHARE = "business.max_share"
BUSINESS_VALUE_R2 = "business.value_r2"
COST_FIT_SECONDS = "cost.fit_seconds"
COST_STABILITY_SECONDS = "cost.stability_seconds"
COST_TRIAL_SECONDS = "cost.trial_seconds"
STUDY_N_TRIALS = "study.n_trials"
STUDY_N_FEASIBLE = "study.n_feasible"
STUDY_BEST_TRIAL = "study.best_trial"
STUDY_SAMPLE_SIZE = "study.sample_size"
STUDY_REFIT_ARI = "study.refit_ari"
REVIEW_ARI = "review.ari"
REVIEW_AMI = "review.ami"
REVIEW_MIGRATION_SHARE = "review.migration_share"
REVIEW_SILHOUETTE_DROP = "review.silhouette_drop"
REVIEW_CUSTOMERS = "review.customers"
REVIEW_PASSED = "review.passed"
SCORING_ROWS_READ = "scoring.rows_read"
SCORING_ROWS_SCORED = "scoring.rows_scored"
SCORING_ROWS_QUARANTINED = "scoring.rows_quarantined"
SCORING_SECONDS = "scoring.seconds"
SCORING_ROWS_PER_SECOND = "scoring.rows_per_second"
SCORING_NOVEL_SHARE = "scoring.novel_share"
SCORING_ALERT = "scoring.alert"
EMERGING_CANDIDATES = "emerging.candidates"
EMERGING_SHARE = "emerging.share"
DRIFT_SHARE_PSI = "drift.share_psi"
DRIFT_SHARE_P_VALUE = "drift.share_p_value"
DRIFT_FEATURE_PSI_MAX = "drift.feature_psi_max"
DRIFT_FEATURES_DRIFTED = "drift.features_drifted"
MIGRATION_CUSTOMERS = "migration.customers"
MIGRATION_SHARE = "migration.share"

METRICS: Mapping[str, str] = {
    QUALITY_SILHOUETTE: "mean silhouette on a seeded sample, a customer without a segment "
    "scoring 0 (-1..1, higher is better), in the preprocessed feature space",
    QUALITY_DAVIES_BOULDIN: "Davies-Bouldin index (>= 0, lower is better)",
    QUALITY_CALINSKI_HARABASZ: "Calinski-Harabasz index (higher is better)",
    QUALITY_DBCV: "density-based cluster validity on a sample of the preprocessed features "
    "(HDBSCAN trials and the pick's finalists; -1..1)",
    QUALITY_BIC: "Bayesian information criterion of a Gaussian mixture fitted without a reducer "
    "(lower is better)",
    QUALITY_NOISE_SHARE: "share of customers left without a segment (HDBSCAN noise; NaN when "
    "they are fewer than min_report_size)",
    STABILITY_JACCARD_MIN: "smallest per-segment mean bootstrap Jaccard (clusterboot)",
    STABILITY_JACCARD_MEAN: "mean over segments of the per-segment mean bootstrap Jaccard",
    STABILITY_ARI_MEAN: "mean ARI of each bootstrap refit vs the original (shared customers)",
    STABILITY_N_DISSOLVED: "segments whose mean Jaccard is <= 0.5 (Hennig: dissolved)",
    STABILITY_N_STABLE: "segments whose mean Jaccard is >= 0.75 (Hennig: stable)",
    BUSINESS_N_SEGMENTS: "number of segments (noise excluded)",
    BUSINESS_MIN_SHARE: "share of customers in the smallest segment (NaN when it holds fewer "
    "than min_report_size customers)",
    BUSINESS_MAX_SHARE: "share of customers in the largest segment (NaN likewise)",
    BUSINESS_VALUE_R2: "share of the value outcome's variance explained by segment (eta squared)",
    COST_FIT_SECONDS: "seconds to reduce (if UMAP) and fit the clusterer",
    COST_STABILITY_SECONDS: "seconds spent on the bootstrap stability step",
    COST_TRIAL_SECONDS: "seconds for the whole trial, tracking excluded",
    STUDY_N_TRIALS: "(parent run) completed trials in the study",
    STUDY_N_FEASIBLE: "(parent run) trials that met the spec's constraints",
    STUDY_BEST_TRIAL: "(parent run) number of the chosen trial",
    STUDY_SAMPLE_SIZE: "(parent run) customers the trials fitted on (`search.sample_size`)",
    STUDY_REFIT_ARI: "(parent run) the sampled pick's ARI with its refit on 4x the sample",
    REVIEW_ARI: "(review run) ARI between champion and challenger on the same customers",
    REVIEW_AMI: "(review run) adjusted mutual information between the two assignments",
    REVIEW_MIGRATION_SHARE: "(review run) share of customers whose segment id changes",
    REVIEW_SILHOUETTE_DROP: "(review run) champion silhouette minus challenger silhouette",
    REVIEW_CUSTOMERS: "(review run) customers scored by both models",
    REVIEW_PASSED: "(review run) 1 if every gate passed, else 0",
    SCORING_ROWS_READ: "(scoring run) input rows read (transactions for a transaction log)",
    SCORING_ROWS_SCORED: "(scoring run) customers scored and written to the output",
    SCORING_ROWS_QUARANTINED: "(scoring run) input rows set aside in the quarantine file",
    SCORING_SECONDS: "(scoring run) wall seconds from the first read to the renamed output",
    SCORING_ROWS_PER_SECOND: "(scoring run) customers scored per second",
    SCORING_NOVEL_SHARE: "(scoring run) share of customers above the novelty threshold or "
    "without a segment",
    SCORING_ALERT: "(scoring run) 1 if candidates or drift above the spec's thresholds appeared",
    EMERGING_CANDIDATES: "(scoring run) emerging-segment candidates among the novel customers",
    EMERGING_SHARE: "(scoring run) share of customers in an emerging-segment candidate",
    DRIFT_SHARE_PSI: "(scoring run) PSI of the segment shares (no segment included) vs training",
    DRIFT_SHARE_P_VALUE: "(scoring run) chi-square p-value that the batch and training have the "
    "same segment shares",
    DRIFT_FEATURE_PSI_MAX: "(scoring run) largest PSI of an input feature vs training",
    DRIFT_FEATURES_DRIFTED: "(scoring run) share of input features that drifted (Evidently's "
    "default tests and distances), days counted to the reference date (recency, tenure) left "
    "out: they move by construction",
    MIGRATION_CUSTOMERS: "(scoring run, --previous) customers in both the previous and this "
    "output",
    MIGRATION_SHARE: "(scoring run, --previous) share of those customers whose segment id changed",
}
"""Review runs also log each model's metrics on the reviewed customers as
``challenger.<key>`` and ``champion.<key>``."""

CHALLENGER_PREFIX = "challenger."
CHAMPION_PREFIX = "champion."

# Artifacts of a scoring run
SCORING_ARTIFACTS = "scoring"
CANDIDATES_ARTIFACT = f"{SCORING_ARTIFACTS}/candidates.json"


def audit_tags(
    action: str, reason: str | None = None, run_id: str | None = None
) -> dict[str, str]:
    """Who did ``action``, when, why and from which run: ``segml.<action>.by`` etc."""
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    tags = {audit_key(action, "by"): getpass.getuser(), audit_key(action, "at"): stamp}
    if reason:
        tags[audit_key(action, "reason")] = reason
    if run_id:
        tags[audit_key(action, "run_id")] = run_id
    return tags


def audit_key(action: str, field: str) -> str:
    """The tag ``segml.<action>.<field>`` (field: by, at, reason, run_id) of a registry action."""
    return f"segml.{action}.{field}"


def param_key(namespace: str, name: str) -> str:
    """A namespaced parameter key: ``<family>.<param>`` or ``prep.<param>``."""
    return f"{namespace}.{name}"


def resolve_tracking_uri(option: str | None = None) -> str:
    """The ``--tracking-uri`` option, else ``MLFLOW_TRACKING_URI``, else the embedded store."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def artifact_root(tracking_uri: str) -> str | None:
    """For an embedded SQLite store, the artifact folder beside the database; else None."""
    database = sqlite_file(tracking_uri)
    if database is None:
        return None
    return (database.resolve().parent / ARTIFACTS_FOLDER).as_uri()


def key_table() -> str:
    """The Markdown table of metric keys that docs/mlflow-keys.md shows."""
    rows = [f"| `{key}` | {text} |" for key, text in METRICS.items()]
    return "\n".join(["| metric key | meaning |", "| --- | --- |", *rows])


def flat_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Parameters as MLflow strings (None becomes ``"None"``)."""
    return {key: str(value) for key, value in params.items()}


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_store(tracking_uri: str | None = None, *, create: bool = True) -> str:
    """The resolved tracking URI, checked before a command does any work: an embedded
    (SQLite) store must exist, or with ``create`` its folder must (a command that only reads
    the registry must not leave a new empty store behind a wrong path)."""
    uri = resolve_tracking_uri(tracking_uri)
    if not uri.startswith(SQLITE_PREFIX):
        return uri
    database = Path(uri[len(SQLITE_PREFIX) :].split("?")[0])
    hint = "check --tracking-uri or MLFLOW_TRACKING_URI"
    if database.is_file():
        with database.open("rb") as head:
            start = head.read(len(SQLITE_MAGIC))
        if start and start != SQLITE_MAGIC:
            raise RegistryError(f"{database}: not an MLflow store (not an SQLite database)")
    elif database.exists() or not create:
        raise RegistryError(f"{database}: no MLflow store here; {hint}")
    elif not database.absolute().parent.is_dir():
        raise RegistryError(f"{database.parent}: the store's folder does not exist; {hint}")
    return uri


def connect(tracking_uri: str | None = None, *, create: bool = True) -> MlflowClient:
    """A client on the resolved tracking store (checked by :func:`check_store`); the
    registry lives in the same store."""
    uri = check_store(tracking_uri, create=create)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    database = sqlite_file(uri)
    if database is not None:  # check_store has checked its folder
        ensure_store(database, artifact_root(uri))
    try:
        client = MlflowClient(uri, registry_uri=uri)
    except MlflowException as exc:  # an unknown scheme
        reason = exc.message.strip().split(". ")[0]
        raise RegistryError(f"tracking URI {uri!r}: {reason}") from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (artifacts beside an embedded store) if missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    location = artifact_root(client.tracking_uri)
    try:
        return client.create_experiment(
            name,
            artifact_location=location and f"{location}/{name}",
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
        )
    except MlflowException as exc:  # another process created it since we looked
        created = client.get_experiment_by_name(name)
        if created is None or exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return created.experiment_id


def run_home(client: MlflowClient, experiment_name: str) -> tuple[str, str | None]:
    """Where a study, review or scoring run goes: the experiment ``experiment_name``, or, under
    ``mlflow run``, the project run's experiment with the project run as its parent."""
    project = os.environ.get(PROJECT_RUN_ENV)
    if project:
        try:
            return client.get_run(project).info.experiment_id, project
        except MlflowException:
            pass  # a run of another store: nothing to nest under here
    return experiment_id(client, experiment_name), None


def new_run(
    client: MlflowClient,
    experiment: str,
    name: str,
    tags: Mapping[str, str],
    parent: str | None = None,
    started: float | None = None,
) -> str:
    """A run started now (or at ``started``, a ``time.time()``), with the tags a fluent
    ``mlflow.start_run`` gives (user, source, git commit) besides ``tags``; nested under
    ``parent`` if given. Returns its id."""
    own = dict(tags) | ({TAG_PARENT: parent} if parent else {})
    start = None if started is None else int(started * 1000)
    run = client.create_run(experiment, start_time=start, run_name=name, tags=resolve_tags(own))
    return run.info.run_id


def run_link(tracking_uri: str, experiment: str, run_id: str) -> str:
    """A link to a run's page: absolute for a tracking server, else relative to the MLflow UI
    that serves the store (``#/experiments/...``, which the UI's Markdown opens)."""
    page = f"#/experiments/{experiment}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return page


@contextlib.contextmanager
def failed_on_error(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Mark ``run_id`` FAILED when the block raises (the error goes on), as ``mlflow.start_run``
    does: a run left RUNNING by a dead process looks alive in the MLflow UI."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the store may be what failed
            client.set_terminated(run_id, "FAILED")
        raise


def study_run(
    client: MlflowClient,
    experiment: str,
    names: tuple[str, str],
    spec_digest: str,
    run_id: str | None,
    parent: str | None = None,
) -> str:
    """The parent run of a study: ``run_id`` if given (a resumed study), else a new one for
    the study ``names[0]`` named ``names[1]`` (distinct: ``cdnow_rfm 2026-12-06 21:40:03``),
    nested under ``parent`` (the ``mlflow run`` project run) if given."""
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    study_name, run_name = names
    tags = {TAG_ROLE: ROLE_STUDY, TAG_STUDY: study_name, TAG_SPEC_DIGEST: spec_digest}
    return new_run(client, experiment, run_name, tags, parent)


def start_trial(
    client: MlflowClient, experiment: str, parent_run_id: str, number: int, spec_digest: str
) -> str:
    """The nested run of trial ``number``, started as the trial starts; returns its id."""
    tags = {TAG_ROLE: ROLE_TRIAL, TAG_TRIAL: str(number), TAG_SPEC_DIGEST: spec_digest}
    return new_run(client, experiment, f"trial-{number:04d}", tags, parent_run_id)


def finish_trial(
    client: MlflowClient,
    run_id: str,
    number: int,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    feasible: bool,
) -> None:
    """Log a trial's outcome in one batched call (its name gains the family) and end its run."""
    family = str(params[PARAM_FAMILY])
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in flat_params(params).items()],
        tags=[RunTag(TAG_FAMILY, family), RunTag(TAG_FEASIBLE, str(feasible).lower())],
    )
    client.update_run(run_id, name=f"trial-{number:04d}-{family}")
    client.set_terminated(run_id)


def tag_trials(
    client: MlflowClient, parent_run_id: str, tags: Mapping[int, Mapping[str, str]]
) -> None:
    """Set ``tags[number]`` on the run of each trial ``number`` of the study ``parent_run_id``."""
    for number, runs in _trial_runs(client, parent_run_id).items():
        if number in tags:
            batch = [RunTag(k, v) for k, v in tags[number].items()]
            for run in runs:
                client.log_batch(run.info.run_id, tags=batch)


def settle_trials(
    client: MlflowClient, parent_run_id: str, complete: Mapping[int, TrialResult], digest: str
) -> None:
    """Give each complete trial of study ``parent_run_id`` exactly one FINISHED run, logged
    from the study's record if a killed worker left it RUNNING or missing, and end the runs of
    the other trials KILLED; call it when no trial runs."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    runs = _trial_runs(client, parent_run_id)
    left: list[Run] = []
    for number, outcome in complete.items():
        found = sorted(runs.pop(number, []), key=lambda r: r.info.status != "FINISHED")
        if not found or found[0].info.status != "FINISHED":
            run_id = found[0].info.run_id if found else None
            run_id = run_id or start_trial(client, experiment, parent_run_id, number, digest)
            finish_trial(client, run_id, number, outcome.params, outcome.metrics, outcome.feasible)
        left += found[1:]
    for run in left + [r for found in runs.values() for r in found]:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")


def _trial_runs(client: MlflowClient, parent_run_id: str) -> dict[int, list[Run]]:
    """The trial runs of a study run, by trial number."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=50_000
    )
    found: dict[int, list[Run]] = {}
    for run in runs:
        number = run.data.tags.get(TAG_TRIAL)
        if number is not None:
            found.setdefault(int(number), []).append(run)
    return found


def find_study_run(client: MlflowClient, experiment: str, names: tuple[str, str]) -> str | None:
    """The run of study ``names[0]`` named ``names[1]``, if a worker created it (and was
    killed before the study recorded it)."""
    study_name, run_name = names
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}'", max_results=50_000
    )
    for run in runs:
        if run.info.run_name == run_name and run.data.tags.get(TAG_STUDY) == study_name:
            return run.info.run_id
    return None


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Metrics in one batched call (undefined ones are logged as NaN, so every key is there)."""
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=batch)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Parameters in one batched call."""
    client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params(params).items()])


def log_dataset(
    client: MlflowClient,
    run_id: str,
    table: pd.DataFrame,
    name: str,
    *,
    source: str | None = None,
    context: str = "training",
    digest: str | None = None,
) -> str:
    """Log ``table`` as the run's input dataset ``name`` read from ``source`` (its schema and
    digest, not the rows; ``digest`` overrides the one of ``table``); return the digest."""
    with warnings.catch_warnings():
        # MLflow registers local files under two schemes and warns that it picked one of them;
        # its `source` defaults to None, which its annotation leaves out
        warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
        dataset = from_pandas(table, source=source, name=name, digest=digest)  # type: ignore[arg-type]
    tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [tag])])
    return dataset.digest


def dataset_name(source: str | Path, reference_date: object = None) -> str:
    """A dataset's name: its file, and the day its features are computed as of."""
    name = Path(source).name
    return f"{name} as of {reference_date}" if reference_date else name


def quoted(value: str) -> str:
    """``value`` as a string in an MLflow search filter: in double quotes when it holds a
    single one (``o'brien``); the spec refuses model names that hold both kinds."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def previous_candidates(
    client: MlflowClient, experiment_name: str, label: str
) -> pd.DataFrame | None:
    """The candidates of the latest finished scoring run of model ``label`` (None if none)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{TAG_ROLE}` = '{ROLE_SCORING}' and "
            f"tags.`{TAG_SCORED_MODEL}` = {quoted(label)} and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(runs[0].info.run_id, CANDIDATES_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    return pd.DataFrame(table["data"], columns=table["columns"])


def log_scoring_run(
    client: MlflowClient,
    experiment_name: str,
    *,
    label: str,
    family: str,
    model: tuple[str | None, str | None],
    metrics: Mapping[str, float],
    tables: Mapping[str, pd.DataFrame],
    texts: Mapping[str, str],
    params: Mapping[str, Any],
    dataset: tuple[pd.DataFrame, str, str, str],
    started: float,
) -> str:
    """A scoring run (tag ``segml.role=scoring``) of model ``label`` that started at
    ``started`` (``time.time()``), with its parameters, metrics, tables (``<name>.json``)
    and texts (by file name) under ``scoring/``.

    ``model`` is the registered (name, version), if any: that version's logged model is linked
    as the run's input model. ``dataset`` is (columns, name, source, digest) of the input.
    Returns the run id.
    """
    experiment, parent = run_home(client, experiment_name)
    command = hashlib.sha256(json.dumps(flat_params(params), sort_keys=True).encode())
    tags = {TAG_ROLE: ROLE_SCORING, TAG_SCORED_MODEL: label, TAG_FAMILY: family}
    tags[TAG_COMMAND] = command.hexdigest()[:16]
    close_strays(client, experiment, tags[TAG_COMMAND])
    run_id = new_run(client, experiment, f"score {label}", tags, parent, started)
    with failed_on_error(client, run_id):
        model_id = _logged_model_id(client, *model)
        if model_id:
            client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        frame, name, source, digest = dataset
        log_dataset(client, run_id, frame, name, source=source, context="scoring", digest=digest)
        log_params(client, run_id, params)
        log_metrics(client, run_id, metrics)
        for name, table in tables.items():
            client.log_table(run_id, table, f"{SCORING_ARTIFACTS}/{name}.json")
        for name, text in texts.items():
            client.log_text(run_id, text, f"{SCORING_ARTIFACTS}/{name}")
    client.set_terminated(run_id)
    return run_id


def close_strays(client: MlflowClient, experiment: str, command: str) -> None:
    """Mark KILLED the runs of the same command (tag ``segml.command``) left RUNNING by a
    killed process: its rerun replaces them. A run of the same command still alive elsewhere
    would be writing the same output, and ends its run FINISHED all the same."""
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.`{TAG_COMMAND}` = '{command}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")


def _logged_model_id(client: MlflowClient, name: str | None, version: str | None) -> str | None:
    """The MLflow logged model behind a registered version (its source is ``models:/<id>``)."""
    if not (name and version):
        return None
    try:
        found = client.get_model_version(name, version)
    except MlflowException:
        return None
    source = found.source or ""
    logged = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    return found.model_id or logged
