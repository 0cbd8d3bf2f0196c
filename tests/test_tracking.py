"""The tracking module against a real embedded store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Experiment
from mlflow.tracking import MlflowClient

from segml import tracking as keys


def test_experiment_created_meanwhile_by_another_process_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = keys.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    existing = keys.experiment_id(client, "race")
    # The other process created it between our lookup and our create.
    monkeypatch.setattr(client, "get_experiment_by_name", _none_once(client))
    assert keys.experiment_id(client, "race") == existing
    assert [e.name for e in client.search_experiments()].count("race") == 1


def _none_once(client: MlflowClient) -> Callable[[str], Experiment | None]:
    """``get_experiment_by_name`` that finds nothing the first time it is asked."""
    real, calls = client.get_experiment_by_name, []

    def lookup(name: str) -> Experiment | None:
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    return lookup
