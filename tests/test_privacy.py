"""Privacy: no customer id and no personal value reaches MLflow (runs, artifacts, registry)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from typer.testing import CliRunner

from segml.cli import app
from segml.synthetic import synthetic_customers, synthetic_spec

PERSONAL = {"email": "{}@example.org", "full_name": "Name {} Surname"}
ID_PATTERN = re.compile(rb"C\d{7}")


def _customers() -> pd.DataFrame:
    table = synthetic_customers(800, seed=5)
    for column, template in PERSONAL.items():
        table[column] = [template.format(f"person{i:05d}") for i in range(len(table))]
    return table


def _store_text(client: mlflow.MlflowClient) -> bytes:
    """Every run's params, tags and metric keys, and every model version's text, as bytes."""
    chunks = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            chunks += [str(run.data.params), str(run.data.tags), str(list(run.data.metrics))]
    for version in client.search_model_versions():
        chunks += [version.description or "", str(version.tags)]
    return "\n".join(chunks).encode()


def test_no_id_or_personal_value_in_any_tracked_place(tmp_path: Path) -> None:
    table = _customers()
    table.to_csv(tmp_path / "customers.csv", index=False)
    raw = synthetic_spec(
        "customers.csv",
        data={**synthetic_spec("customers.csv")["data"], "personal": list(PERSONAL)},
        search={"seed": 1, "reduction": {"reducer": "none"}, "families": {"kmeans": {}}},
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner()
    tuned = runner.invoke(app, ["tune", str(spec), "--n-trials", "4", "--tracking-uri", uri])
    assert tuned.exit_code == 0, tuned.output
    reviewed = runner.invoke(
        app,
        ["review", "--data", str(spec), "--out", str(tmp_path / "review"), "--tracking-uri", uri],
    )
    assert reviewed.exit_code in (0, 3), reviewed.output

    files = [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    files += list((tmp_path / "review").glob("*"))
    assert len(files) > 10, "the scan must see the run's artifacts"
    places = [(str(p), p.read_bytes()) for p in files]
    places.append(("tracking store", _store_text(mlflow.MlflowClient(uri, registry_uri=uri))))
    leaks = [
        (where, found)
        for where, content in places
        for found in (
            *ID_PATTERN.findall(content),
            *(v.encode() for v in table["email"] if v.encode() in content),
            *(v.encode() for v in table["full_name"] if v.encode() in content),
        )
    ]
    print(f"privacy scan: {len(places)} places, {len(table)} ids and personal values, "
          f"{len(leaks)} leaks")  # fmt: skip
    assert leaks == []
