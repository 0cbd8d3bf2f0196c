"""Distributed tuning on the real engines: concurrent workers on one Optuna study (PostgreSQL
and journal file), and segml against an MLflow tracking server backed by PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from docs.screenshots import mlflow_server
from segml import tracking as keys
from segml.cli import app
from segml.experiment import tune
from segml.locks import model_lock
from segml.registry import CHALLENGER, ModelRef, load_segmenter, resolve_ref
from segml.spec import load_spec
from segml.studies import (
    FINAL_ATTR,
    PARENT_RUN_ATTR,
    WORKER_ATTR,
    Final,
    Step,
    claim_trial,
    finalise_step,
    open_storage,
    reap_lost_trials,
)
from segml.synthetic import synthetic_customers, synthetic_spec
from segml.workers import Coordinator, coordinator
from tests.postgres import Postgres, running_postgres

pytestmark = pytest.mark.slow  # make test-fast leaves this module out

BUDGET = 6
STUDY = "shared"
SEARCH = {
    "seed": 3,
    "reduction": {"reducer": "none"},
    "bootstrap_search": 3,
    "bootstrap_final": 4,
}
runner = CliRunner()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def tracking_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a PostgreSQL backend store, serving artifacts from a tmp folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    backend = postgres.create_database("mlflow")
    with mlflow_server(backend, folder / "artifacts", folder / "server.log") as uri:
        yield uri


def _spec_file(folder: Path, name: str) -> Path:
    synthetic_customers(400, seed=1).to_csv(folder / "customers.csv", index=False)
    path = folder / f"{name}.yaml"
    spec = synthetic_spec("customers.csv", name=name, search=SEARCH)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _two_workers(
    spec: Path, storage: str, tracking_uri: str
) -> list[subprocess.CompletedProcess[str]]:
    """Start two ``segml tune`` workers on one study at the same time; wait for both."""
    command = [
        sys.executable,
        "-m",
        "segml",
        "tune",
        str(spec),
        "--n-trials",
        str(BUDGET),
        "--families",
        "kmeans",
        "--storage",
        storage,
        "--study",
        STUDY,
        "--tracking-uri",
        tracking_uri,
    ]
    workers = [
        subprocess.Popen(
            command, cwd=spec.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    return [
        subprocess.CompletedProcess(command, w.returncode, out, err)
        for w, (out, err) in zip(workers, outputs, strict=True)
    ]


def _assert_one_study(
    study: optuna.Study,
    tracking_uri: str,
    model: str,
    finished: list[subprocess.CompletedProcess[str]],
) -> None:
    """One study with the budget split between both workers, one parent run holding every
    trial as a nested run, one registered version, and one finaliser."""
    for worker in finished:
        assert worker.returncode == 0, worker.stderr[-3000:]
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * BUDGET
    owners = Counter(t.user_attrs[WORKER_ATTR] for t in trials)
    assert len(owners) == 2, f"both workers ran trials: {owners}"

    parent = study.user_attrs[PARENT_RUN_ATTR]
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name(model)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    roles = Counter(r.data.tags.get(keys.TAG_ROLE) for r in runs)
    assert roles == {keys.ROLE_STUDY: 1, keys.ROLE_TRIAL: BUDGET}
    nested = [r for r in runs if r.data.tags.get(keys.TAG_ROLE) == keys.ROLE_TRIAL]
    assert {r.data.tags[keys.TAG_PARENT] for r in nested} == {parent}
    assert sorted(int(r.data.tags[keys.TAG_TRIAL]) for r in nested) == list(range(BUDGET))

    versions = client.search_model_versions(f"name='{model}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", parent)]
    assert str(client.get_model_version_by_alias(model, CHALLENGER).version) == "1"
    assert study.user_attrs[FINAL_ATTR]["worker"] in owners
    for worker in finished:
        assert f"parent run: {parent}" in worker.stdout
        assert f"registered: {model} v1" in worker.stdout


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(postgres: Postgres, tmp_path: Path) -> None:
    """Optuna storage and MLflow tracking store both on PostgreSQL (no tracking server)."""
    storage = postgres.create_database("optuna")
    tracking_uri = postgres.create_database("tracking")
    spec = _spec_file(tmp_path, "distributed")
    finished = _two_workers(spec, storage, tracking_uri)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    _assert_one_study(study, tracking_uri, "distributed", finished)


@pytest.mark.slow
def test_two_workers_share_one_journal_study(tmp_path: Path) -> None:
    """Journal file storage; then a late worker finds the study finalised and runs nothing."""
    storage = f"journal:{tmp_path / 'study.journal'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _spec_file(tmp_path, "journaled")
    finished = _two_workers(spec, storage, tracking_uri)
    late = tune(
        load_spec(spec),
        n_trials=BUDGET,
        families=["kmeans"],
        storage=storage,
        study_name=STUDY,
        tracking_uri=tracking_uri,
    )
    assert not late.finalised_here
    assert (late.n_trials, late.model_version) == (BUDGET, "1")
    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    assert late.parent_run_id == study.user_attrs[PARENT_RUN_ATTR]
    _assert_one_study(study, tracking_uri, "journaled", finished)


@pytest.fixture(scope="module")
def served(tracking_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny ``segml tune --no-register`` against the tracking server; its parent run id."""
    spec = _spec_file(tmp_path_factory.mktemp("served"), "served")
    command = ["tune", str(spec), "--n-trials", "3", "--families", "kmeans", "--no-register"]
    tuned = runner.invoke(app, [*command, "--tracking-uri", tracking_server])
    assert tuned.exit_code == 0, tuned.output
    return tuned.output.split("parent run: ")[1].split()[0]


