"""The command line: summaries on success, one line and exit code 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from segml.cli import app
from segml.synthetic import synthetic_spec

from .test_data import tx_spec

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


CATALOGUE = [
    ("missing id column", "id,day,amount,qty\na,2020-01-01,1,1\n", "missing id column 'cust'"),
    ("duplicate ids", None, "duplicate id in column 'customer_id'"),
    ("unparseable date", "cust,day,amount,qty\na,2020-02-30,1,1\n", "unparseable date in column"),
    ("negative amount", "cust,day,amount,qty\na,2020-01-01,-1,1\n", "negative amount in column"),
    ("non-finite amount", "cust,day,amount,qty\na,2020-01-01,inf,1\n", "non-finite value in"),
    ("empty file", "", "file is empty"),
    ("declared column absent", "cust,day,qty\na,2020-01-01,1\n", "data.transactions.amount"),
]


def test_bad_input_catalogue_through_the_cli(
    tmp_path: Path, write_spec: Callable[..., Path], clean_customers: pd.DataFrame
) -> None:
    for case, body, message in CATALOGUE:
        if body is None:
            pd.concat([clean_customers.head(3)] * 2).to_csv(tmp_path / "in.csv", index=False)
            spec = write_spec(synthetic_spec("in.csv"), f"{case}.yaml")
        else:
            (tmp_path / "in.csv").write_text(body)
            spec = write_spec(tx_spec("in.csv"), f"{case}.yaml")
        out = tmp_path / f"{case}.parquet"
        result = runner.invoke(app, ["features", str(spec), "--out", str(out)])
        assert result.exit_code == 2, case
        assert result.stderr.startswith(f"segml: error: {tmp_path / 'in.csv'}: "), case
        assert message in result.stderr, (case, result.stderr)
        assert result.stderr.count("\n") == 1, case
        assert not out.exists(), case
