"""The command line: summaries on success, one line and exit code 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from segml.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("features", "validate"):
        assert name in result.output


def test_features_writes_table_and_report(synthetic_spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "features.parquet"
    result = runner.invoke(app, ["features", str(synthetic_spec_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rows read 2,000, used 2,000, quarantined 0" in result.output
    table = pd.read_parquet(out)
    assert len(table) == 2000 and "engagement" in table.columns
    assert not list(out.parent.glob("*.part"))


def test_validate_reports_valid(synthetic_spec_file: Path) -> None:
    result = runner.invoke(app, ["validate", str(synthetic_spec_file)])
    assert result.exit_code == 0
    assert result.output.strip().endswith("valid")


def _segml(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segml", *args], capture_output=True, text=True, check=False
    )


def test_bad_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ncolour: red\n")
    out = tmp_path / "f.parquet"
    result = _segml("features", str(spec), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"segml: error: {spec}: ")
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _segml("--debug", "validate", str(tmp_path / "missing.yaml"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "SpecError" in result.stderr


def test_tune_summary_shows_the_pick_its_rivals_and_the_granularity_checks(
    tmp_path: Path, clean_customers: pd.DataFrame, write_spec
) -> None:
    from segml.synthetic import synthetic_spec

    clean_customers.to_csv(tmp_path / "customers.csv", index=False)
    spec = write_spec(synthetic_spec("customers.csv", search={"reduction": {"reducer": "none"}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["tune", str(spec), "--n-trials", "8", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "(kmeans, 5 segments, value separation business.value_r2 " in result.output, (
        "five well-separated segments: k-means with k by silhouette keeps them"
    )
    assert "finalists (* the pick; k-means DBCV: k-means with as many segments):" in result.output
    assert "ok   over-segmentation: smallest segment " in result.output
    assert "under-segmentation: segment " in result.output