def test_tune_on_a_tracking_server(tracking_server: str, served: str) -> None:
    client = mlflow.MlflowClient(tracking_server)
    parent = client.get_run(served)
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through it"
    assert parent.data.metrics[keys.STUDY_N_TRIALS] == 3
    nested = client.search_runs(
        [parent.info.experiment_id], f"tags.`{keys.TAG_PARENT}` = '{served}'"
    )
    assert len(nested) == 3
    segmenter = load_segmenter(ModelRef(parent.data.tags[keys.TAG_MODEL_URI]))
    assigned = segmenter.predict(synthetic_customers(50, seed=2))
    assert set(assigned["segment_id"]) <= {-1, *segmenter.catalog["segment_id"]}


def test_register_on_a_tracking_server(tracking_server: str, served: str) -> None:
    registered = runner.invoke(app, ["register", served, "--tracking-uri", tracking_server])
    assert registered.exit_code == 0, registered.output
    again = runner.invoke(app, ["register", served, "--tracking-uri", tracking_server])
    assert "registered served v1" in again.output, "registering a run again is a no-op"
    client = mlflow.MlflowClient(tracking_server, registry_uri=tracking_server)
    assert client.get_model_version_by_alias("served", CHALLENGER).run_id == served
    assert load_segmenter(resolve_ref("models:/served@challenger", client=client))


@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_lost_worker_passes_on_its_trial_and_its_finalisation(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A dead worker's running trial is failed and its budget reclaimed; its claim on the
    finalisation passes to a live worker; the study lock excludes while held."""
    if kind == "postgres":
        storage = request.getfixturevalue("postgres").create_database("liveness")
    else:
        storage = f"journal:{tmp_path / 'liveness.journal'}"
    first, second = coordinator(storage, "s"), coordinator(storage, "s")
    with first.lock():
        study = optuna.create_study(
            storage=open_storage(storage), study_name="s", directions=["maximize"]
        )
    trial = claim_trial(study, 1, first.worker)
    assert trial is not None and claim_trial(study, 1, second.worker) is None
    assert second.alive(first.worker)
    assert _blocks(first, second)
    first.close()
    assert not second.alive(first.worker)
    reap_lost_trials(study, second.worker, second.alive)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    mine = claim_trial(study, 1, second.worker)
    assert mine is not None
    study.tell(mine, [1.0])
    Final(first.worker, 1).save(study)
    assert finalise_step(study, second.worker, second.alive) is Step.FINALISE
    second.close()


def _blocks(holder: Coordinator, waiter: Coordinator) -> bool:
    """True when ``waiter`` cannot take the study lock while ``holder`` has it."""
    acquired = threading.Event()

    def take() -> None:
        with waiter.lock():
            acquired.set()

    with holder.lock():
        thread = threading.Thread(target=take)
        thread.start()
        blocked = not acquired.wait(0.5)
    thread.join(timeout=10)
    return blocked and acquired.is_set()


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path: Path) -> None:
    """The embedded SQLite storage with two workers at once: segml's file locks serialise
    their claims, so the study, the runs and the registered version come out as with a
    journal (Optuna warns against SQLite for heavy parallel use; two workers are fine)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _spec_file(tmp_path, "embedded")
    finished = _two_workers(spec, storage, tracking_uri)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    _assert_one_study(study, tracking_uri, "embedded", finished)


def test_registry_actions_on_a_postgres_store_take_turns(postgres: Postgres) -> None:
    """The per-model lock on a PostgreSQL tracking store: a second holder of the same model's
    lock waits for the first; another model's lock does not."""
    url = postgres.create_database("registry_locks")
    held = threading.Event()

    def second() -> None:
        with model_lock(url, "cdnow"):
            held.set()

    with model_lock(url, "cdnow"):
        waiting = threading.Thread(target=second)
        waiting.start()
        with model_lock(url, "retail"):
            pass  # another model's actions go on
        assert not held.wait(0.5), "two holders of one model's lock"
    assert held.wait(10), "the lock was not passed on"
    waiting.join()
