"""Where an Optuna study lives and how the workers sharing it take turns: its storage, who runs
which trial, who finalises it, and the trial results it keeps for every worker to read.

The search itself (spaces, trials' fit and metrics, pick) is :mod:`segml.tuning`; the locks and
liveness the functions here run under are :mod:`segml.workers`.
"""

from __future__ import annotations

import enum
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend

from segml import tracking as keys
from segml.spec import Spec
from segml.tuning import TrialResult

METRICS_ATTR = "segml.metrics"
PARAMS_ATTR = "segml.params"
PARENT_RUN_ATTR = "segml.parent_run_id"
WORKER_ATTR = "segml.worker"
ERROR_ATTR = "segml.error"
WORKERS_ATTR = "segml.n_workers"
FINAL_ATTR = "segml.final"
RUN_NAME_ATTR = "segml.run_name"
KEPT_STORAGE = "optuna.db"


def create_study(
    spec: Spec, objectives: Sequence[str], storage: str | None, study_name: str, seed: int
) -> optuna.Study:
    """A new or resumed multi-objective study with constraints; call it under the study lock.

    The k-th worker to open the study samples with seed ``seed + k``: a lone worker is
    reproducible, and parallel workers do not repeat each other's first trials.
    """
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name=study_name,
        directions=["maximize"] * len(objectives),
        load_if_exists=True,
    )
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))  # optuna-dashboard shows these names
    index = int(study.user_attrs.get(WORKERS_ATTR, 0))
    study.set_user_attr(WORKERS_ATTR, index + 1)
    study.sampler = optuna.samplers.TPESampler(
        seed=seed + index, n_startup_trials=min(10, max(3, spec.search.n_trials // 3))
    )
    return study


def kept_storage(tracking_uri: str) -> str | None:
    """Where a study is kept when no storage is given: ``optuna.db`` beside an embedded
    MLflow store (``sqlite:///mlflow.db``), for ``optuna-dashboard`` and for resuming with
    ``--study``; None (in memory) beside a tracking server."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    folder = Path(tracking_uri.removeprefix(prefix)).resolve().parent
    return f"{prefix}{folder / KEPT_STORAGE}"


def journal_path(url: str) -> str | None:
    """The file of a ``journal:PATH`` storage URL (or a bare ``.log``/``.journal`` path)."""
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return url.removeprefix("journal:")
    return None


def open_storage(url: str | None) -> optuna.storages.BaseStorage | str | None:
    """Optuna storage from a URL: a journal file, else an RDB URL (None: in memory)."""
    path = None if url is None else journal_path(url)
    if path is None:
        return url
    return optuna.storages.JournalStorage(JournalFileBackend(path))


class Step(enum.Enum):
    """What a worker does once no trial is left for it to claim."""

    FINALISE = "finalise"
    WAIT = "wait"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Final:
    """A study's finalisation record: who finalises how many complete trials, and the result."""

    worker: str
    n_trials: int
    chosen: int | None = None
    model_uri: str | None = None
    version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    choice: dict[str, Any] = field(default_factory=dict)
    """What the pick weighed (the finalists) and the granularity checks of the pick."""
    logged_model: str | None = None
    """The model this finalisation logged, kept for a finaliser that takes over from a dead one
    (so that it registers that model, not a second one)."""

    @classmethod
    def of(cls, study: optuna.Study) -> Final | None:
        """The study's record, if any."""
        record = study.user_attrs.get(FINAL_ATTR)
        if record is None:
            return None
        metrics = {k: np.nan if v is None else v for k, v in record["metrics"].items()}
        return cls(**{**record, "metrics": metrics})

    def save(self, study: optuna.Study) -> None:
        """Store the record in the study (as JSON: NaN metrics become null, numpy scalars
        Python ones, which a database or journal storage can write)."""
        metrics = {k: json_float(v) for k, v in self.metrics.items()}
        choice = json.loads(json.dumps(self.choice, default=_plain))
        study.set_user_attr(FINAL_ATTR, asdict(self) | {"metrics": metrics, "choice": choice})


def _plain(value: object) -> object:
    """A numpy scalar (a check's ``passed``, a count) as the Python value JSON can hold."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def reap_lost_trials(study: optuna.Study, worker: str, alive: Callable[[str], bool]) -> None:
    """Fail running trials whose worker has died, so that their budget is spent again."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        if owner != worker and (owner is None or not alive(owner)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def claim_trial(study: optuna.Study, budget: int, worker: str) -> optuna.Trial | None:
    """A new trial owned by ``worker`` while the study's budget lasts; call under the study lock.

    Complete and running trials, and trials that failed on their own, spend the budget;
    trials lost with their worker do not.
    """
    spent = sum(_spends(t) for t in study.get_trials(deepcopy=False))
    if spent >= budget:
        return None
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker)
    return trial


def _spends(trial: optuna.trial.FrozenTrial) -> bool:
    live_or_done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    return trial.state in live_or_done or ERROR_ATTR in trial.user_attrs


def finalise_step(study: optuna.Study, worker: str, alive: Callable[[str], bool]) -> Step:
    """Whether ``worker`` finalises the study, waits, or finds it finalised; call under the
    study lock once no trial is left to claim.

    The first worker to find no running trial claims the finalisation of the complete trials;
    a claim left by a dead worker passes to the next.
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
        return Step.WAIT
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    record = Final.of(study)
    logged = None
    if record is not None and record.n_trials == complete:
        if record.model_uri is not None:
            return Step.DONE
        if alive(record.worker):
            return Step.WAIT
        logged = record.logged_model
    Final(worker, complete, logged_model=logged).save(study)
    return Step.FINALISE


def run_name(study: optuna.Study, name: str) -> str:
    """The name of the study's run: ``name``, unless the study recorded another before."""
    recorded = study.user_attrs.get(RUN_NAME_ATTR)
    if recorded is None:
        study.set_user_attr(RUN_NAME_ATTR, name)
    return recorded or name


def enqueue(study: optuna.Study, trials: Sequence[dict[str, Any]]) -> None:
    """Trials to run before the sampler's, each once per study (a resumed study that enqueues
    them again does not repeat them)."""
    for params in trials:
        study.enqueue_trial(params, skip_if_exists=True)


def record_result(trial: optuna.Trial, result: TrialResult) -> None:
    """Keep an evaluated trial's constraints, metrics and namespaced params on the trial, for
    :func:`completed_results` of any worker."""
    for name, value in result.constraints.items():
        trial.set_constraint(name, value)
    trial.set_user_attr(METRICS_ATTR, {k: json_float(v) for k, v in result.metrics.items()})
    trial.set_user_attr(PARAMS_ATTR, {k: v for k, v in result.params.items()})


def record_error(trial: optuna.Trial, error: Exception) -> None:
    """Mark a trial as failed on its own (it spends the budget), with the start of its error."""
    trial.set_user_attr(ERROR_ATTR, str(error)[:500])


def first_error(study: optuna.Study) -> str | None:
    """The error of the first trial that failed on its own (None if none did)."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if ERROR_ATTR in trial.user_attrs:
            return f"trial {trial.number}: {trial.user_attrs[ERROR_ATTR]}"
    return None


def completed_results(study: optuna.Study) -> list[TrialResult]:
    """Every completed trial of the study (from any worker or earlier run) as a TrialResult."""
    results = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if METRICS_ATTR not in trial.user_attrs:
            continue
        metrics = {
            k: (np.nan if v is None else float(v))
            for k, v in trial.user_attrs[METRICS_ATTR].items()
        }
        params = trial.user_attrs[PARAMS_ATTR]
        results.append(
            TrialResult(
                trial.number,
                params[keys.PARAM_FAMILY],
                params,
                metrics,
                dict(trial.constraints),
                tuple(trial.values),
            )
        )
    return results


def json_float(value: float) -> float | None:
    """A metric as JSON holds it: NaN and infinities become null."""
    return float(value) if np.isfinite(value) else None
