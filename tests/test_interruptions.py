"""Concurrency: two scoring jobs running at once on one embedded store (kills and promote
races: tests/test_kills.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from segml import tracking as keys
from segml.cli import app
from segml.model import log_segment_model
from segml.registry import CHALLENGER, CHAMPION
from segml.synthetic import synthetic_customers, synthetic_spec

from .test_bad_inputs import assert_store_whole
from .test_scoring import fit_segmenter

runner = CliRunner()
pytestmark = pytest.mark.slow  # make test-fast leaves this module out

MODEL = "synthetic"


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A k-means segment model logged in a store of its own: store URI, model URI, run id."""
    tmp = tmp_path_factory.mktemp("interrupted")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = keys.connect(uri)
    segmenter = fit_segmenter(
        tmp, "kmeans", synthetic_customers(1_000, seed=1), synthetic_spec("customers.csv")
    )
    run_id = client.create_run(keys.experiment_id(client, MODEL)).info.run_id
    model = log_segment_model(segmenter, synthetic_customers(50, seed=1), run_id)
    client.set_terminated(run_id)
    return uri, model, run_id


def _registry(uri: str, model: str, run_id: str) -> mlflow.MlflowClient:
    """v1 champion and v2 challenger, both reviewed and passed."""
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for version in ("1", "2"):
        client.create_model_version(MODEL, model, run_id=run_id)
        client.set_model_version_tag(MODEL, version, keys.TAG_VERDICT, keys.VERDICT_PASSED)
    client.set_registered_model_alias(MODEL, CHAMPION, "1")
    client.set_registered_model_alias(MODEL, CHALLENGER, "2")
    return client


def test_two_scoring_jobs_at_once_write_what_one_job_writes(model_uri, tmp_path: Path) -> None:
    """Two ``segml score`` processes on one embedded store, each writing its own output."""
    source_uri, model, run_id = model_uri
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "mlflow.db").write_bytes(Path(source_uri.removeprefix("sqlite:///")).read_bytes())
    _registry(uri, model, run_id)
    batch = tmp_path / "batch.parquet"
    synthetic_customers(20_000, seed=7, new_group_share=0.03).to_parquet(batch, index=False)
    score = ["score", "--input", str(batch), "--model", f"models:/{MODEL}@{CHAMPION}"]
    outputs = [tmp_path / "a" / "scores.parquet", tmp_path / "b" / "scores.parquet"]
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "segml", *score, "--output", str(out), "--tracking-uri", uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outputs
    ]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
    alone = tmp_path / "alone" / "scores.parquet"
    done = runner.invoke(app, [*score, "--output", str(alone), "--tracking-uri", uri])
    assert done.exit_code == 0, done.output
    assert outputs[0].read_bytes() == outputs[1].read_bytes() == alone.read_bytes()
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(MODEL).experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_SCORING}'",
    )
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert {r.data.metrics[keys.SCORING_ROWS_SCORED] for r in runs} == {20_000}
    assert_store_whole(uri)
