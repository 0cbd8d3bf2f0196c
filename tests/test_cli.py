"""The command line: summaries on success, one line and exit code 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from segml.cli import app
from segml.features import build_features
from segml.registry import ModelRef, load_segmenter
from segml.spec import load_spec

from .lineitems import ID, SPEC_DATA, LineItems, line_items

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


def _period(folder: Path, seed: int, start: str, japan: bool = False) -> LineItems:
    """A year of line items in ``folder``/lines.csv and the loyalty tier of its customers in
    ``folder``/customers.csv (an attribute table of that period)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = line_items(n_customers=120, seed=seed, start=start)
    lines = log.lines
    if japan:  # a country the model never saw, for one customer
        lines = lines.assign(Country=lines["Country"].mask(lines[ID] == "12346.0", "Japan"))
    lines.to_csv(folder / "lines.csv", index=False)
    tiers = np.where(np.arange(len(log.truth)) % (3 if japan else 2) == 0, "gold", "basic")
    pd.DataFrame({ID: log.truth[ID], "tier": tiers}).to_csv(folder / "customers.csv", index=False)
    return log


@pytest.mark.slow
def test_line_items_through_features_tune_and_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str
) -> None:
    """From a raw line-item log: the features equal the known truth; the tuned model scores a
    later period, from another folder, with that period's attribute table (--customers)."""
    uri = tracking_uri
    train = tmp_path / "train"
    log = _period(train, seed=1, start="2023-01-01")
    spec = {
        "name": "retail",
        "data": {
            "source": "lines.csv",
            **SPEC_DATA,
            "customers": "customers.csv",
            "attributes": {**SPEC_DATA["attributes"], "behavioural": ["tier"]},
            "reference_date": "2023-12-31",
        },
        "features": {"categorical": ["tier"]},
        "search": {
            "families": {"kmeans": {"n_clusters": 3}},
            "reduction": {"reducer": "none"},
            "bootstrap_search": 2,
            "bootstrap_final": 2,
            "silhouette_sample": 100,
        },
        "constraints": {"min_segments": 2, "min_share": 0.01},
    }
    (train / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    features = runner.invoke(
        app, ["features", str(train / "spec.yaml"), "--out", str(train / "f.csv")]
    )
    assert features.exit_code == 0, features.output
    netted = (log.lines["Invoice"].str.startswith("C") & (log.lines[ID] != "")).sum()
    assert f"{netted:>10,}  return or cancellation lines netted" in features.output
    table = pd.read_csv(train / "f.csv", dtype={ID: str}).set_index(ID)
    truth = log.truth.set_index(ID)
    np.testing.assert_allclose(table.loc[truth.index, "monetary_total"], truth["spend"])
    assert table.loc[truth.index, "frequency"].tolist() == truth["orders"].tolist()
    assert table.loc[truth.index, "Country"].tolist() == truth["Country"].tolist()
    tuned = runner.invoke(
        app, ["tune", str(train / "spec.yaml"), "--n-trials", "2", "--tracking-uri", uri]
    )
    assert tuned.exit_code == 0, tuned.output

    later = tmp_path / "elsewhere"
    _period(later / "2024", seed=2, start="2024-01-01", japan=True)
    monkeypatch.chdir(later)  # no training file is reachable by the paths the spec named
    score = ["score", "--model", "models:/retail/1", "--input", "2024/lines.csv"]
    score += ["--output", "scores.csv", "--tracking-uri", uri]
    refused = runner.invoke(app, score)
    assert refused.exit_code == 2
    assert refused.stderr == (
        "segml: error: 2024/lines.csv: the model needs this batch's attribute table (columns "
        "tier, by Customer ID); pass --customers PATH\n"
    )
    assert not (later / "scores.csv").exists()
    scored = runner.invoke(app, [*score, "--customers", "2024/customers.csv"])
    assert scored.exit_code == 0, scored.output
    # Japan, and every country fewer than min_report_size training customers shared, is pooled.
    kept = log.truth["Country"].value_counts().loc[lambda n: n >= 20].index
    pooled = (~line_items(120, seed=2).truth["Country"].isin(kept)).sum() + 1
    assert f"rare or unseen categories (pooled): Country {pooled}" in scored.stdout
    out = pd.read_csv(later / "scores.csv", dtype={ID: str}).set_index(ID)
    assert sorted(out.index) == sorted(line_items(120, seed=2).truth[ID])

    segmenter = load_segmenter(ModelRef("models:/retail/1"))
    assert str(tmp_path) not in segmenter.spec.model_dump_json(), "the model keeps no path"
    batch = load_spec(train / "spec.yaml")
    data = batch.data.model_copy(
        update={
            "source": later / "2024/lines.csv",
            "customers": later / "2024/customers.csv",
            "reference_date": None,
        }
    )
    expected = build_features(batch.model_copy(update={"data": data})).table
    found = segmenter.predict(expected).set_index(ID)
    assert out.loc[found.index, "segment_id"].tolist() == found["segment_id"].tolist()


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
    assert "finalists (* the pick; k-means DBCV: k-means with as many segments; resamples:" in (
        result.output
    )
    assert "ok   over-segmentation: smallest segment " in result.output
    assert "under-segmentation: segment " in result.output
