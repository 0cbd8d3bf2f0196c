"""Runs that behave like MLflow runs: real durations, user and source, readable distinct names,
marks on the trials, nesting under ``mlflow run``, and the Optuna study kept beside the store."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow.entities import Run

from segml import tracking as keys
from segml.experiment import TuneResult, tune
from segml.model import Segmenter, log_segment_model
from segml.registry import resolve_ref
from segml.scoring import run_scoring
from segml.spec import load_spec
from segml.studies import KEPT_STORAGE, Final
from segml.synthetic import synthetic_customers, synthetic_spec
from segml.tuning import objective_keys

from .conftest import EXPERIMENTS, ROOT

SEARCH = {
    "seed": 3,
    "reduction": {"reducer": "none"},
    "bootstrap_search": 2,
    "bootstrap_final": 2,
    "families": {"kmeans": {"n_clusters": 5}},
}
CONTEXT_TAGS = ("mlflow.user", "mlflow.source.name", "mlflow.source.type")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    synthetic_customers(600, seed=1).to_csv(folder / "customers.csv", index=False)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(synthetic_spec("customers.csv", "runs", search=SEARCH)))
    return path


@pytest.fixture(scope="module")
def tuned(spec_path: Path) -> tuple[TuneResult, TuneResult, str]:
    """Two tunes of the same spec into one store."""
    uri = f"sqlite:///{spec_path.parent / 'mlflow.db'}"
    first = tune(load_spec(spec_path), n_trials=3, tracking_uri=uri, register=False)
    second = tune(load_spec(spec_path), n_trials=3, tracking_uri=uri, register=False)
    return first, second, uri


def _trials(client: mlflow.MlflowClient, result: TuneResult) -> list[Run]:
    found = client.search_runs(
        [result.experiment_id], f"tags.`{keys.TAG_PARENT}` = '{result.parent_run_id}'"
    )
    return list(found)


def test_trial_runs_last_as_long_as_their_trials(
    tuned: tuple[TuneResult, TuneResult, str],
) -> None:
    first, _, uri = tuned
    trials = _trials(mlflow.MlflowClient(uri), first)
    assert len(trials) == 3
    for run in trials:
        seconds = (run.info.end_time - run.info.start_time) / 1000
        # times are in milliseconds: allow for their rounding
        assert seconds >= run.data.metrics[keys.COST_TRIAL_SECONDS] - 0.002, run.info.run_name
        assert run.info.status == "FINISHED"


def test_runs_carry_user_and_source_like_fluent_runs(
    tuned: tuple[TuneResult, TuneResult, str],
) -> None:
    first, _, uri = tuned
    client = mlflow.MlflowClient(uri)
    for run in [client.get_run(first.parent_run_id), *_trials(client, first)]:
        assert all(run.data.tags.get(tag) for tag in CONTEXT_TAGS), run.info.run_name


def test_study_runs_have_distinct_readable_names(
    tuned: tuple[TuneResult, TuneResult, str],
) -> None:
    first, second, uri = tuned
    client = mlflow.MlflowClient(uri)
    names = [client.get_run(r.parent_run_id).info.run_name for r in (first, second)]
    assert names[0] != names[1] and all(n.startswith("runs 20") for n in names), names


def test_the_experiment_opens_in_the_model_training_view(
    tuned: tuple[TuneResult, TuneResult, str],
) -> None:
    experiment = mlflow.MlflowClient(tuned[2]).get_experiment(tuned[0].experiment_id)
    assert experiment.tags[keys.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_trials_are_marked_pareto_and_exactly_one_chosen(
    tuned: tuple[TuneResult, TuneResult, str],
) -> None:
    first, _, uri = tuned
    trials = _trials(mlflow.MlflowClient(uri), first)
    chosen = [r for r in trials if r.data.tags[keys.TAG_CHOSEN] == "true"]
    assert len(chosen) == 1 and chosen[0].data.tags[keys.TAG_TRIAL] == str(first.chosen.number)
    marks = [r.data.tags[keys.TAG_PARETO] for r in trials]
    assert set(marks) <= {"true", "false"} and "true" in marks


def test_the_study_run_logs_its_dataset_with_its_source(
    tuned: tuple[TuneResult, TuneResult, str], spec_path: Path
) -> None:
    first, _, uri = tuned
    (logged,) = mlflow.MlflowClient(uri).get_run(first.parent_run_id).inputs.dataset_inputs
    assert logged.dataset.name == "customers.csv" and logged.dataset.digest
    assert str(spec_path.parent / "customers.csv") in logged.dataset.source


def test_the_optuna_study_is_kept_beside_the_store_with_named_objectives(
    tuned: tuple[TuneResult, TuneResult, str], spec_path: Path
) -> None:
    first, second, _ = tuned
    storage = f"sqlite:///{spec_path.parent / KEPT_STORAGE}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert {first.study_name, second.study_name} <= names and first.study_name != second.study_name
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    assert study.metric_names == list(objective_keys(True)) and len(study.trials) == 3


def test_mlflow_run_project_run_holds_exactly_one_study(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under ``mlflow run . -e tune``: the project's run is in MLFLOW_RUN_ID."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = keys.connect(uri)
    project = client.create_run(keys.experiment_id(client, "Default")).info
    monkeypatch.setenv(keys.PROJECT_RUN_ENV, project.run_id)
    result = tune(load_spec(spec_path), n_trials=2, tracking_uri=uri, register=False)
    studies = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_STUDY}'",
    )
    assert [s.info.run_id for s in studies] == [result.parent_run_id]
    assert studies[0].data.tags[keys.TAG_PARENT] == project.run_id
    assert studies[0].info.experiment_id == project.experiment_id


@pytest.mark.slow
def test_mlflow_run_command_leaves_one_study_under_the_project_run(
    spec_path: Path, tmp_path: Path
) -> None:
    """The real ``mlflow run . -e tune`` (local environment): one study, nested under the
    project's run, in the experiment the command names; nothing in Default."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop(keys.PROJECT_RUN_ENV, None)
    command = [str(bin_dir / "mlflow"), "run", str(ROOT), "-e", "tune", "--env-manager", "local"]
    params = ["-P", f"spec={spec_path}", "-P", "n_trials=2", "-P", "families=kmeans"]
    done = subprocess.run(
        [*command, *params, "--experiment-name", "runs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    client = keys.connect(uri)
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    runs = client.search_runs(list(experiments.values()))
    studies = [r for r in runs if r.data.tags.get(keys.TAG_ROLE) == keys.ROLE_STUDY]
    projects = [r for r in runs if keys.TAG_ROLE not in r.data.tags]
    assert len(studies) == 1 and len(projects) == 1
    assert studies[0].data.tags[keys.TAG_PARENT] == projects[0].info.run_id
    assert studies[0].info.experiment_id == experiments["runs"]
    assert not client.search_runs([experiments.get("Default", "0")])


def test_a_scoring_run_logs_its_question_its_data_and_its_real_duration(
    cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path: Path
) -> None:
    segmenter, table = cdnow_model
    client = keys.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(keys.experiment_id(client, "cdnow_rfm")).info.run_id
    client.create_registered_model("cdnow_rfm")
    client.create_model_version("cdnow_rfm", log_segment_model(segmenter, table, run_id), run_id)
    source = EXPERIMENTS / "data" / "cdnow_master.txt"
    summary, scoring = run_scoring(
        client,
        resolve_ref("models:/cdnow_rfm/1", client=client),
        source,
        tmp_path / "scores.parquet",
        reference_date=dt.date(1998, 6, 30),
    )
    run = client.get_run(scoring)
    params = run.data.params
    assert params["reference_date"] == "1998-06-30" and params["input"] == str(source)
    assert params["model"] == "cdnow_rfm v1" and params["engine"] == "pandas"
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name == "cdnow_master.txt as of 1998-06-30" and data.dataset.digest
    assert all(run.data.tags.get(tag) for tag in CONTEXT_TAGS)
    assert run.info.end_time - run.info.start_time >= summary.seconds * 1000 - 2


def test_a_finalisation_record_with_numpy_values_is_kept_in_a_database(tmp_path: Path) -> None:
    """The kept study is a database: the pick's checks (numpy booleans) must be JSON."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", directions=["maximize"])
    checks = {"checks": [{"passed": np.bool_(True), "segments": np.int64(2)}]}
    Final("worker", 3, 1, choice=checks).save(study)
    record = Final.of(study)
    assert record is not None and record.choice == {"checks": [{"passed": True, "segments": 2}]}
