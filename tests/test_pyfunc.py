"""The registered segment model through plain MLflow tools, on data built the natural way:
integer ids and counts, a CSV, a JSON request to ``mlflow models serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from segml import tracking as keys
from segml.model import SEGMENT_ID, Segmenter, log_segment_model

from .conftest import ROOT

MODEL = "cdnow_rfm"
CHAMPION_URI = f"models:/{MODEL}@champion"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def store(
    cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The CDNOW model logged, registered and made champion in a store of its own."""
    segmenter, table = cdnow_model
    uri = f"sqlite:///{tmp_path_factory.mktemp('pyfunc') / 'mlflow.db'}"
    client = keys.connect(uri)
    run_id = client.create_run(keys.experiment_id(client, MODEL)).info.run_id
    model_uri = log_segment_model(segmenter, table, run_id)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, model_uri, run_id=run_id).version
    client.set_registered_model_alias(MODEL, "champion", version)
    return uri


def natural_customers(table: pd.DataFrame, n: int = 200) -> pd.DataFrame:
    """``n`` customers of ``table`` as someone would type them: integer ids, days and counts;
    one-off buyers without an inter-purchase interval."""
    rows = table.sample(n, random_state=0).reset_index(drop=True)
    whole = ["customer_id", "recency_days", "frequency", "quantity_total"]
    return rows.assign(**{c: rows[c].astype("float64").astype("int64") for c in whole})


def test_natural_customers_are_integers_where_counts_are(
    cdnow_model: tuple[Segmenter, pd.DataFrame],
) -> None:
    customers = natural_customers(cdnow_model[1])
    assert customers["customer_id"].dtype == np.int64 and customers["frequency"].dtype == np.int64
    assert customers["interpurchase_days"].isna().any()


def test_a_fresh_process_predicts_integer_ids_and_counts_by_alias(
    store: str, cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path: Path
) -> None:
    segmenter, table = cdnow_model
    customers = natural_customers(table)
    customers.to_parquet(tmp_path / "in.parquet")
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({CHAMPION_URI!r})\n"
        "model.predict(pd.read_parquet(sys.argv[1])).to_parquet(sys.argv[2])\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "in.parquet"),
            str(tmp_path / "out.parquet"),
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": store},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = pd.read_parquet(tmp_path / "out.parquet")
    as_trained = table.sample(len(customers), random_state=0).reset_index(drop=True)
    expected = segmenter.predict(as_trained)
    assert found["customer_id"].tolist() == customers["customer_id"].tolist()
    np.testing.assert_array_equal(found[SEGMENT_ID], expected[SEGMENT_ID])


def test_every_feature_is_required_and_a_missing_one_is_named(
    store: str, cdnow_model: tuple[Segmenter, pd.DataFrame]
) -> None:
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    inputs = model.metadata.get_input_schema()
    assert set(inputs.required_input_names()) == {"customer_id", *cdnow_model[0].features}
    customers = natural_customers(cdnow_model[1]).drop(columns="frequency")
    with pytest.raises(MlflowException, match=r"missing inputs \['frequency'\]"):
        model.predict(customers)


def test_the_input_example_is_a_made_up_customer_with_whole_counts(
    store: str, cdnow_model: tuple[Segmenter, pd.DataFrame]
) -> None:
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    path = mlflow.artifacts.download_artifacts(CHAMPION_URI)
    example = model.metadata.load_input_example(path)
    table = cdnow_model[1]
    assert not example["customer_id"].astype(str).isin(table["customer_id"]).any()
    assert example["frequency"].dtype.kind == "i" and example["recency_days"].dtype.kind == "i"
    assert len(model.predict(example)) == 1


@pytest.mark.slow
def test_mlflow_models_predict_reads_a_csv_of_integers(
    store: str, cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path: Path
) -> None:
    customers = natural_customers(cdnow_model[1], n=20)
    customers.to_csv(tmp_path / "in.csv", index=False)
    command = [
        str(BIN / "mlflow"),
        "models",
        "predict",
        "-m",
        CHAMPION_URI,
        "-i",
        str(tmp_path / "in.csv"),
        "-t",
        "csv",
        "-o",
        str(tmp_path / "out.json"),
        "--env-manager",
        "local",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(store), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert [p["customer_id"] for p in predictions] == customers["customer_id"].tolist()


@pytest.mark.slow
def test_make_serve_answers_a_json_request_without_an_activated_venv(
    store: str, cdnow_model: tuple[Segmenter, pd.DataFrame], tmp_path: Path
) -> None:
    """``make serve`` as the README shows it, from a shell whose PATH lacks the venv's bin
    (``mlflow models serve`` alone then fails: ``uvicorn: not found``)."""
    customers = natural_customers(cdnow_model[1], n=3)
    request = {"dataframe_split": json.loads(customers.to_json(orient="split", index=False))}
    with _Served(store, tmp_path / "serve.log") as url:
        answer = urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/invocations",
                data=json.dumps(request).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=60,
        )
        predictions = json.loads(answer.read())["predictions"]
    assert [p["customer_id"] for p in predictions] == customers["customer_id"].tolist()
    assert all(isinstance(p["segment_name"], str) for p in predictions)


def _env(store: str) -> dict[str, str]:
    """The venv's bin first on PATH, as an activated environment has it (``mlflow models
    serve`` starts ``uvicorn`` by name)."""
    return os.environ | {"MLFLOW_TRACKING_URI": store, "PATH": f"{BIN}:{os.environ['PATH']}"}


class _Served:
    """``make serve`` of the champion on a free port, for a ``with`` block."""

    def __init__(self, store: str, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.store, self.log = store, log

    def __enter__(self) -> str:
        command = ["make", "-C", str(ROOT), "serve"]
        command += [f"SERVE_MODEL={CHAMPION_URI}", f"SERVE_PORT={self.port}"]
        path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(BIN))
        env = os.environ | {"MLFLOW_TRACKING_URI": self.store, "PATH": path}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                return url
            except OSError:
                time.sleep(1)
        self.__exit__()
        raise AssertionError(f"mlflow models serve did not answer: {self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
