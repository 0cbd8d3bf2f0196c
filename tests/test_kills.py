"""Interruptions and races: ``tune``, ``score``, ``promote`` and ``rollback`` SIGKILLed at each
step boundary and at random moments, then rerun; two ``promote``s at once.

Every command runs as a real ``segml`` process, forked from one that imported segml once
(:mod:`tests.forks`): a kill is a real SIGKILL, and a rerun a new process on what it left.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
import yaml

from segml import studies
from segml import tracking as keys
from segml.registry import CHALLENGER, CHAMPION, PREVIOUS
from segml.synthetic import synthetic_customers, synthetic_spec

from .test_bad_inputs import assert_store_whole

pytestmark = pytest.mark.slow  # about a minute on 2 idle cores; make test-fast leaves it out
ROOT = Path(__file__).resolve().parents[1]
MODEL = "synthetic"
STUDY = "kills"
TRIALS = 4
KILLED = -9
TUNE_STEPS = {
    "store creation": ("alembic.runtime.migration:HeadMaintainer.update_to_step", 10, "before"),
    "trial tell": ("optuna.study:Study.tell", 2, "after"),
    "trial logging": ("mlflow.tracking:MlflowClient.set_terminated", 2, "before"),
    "registration": ("mlflow.tracking:MlflowClient.create_model_version", 1, "after"),
    "recording": ("mlflow.tracking:MlflowClient.set_registered_model_alias", 1, "after"),
}
"""Where the successive runs of one tune die: amid MLflow's creation of the new store (its
10th schema migration run, not recorded); with trial 1 told to the study but its run not
logged; with trial 3's run logged but not ended (trial 2's ended first); right after the
model version is created; after registering (its alias set) before the study records it."""
RANDOM_TUNE_KILLS = 20
SCORE_STEPS = {
    "run created": ("mlflow.tracking:MlflowClient.create_run", 1, "after"),
    "params logged": ("mlflow.tracking:MlflowClient.log_batch", 1, "after"),
    "tables logged": ("mlflow.tracking:MlflowClient.log_table", 1, "after"),
    "before the run ends": ("mlflow.tracking:MlflowClient.set_terminated", 1, "before"),
}
REGISTRY_WRITES = ("set_model_version_tag", "set_registered_model_alias")
RACES = 20


class Forks:
    """A running :mod:`tests.forks`: runs segml commands as forked processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forks"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read() == "ready"

    def run(self, *jobs: dict[str, Any]) -> list[int]:
        """Run ``jobs`` at once; each gets a log file (its path in ``job["log"]``)."""
        for job in jobs:
            self.count += 1
            job.setdefault("log", str(self.folder / f"job-{self.count:03d}.log"))
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(list(jobs)) + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> Any:
        assert self.process.stdout is not None
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _log(job: dict[str, Any]) -> str:
    return Path(job["log"]).read_text(encoding="utf-8")[-3000:]


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forks]:
    running = Forks(tmp_path_factory.mktemp("forks"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The spec (300 customers, k-means, 4 trials) and a new empty store to copy."""
    folder = tmp_path_factory.mktemp("bench")
    synthetic_customers(300, seed=1).to_csv(folder / "customers.csv", index=False)
    search = {
        "seed": 3,
        "families": {"kmeans": {}},
        "reduction": {"reducer": "none"},
        "n_trials": TRIALS,
        "bootstrap_search": 2,
        "bootstrap_final": 2,
    }
    spec = folder / "spec.yaml"
    constraints = {"min_segments": 4, "max_segments": 6}  # a short scan of segment counts
    spec.write_text(
        yaml.safe_dump(synthetic_spec("customers.csv", search=search, constraints=constraints))
    )
    empty = folder / "empty" / "mlflow.db"
    empty.parent.mkdir()
    keys.connect(f"sqlite:///{empty}")
    return {"folder": folder, "spec": spec, "empty": empty}


def _store(bench: dict[str, Any], folder: Path, copy: Path | None = None) -> str:
    """A store of its own in ``folder``: a copy of ``copy`` (default: an empty store)."""
    folder.mkdir(parents=True)
    shutil.copyfile(copy or bench["empty"], folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def _tune(bench: dict[str, Any], uri: str, **job: Any) -> dict[str, Any]:
    argv = ["tune", str(bench["spec"]), "--study", STUDY, "--tracking-uri", uri]
    return {"argv": argv, **job}


@pytest.fixture(scope="module")
def tuned(bench: dict[str, Any], forks: Forks) -> dict[str, Any]:
    """An uninterrupted tune: its store (v1 registered) and how long it took."""
    uri = _store(bench, bench["folder"] / "tuned")
    started = time.monotonic()
    job = _tune(bench, uri)
    assert forks.run(job) == [0], _log(job)
    return {"uri": uri, "seconds": time.monotonic() - started}


def assert_tune_whole(uri: str) -> None:
    """The invariants of a finished tune, however often it was killed and rerun."""
    assert_store_whole(uri)
    database = Path(uri.removeprefix("sqlite:///"))
    assert not list(database.parent.glob(".mlflow.db.*")), "a store half-built beside it"
    storage = f"sqlite:///{database.parent / 'optuna.db'}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(complete) == TRIALS
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    parents = client.search_runs(
        [experiment], filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_STUDY}'"
    )
    assert len(parents) == 1, f"{len(parents)} study runs"
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs[studies.PARENT_RUN_ATTR]
    assert parent.info.status == "FINISHED"
    trials = client.search_runs(
        [experiment], filter_string=f"tags.`{keys.TAG_PARENT}` = '{parent.info.run_id}'"
    )
    finished = sorted(
        int(r.data.tags[keys.TAG_TRIAL]) for r in trials if r.info.status == "FINISHED"
    )
    assert finished == sorted(complete), "each complete trial has exactly one finished run"
    assert all(
        keys.QUALITY_SILHOUETTE in r.data.metrics for r in trials if r.info.status == "FINISHED"
    )
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 1, f"{len(versions)} versions registered"
    version = versions[0]
    assert version.run_id == parent.info.run_id
    assert client.get_model_version_by_alias(MODEL, CHALLENGER).version == version.version
    final = studies.Final.of(study)
    assert final is not None and final.version == str(version.version)


def test_tune_killed_at_each_step_and_rerun_is_whole(bench: dict[str, Any], forks: Forks) -> None:
    """One tune killed at each step in turn, each kill in the rerun of the one before (so the
    later ones land in resumed studies), then rerun to the end."""
    folder = bench["folder"] / "steps"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    for step, die in TUNE_STEPS.items():
        job = _tune(bench, uri, die=list(die))
        assert forks.run(job) == [KILLED], (step, _log(job))
    rerun = _tune(bench, uri)
    assert forks.run(rerun) == [0], _log(rerun)
    assert_tune_whole(uri)


def test_tune_killed_at_random_moments_and_rerun_is_whole(
    bench: dict[str, Any], forks: Forks, tuned: dict[str, Any]
) -> None:
    """Two lanes of tunes, each killed at a random moment of a whole tune's time and rerun on
    what the last one left (a lane whose tune finished starts again on a new store), until
    RANDOM_TUNE_KILLS kills; then a last rerun per lane."""
    rng = random.Random(28)
    stores = iter(_store(bench, bench["folder"] / f"random-{n}") for n in range(99))
    lanes, done, kills = [next(stores), next(stores)], [], 0
    while kills < RANDOM_TUNE_KILLS:
        jobs = [_tune(bench, uri, kill_after=rng.uniform(0, tuned["seconds"])) for uri in lanes]
        for n, (job, status) in enumerate(zip(jobs, forks.run(*jobs), strict=True)):
            assert status in (0, KILLED), _log(job)
            kills += status == KILLED
            if status == 0:
                done.append(lanes[n])
                lanes[n] = next(stores)
    jobs = [_tune(bench, uri) for uri in lanes]
    for job, status in zip(jobs, forks.run(*jobs), strict=True):
        assert status == 0, _log(job)
    for uri in done + lanes:
        assert_tune_whole(uri)


def _scoring_runs(uri: str) -> dict[str, int]:
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(MODEL).experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_SCORING}'",
    )
    return pd.Series([r.info.status for r in runs], dtype=object).value_counts().to_dict()


def test_score_killed_while_logging_and_rerun_leaves_no_run_running(
    bench: dict[str, Any], forks: Forks, tuned: dict[str, Any]
) -> None:
    """One store; a score killed at each step of its logging and at random moments, each
    followed by its rerun: the output is the uninterrupted one, and no run stays RUNNING."""
    uri = _store(bench, bench["folder"] / "score", Path(tuned["uri"].removeprefix("sqlite:///")))
    out = bench["folder"] / "score"
    base = ["score", "--input", str(bench["folder"] / "customers.csv"), "--tracking-uri", uri]
    base += ["--model", f"models:/{MODEL}/1"]
    alone = {"argv": [*base, "--output", str(out / "alone.parquet")]}
    started = time.monotonic()
    assert forks.run(alone) == [0], _log(alone)
    seconds = time.monotonic() - started
    rng = random.Random(9)
    command = [*base, "--output", str(out / "scores.parquet")]
    kills = [{"die": list(die)} for die in SCORE_STEPS.values()]
    kills.append({"kill_after": rng.uniform(0, seconds)})
    completed = 1  # each command that exits 0 leaves one FINISHED run
    for kill in kills:
        killed = {"argv": command, **kill}
        (status,) = forks.run(killed)
        assert status in (0, KILLED), _log(killed)
        rerun = {"argv": command}
        assert forks.run(rerun) == [0], (kill, _log(rerun))
        completed += 1 + (status == 0)
        assert (out / "scores.parquet").read_bytes() == (out / "alone.parquet").read_bytes()
        assert_store_whole(uri)
        assert _scoring_runs(uri).get("FINISHED") == completed, kill


@pytest.fixture(scope="module")
def registry(bench: dict[str, Any], tuned: dict[str, Any]) -> Path:
    """A store whose model has three reviewed versions of the tuned model: v1 champion."""
    database = Path(tuned["uri"].removeprefix("sqlite:///"))
    uri = _store(bench, bench["folder"] / "registry", database)
    client = keys.connect(uri)  # MLflow finds a version's logged model in the current store
    first = client.get_model_version(MODEL, "1")
    for _ in range(2):
        client.create_model_version(MODEL, first.source, run_id=first.run_id)
    for version in ("1", "2", "3"):
        client.set_model_version_tag(MODEL, version, keys.TAG_VERDICT, keys.VERDICT_PASSED)
    client.set_registered_model_alias(MODEL, CHAMPION, "1")
    client.set_registered_model_alias(MODEL, CHALLENGER, "2")
    return Path(uri.removeprefix("sqlite:///"))


def _aliases(uri: str) -> dict[str, str]:
    model = mlflow.MlflowClient(uri, registry_uri=uri).get_registered_model(MODEL)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _registry_kills(
    bench: dict[str, Any], forks: Forks, base: Path, argv: list[str], writes: dict[str, int]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Kill ``argv`` right after each of its registry writes (``writes``: how many calls of
    each MlflowClient method), each on its own copy of ``base``; rerun each; return the
    stores and reruns by write."""
    cases = {}
    for method, count in writes.items():
        for n in range(1, count + 1):
            uri = _store(bench, bench["folder"] / f"{argv[0]}-{method}-{n}", base)
            die = [f"mlflow.tracking:MlflowClient.{method}", n, "after"]
            cases[f"{method} {n}"] = (uri, {"argv": [*argv, "--tracking-uri", uri], "die": die})
    for (write, (_, job)), status in zip(
        cases.items(), forks.run(*(job for _, job in cases.values())), strict=True
    ):
        assert status == KILLED, (write, _log(job))
    reruns = {write: {"argv": job["argv"]} for write, (_, job) in cases.items()}
    statuses = forks.run(*reruns.values())
    failed = {
        w: _log(job)[-300:] for (w, job), s in zip(reruns.items(), statuses, strict=True) if s
    }
    assert not failed, failed
    return {write: (uri, reruns[write]) for write, (uri, _) in cases.items()}


def test_promote_killed_after_each_write_completes_when_rerun(
    bench: dict[str, Any], forks: Forks, registry: Path
) -> None:
    promote = ["promote", CHALLENGER, "--model", MODEL, "--reason", "quarterly refresh"]
    writes = {"set_model_version_tag": 4, "set_registered_model_alias": 2}
    writes["delete_registered_model_alias"] = 1
    for write, (uri, rerun) in _registry_kills(bench, forks, registry, promote, writes).items():
        assert _log(rerun).strip() == f"{MODEL}: champion v2 (previous v1)", write
        assert _aliases(uri) == {CHAMPION: "2", PREVIOUS: "1"}, write
        tags = mlflow.MlflowClient(uri, registry_uri=uri).get_model_version(MODEL, "2").tags
        assert tags["segml.promote.reason"] == "quarterly refresh", write
        assert_store_whole(uri)


def test_rollback_killed_after_each_write_completes_when_rerun(
    bench: dict[str, Any], forks: Forks, registry: Path
) -> None:
    promoted = bench["folder"] / "promoted.db"
    shutil.copyfile(registry, promoted)
    client = mlflow.MlflowClient(f"sqlite:///{promoted}", registry_uri=f"sqlite:///{promoted}")
    client.set_registered_model_alias(MODEL, PREVIOUS, "1")
    client.set_registered_model_alias(MODEL, CHAMPION, "2")
    client.delete_registered_model_alias(MODEL, CHALLENGER)
    rollback = ["rollback", "--model", MODEL, "--reason", "bad week"]
    writes = {"set_model_version_tag": 6, "set_registered_model_alias": 1}
    writes["delete_registered_model_alias"] = 1
    for write, (uri, rerun) in _registry_kills(bench, forks, promoted, rollback, writes).items():
        assert _log(rerun).strip() == f"{MODEL}: champion v1 (rolled back)", write
        assert _aliases(uri) == {CHAMPION: "1"}, write
        tags = mlflow.MlflowClient(uri, registry_uri=uri).get_model_version(MODEL, "1").tags
        assert tags["segml.rollback.reason"] == "bad week", write


def test_two_promotes_at_once_lose_no_update(
    bench: dict[str, Any], forks: Forks, registry: Path
) -> None:
    """Promote v2 and v3 at the same moment, RACES times: one ends champion, the other
    previous, whichever came second; v1 keeps no alias."""
    lost = []
    for race in range(RACES):
        uri = _store(bench, bench["folder"] / f"race-{race}", registry)
        start = time.time() + 0.05
        jobs = [
            {"argv": ["promote", v, "--model", MODEL, "--tracking-uri", uri], "start_at": start}
            for v in ("2", "3")
        ]
        if forks.run(*jobs) != [0, 0]:
            lost.append((race, [_log(job)[-200:] for job in jobs]))
            continue
        said = dict(
            re.findall(r"champion v(\d+) \(previous v(\d+)\)", _log(jobs[0]) + _log(jobs[1]))
        )
        first = next(v for v, previous in said.items() if previous == "1")
        second = next(v for v in said if v != first)
        if said[second] != first or _aliases(uri) != {CHAMPION: second, PREVIOUS: first}:
            lost.append((race, said, _aliases(uri)))
    assert not lost, f"{len(lost)} of {RACES} races failed or lost an update: {lost}"
