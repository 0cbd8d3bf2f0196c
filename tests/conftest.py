"""Shared fixtures: synthetic customers with known segments, bundled data, a throwaway store."""

from __future__ import annotations

import importlib
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from segml import tracking as keys
from segml.model import Segmenter, log_segment_model
from segml.spec import load_spec
from segml.synthetic import synthetic_customers, synthetic_spec
from tests.models import PARAMS, fit_segmenter, fit_spec

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
CATALOGUE = pytest.StashKey[list[tuple[str, str, int, str]]]()
"""Outcomes of the bad-input catalogue (tests/test_bad_inputs.py): case, command, code, line."""


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[tuple[Path, Any]]]:
    """Record segml's flushes to disk: call it with ``seen`` (a function of the flushed path)
    to get the list it fills, in order, with each flushed path and what ``seen`` returned."""

    def record(seen: Callable[[Path], Any] = lambda path: None) -> list[tuple[Path, Any]]:
        log: list[tuple[Path, Any]] = []
        flush = os.fdatasync

        def recording(descriptor: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
            log.append((path, seen(path)))
            flush(descriptor)

        monkeypatch.setattr("segml._io._flush", recording)
        return log

    return record


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Import a script of ``benchmarks/`` as it imports its neighbours (its folder on the path)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the bad-input catalogue's outcomes, one row per input and command, and counts."""
    rows = terminalreporter.config.stash.get(CATALOGUE, [])
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("bad-input catalogue")
    wide = max(len(row[0]) for row in rows), max(len(row[1]) for row in rows)
    write(f"{'case':<{wide[0]}}  {'command':<{wide[1]}}  exit  outcome")
    for case, command, code, outcome in rows:
        write(f"{case:<{wide[0]}}  {command:<{wide[1]}}  {code:>4}  {outcome[:120]}")
    cases = len({row[0] for row in rows})
    codes = ", ".join(f"exit {c}: {n}" for c, n in sorted(Counter(r[2] for r in rows).items()))
    write(f"{cases} inputs tried, {len(rows)} command runs ({codes}); 0 partial outputs")


@pytest.fixture(scope="session")
def cdnow_spec() -> Path:
    return EXPERIMENTS / "cdnow.yaml"


@pytest.fixture(scope="session")
def cdnow_model(cdnow_spec: Path) -> tuple[Segmenter, pd.DataFrame]:
    """k-means with 6 segments fitted on the bundled CDNOW log as of 1997, and its customers."""
    return fit_spec(load_spec(cdnow_spec), "kmeans", {"n_clusters": 6})


@pytest.fixture(scope="session")
def clean_customers() -> pd.DataFrame:
    """2,000 customers in 5 well-separated segments (truth in ``true_segment``)."""
    return synthetic_customers(2_000, seed=1)


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec dict as YAML in ``tmp_path`` and return its path."""

    def write(spec: dict, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def synthetic_spec_file(
    tmp_path: Path, clean_customers: pd.DataFrame, write_spec: Callable[..., Path]
) -> Path:
    """A customers spec over the clean synthetic table, written to ``tmp_path``."""
    clean_customers.to_csv(tmp_path / "customers.csv", index=False)
    return write_spec(synthetic_spec("customers.csv"))


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An embedded MLflow store of the test's own, selected through the environment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Segmenter]:
    """One model per family, trained on 3,000 customers of the five known segments."""
    tmp = tmp_path_factory.mktemp("models")
    train = synthetic_customers(3_000, seed=1)
    return {
        family: fit_segmenter(tmp / family, family, train, synthetic_spec("customers.csv"))
        for family in PARAMS
    }


@pytest.fixture(scope="module")
def registered(segmenters, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The k-means model logged, registered as ``synthetic`` v1 and made champion."""
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = keys.connect(uri)
    segmenter = segmenters["kmeans"]
    run_id = client.create_run(keys.experiment_id(client, "synthetic")).info.run_id
    model_uri = log_segment_model(segmenter, synthetic_customers(200, seed=1), run_id)
    client.create_registered_model("synthetic")
    version = client.create_model_version("synthetic", model_uri, run_id=run_id).version
    client.set_registered_model_alias("synthetic", "champion", version)
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(synthetic_spec("customers.csv")), encoding="utf-8")
    return {
        "uri": uri,
        "spec": spec,
        "tmp": tmp,
        "version": str(version),
        "segmenter": segmenter,
        "model_uri": model_uri,
    }
