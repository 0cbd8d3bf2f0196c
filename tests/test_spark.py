"""The Spark engine: same assignments, output and report as the pandas engine, on local[2]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from segml import tracking as keys
from segml.cli import app
from segml.errors import DataError
from segml.model import CONFIDENCE, NOVELTY_SCORE
from segml.monitoring import EMERGING_ID
from segml.registry import ModelRef
from segml.scoring import output_schema, score, score_spark
from segml.synthetic import FEATURES, ID_COLUMN, synthetic_customers

from .conftest import ROOT

pytest.importorskip("pyspark", reason="the Spark engine needs pyspark: pip install 'segml[spark]'")

from segml.scoring.spark import spark_session

pytestmark = pytest.mark.slow  # make test-fast leaves this module out

MASTER = "local[2]"
CUSTOMERS = 100_000
COLUMNS = list(output_schema(ID_COLUMN).names)
runner = CliRunner()


@pytest.fixture(scope="module")
def spark() -> Any:
    """A local[2] Spark session for the module; the tests skip, saying why, if it cannot start."""
    try:
        session = spark_session(MASTER)
    except Exception as exc:  # no Java, no free port, ...
        pytest.skip(f"Spark cannot start on {MASTER}: {exc}")
    yield session
    session.stop()


def _scores(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(ID_COLUMN, ignore_index=True)


def _score_cli(registered: dict, *args: str) -> Any:
    return runner.invoke(
        app,
        ["score", "--spec", str(registered["spec"]), "--tracking-uri", registered["uri"], *args],
    )


def test_spark_and_pandas_engines_agree_on_100k_customers(
    spark, registered, tmp_path: Path
) -> None:
    batch = synthetic_customers(CUSTOMERS, seed=31, new_group_share=0.03)
    folder = tmp_path / "customers"
    folder.mkdir()
    half = CUSTOMERS // 2
    batch.iloc[:half].to_parquet(folder / "part-0.parquet", index=False)
    batch.iloc[half:].to_parquet(folder / "part-1.parquet", index=False)
    # A previous output whose customers moved: the migration must be counted the same way.
    before = synthetic_customers(20_000, seed=32)
    before_path = tmp_path / "before.parquet"
    score(registered["segmenter"], _write(tmp_path, before), before_path)

    common = ["--input", str(folder), "--previous", str(before_path)]
    pandas_out, spark_out = tmp_path / "pandas.parquet", tmp_path / "spark.parquet"
    by_pandas = _score_cli(registered, *common, "--output", str(pandas_out))
    by_spark = _score_cli(
        registered, *common, "--output", str(spark_out), "--engine", "spark",
        "--spark-master", MASTER,
    )  # fmt: skip
    assert by_pandas.exit_code == 0, by_pandas.output
    assert by_spark.exit_code == 0, by_spark.output

    assert spark_out.is_dir() and list(spark_out.glob("part-*.parquet"))
    expected, found = _scores(pandas_out), _scores(spark_out)
    assert list(found.columns) == COLUMNS and len(found) == CUSTOMERS
    exact = [c for c in COLUMNS if c not in (CONFIDENCE, NOVELTY_SCORE)]
    pd.testing.assert_frame_equal(found[exact], expected[exact], check_dtype=False)
    for column in (CONFIDENCE, NOVELTY_SCORE):
        np.testing.assert_allclose(found[column], expected[column], rtol=1e-9, atol=1e-12)
    assert found[EMERGING_ID].notna().sum() >= 0.8 * 0.03 * CUSTOMERS, "the new group emerged"

    client = mlflow.tracking.MlflowClient(registered["uri"])
    runs = client.search_runs(
        [client.get_experiment_by_name("synthetic").experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_SCORING}'",
        order_by=["attributes.start_time ASC"],
    )
    pandas_run, spark_run = (r.data.metrics for r in runs[-2:])
    timing = {keys.SCORING_SECONDS, keys.SCORING_ROWS_PER_SECOND}
    assert set(spark_run) == set(pandas_run)
    for key in set(pandas_run) - timing:
        assert spark_run[key] == pytest.approx(pandas_run[key], rel=1e-9, nan_ok=True), key
    assert spark_run[keys.EMERGING_CANDIDATES] == 1
    assert 0 < spark_run[keys.MIGRATION_SHARE] < 1
    pandas_table, spark_table = (_candidates(client, r.info.run_id, tmp_path) for r in runs[-2:])
    assert spark_table["previous_id"].tolist() == ["E1"], "the pandas run saw it first"
    pd.testing.assert_frame_equal(
        spark_table.drop(columns=["seen_before", "previous_id"]),
        pandas_table.drop(columns=["seen_before", "previous_id"]),
        rtol=1e-9,
    )


def _candidates(client: Any, run_id: str, tmp_path: Path) -> pd.DataFrame:
    path = client.download_artifacts(run_id, "scoring/candidates.json", str(tmp_path))
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    return pd.DataFrame(table["data"], columns=table["columns"])


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "in.parquet") -> Path:
    path = tmp_path / name
    frame.to_parquet(path, index=False)
    return path


def test_bad_rows_are_quarantined_as_by_the_pandas_engine(
    spark, registered, tmp_path: Path
) -> None:
    frame = synthetic_customers(500, seed=33).astype({"engagement": object})
    frame["engagement"] = frame["engagement"].astype(str)
    frame.loc[3, "engagement"] = "oops"
    frame.loc[5, "price_sensitivity"] = np.inf
    frame.loc[7, ID_COLUMN] = " "
    frame.loc[9, ID_COLUMN] = frame.loc[8, ID_COLUMN]
    frame.loc[11, "basket_index"] = np.nan
    source = _write(tmp_path, frame)
    segmenter = registered["segmenter"]
    ref = ModelRef(registered["model_uri"])
    drop = segmenter.spec.model_copy(
        update={"data": segmenter.spec.data.model_copy(update={"bad_rows": "drop"})}
    )
    expected = score(segmenter, source, tmp_path / "pandas.parquet", spec=drop)
    found = score_spark(
        segmenter, source, tmp_path / "spark.parquet", model=ref, spec=drop, master=MASTER
    )
    assert found.rows_read == expected.rows_read == 500
    assert found.rows_scored == expected.rows_scored == 496
    assert found.quarantined == expected.quarantined
    assert found.missing == expected.missing and found.missing["basket_index"] == 1
    assert found.quarantine is not None and expected.quarantine is not None
    pd.testing.assert_frame_equal(
        pd.read_csv(found.quarantine), pd.read_csv(expected.quarantine), check_dtype=False
    )
    pd.testing.assert_frame_equal(
        _scores(tmp_path / "spark.parquet"), _scores(tmp_path / "pandas.parquet")
    )

    with pytest.raises(DataError) as by_pandas:
        score(segmenter, source, tmp_path / "failed.parquet")
    with pytest.raises(DataError) as by_spark:
        score_spark(segmenter, source, tmp_path / "failed.parquet", model=ref, master=MASTER)
    assert str(by_spark.value) == str(by_pandas.value), "every reason, counted alike"
    assert str(by_spark.value).splitlines()[1:] == [
        "  1 row(s) with non-numeric value in column 'engagement' (first at data row 4)",
        "  1 row(s) with non-finite value in column 'price_sensitivity' (first at data row 6)",
        "  1 row(s) with missing id in column 'customer_id' (first at data row 8)",
        "  1 row(s) with duplicate id in column 'customer_id' (first at data row 10)",
    ]
    assert not (tmp_path / "failed.parquet").exists()
    frame["engagement"] = "high"  # found by the check of a file's first batch, in a worker
    with pytest.raises(DataError, match=r"column 'engagement' does not hold numbers"):
        score_spark(
            segmenter, _write(tmp_path, frame), tmp_path / "failed.parquet", model=ref,
            master=MASTER,
        )  # fmt: skip
    assert not (tmp_path / "failed.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left"


def test_spark_engine_reads_parquet_only(spark, registered, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    synthetic_customers(100, seed=34).to_csv(source, index=False)
    result = _score_cli(
        registered, "--input", str(source), "--output", str(tmp_path / "o.parquet"),
        "--engine", "spark", "--spark-master", MASTER,
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"segml: error: {source}: --engine spark reads and writes Parquet; "
        "use --engine pandas for CSV"
    )


def test_the_spark_benchmark_times_both_engines_on_one_input(
    spark, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_spark

    monkeypatch.setattr(
        sys, "argv",
        ["bench_spark.py", "--rows", "5000", "--repeats", "1", "--train", "3000",
         "--master", MASTER, "--workdir", str(tmp_path)],
    )  # fmt: skip
    bench_spark.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if "5,000" in line]
    assert [row[0] for row in rows] == ["| pandas", f"| spark {MASTER}"]
    assert all(int(row[3].replace(",", "")) > 0 for row in rows), "rows/s of both engines"


def test_without_java_the_spark_engine_is_one_line_exit_2(registered, tmp_path: Path) -> None:
    source = _write(tmp_path, synthetic_customers(100, seed=35)[[ID_COLUMN, *FEATURES]])
    no_java = {
        **os.environ,
        "JAVA_HOME": str(tmp_path / "no-java"),
        "PATH": str(Path(sys.executable).parent),
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "segml", "score", "--spec", str(registered["spec"]),
            "--tracking-uri", registered["uri"], "--input", str(source),
            "--output", str(tmp_path / "o.parquet"), "--engine", "spark",
        ],
        env=no_java, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("segml: error: --engine spark cannot start Spark on local[*]")
    assert lines[-1].endswith("it needs Java 17 or later on PATH or in JAVA_HOME")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.parquet").exists()
