"""Registry: stable segment ids across versions, review gates, promote, rollback, export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from segml import tracking as keys
from segml.cli import app
from segml.experiment import TuneResult, tune
from segml.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRef, load_segmenter
from segml.spec import load_spec
from segml.synthetic import synthetic_customers, synthetic_spec

runner = CliRunner()
MODEL = "synthetic"
SEARCH = {
    "seed": 3,
    "reduction": {"reducer": "none"},
    "families": {"kmeans": {"n_clusters": 5}, "gmm": {"n_components": 5}},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tunes of the same stable customers with different seeds; the first promoted.

    The segment count is fixed so that both find the same five segments, under labels that
    differ between seeds: what alignment must undo."""
    tmp = tmp_path_factory.mktemp("registry")
    synthetic_customers(1_500, seed=1).to_csv(tmp / "customers.csv", index=False)
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(synthetic_spec("customers.csv", search=SEARCH)))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    spec = load_spec(spec_path)
    first = tune(spec, n_trials=8, seed=1, tracking_uri=uri, study_name="first")
    reviewed = _cli(uri, "review", "--data", str(spec_path), "--champion", "none")
    promoted = _cli(uri, "promote", first.model_version or "", "--model", MODEL)
    second = tune(spec, n_trials=8, seed=2, tracking_uri=uri, study_name="second")
    out = tmp / "review"
    review = _cli(uri, "review", "--data", str(spec_path), "--out", str(out))
    return {
        "uri": uri,
        "spec": spec_path,
        "tmp": tmp,
        "first": first,
        "second": second,
        "first_review": reviewed,
        "promoted": promoted,
        "review": review,
        "review_dir": out,
    }


def _cli(uri: str, *args: str):
    return runner.invoke(app, [*args, "--tracking-uri", uri])


def _client(store: dict) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(store["uri"], registry_uri=store["uri"])


def _alias(store: dict, alias: str) -> str:
    return str(_client(store).get_model_version_by_alias(MODEL, alias).version)


def test_first_version_is_reviewed_alone_and_promoted(store: dict) -> None:
    assert store["first_review"].exit_code == 0, store["first_review"].output
    assert "Verdict: passed" in store["first_review"].output
    assert store["promoted"].exit_code == 0, store["promoted"].output
    assert store["first"].model_version == "1"


def test_second_tune_is_challenger_with_aligned_ids(store: dict) -> None:
    first: TuneResult = store["first"]
    second: TuneResult = store["second"]
    assert _alias(store, CHAMPION) == "1" and _alias(store, CHALLENGER) == "2"
    customers = pd.read_csv(store["tmp"] / "customers.csv")
    old = first.segmenter.predict(customers)["segment_id"]
    new = load_segmenter(ModelRef(f"models:/{MODEL}/2")).predict(customers)["segment_id"]
    assert (old == new).mean() >= 0.95
    mlflow.set_tracking_uri(store["uri"])
    alignment = mlflow.artifacts.load_dict(f"runs:/{second.parent_run_id}/model/alignment.json")
    assert alignment["champion"] == f"{MODEL} v1"
    assert len(alignment["matched_jaccard"]) == len(first.segmenter.catalog)


def test_version_carries_model_card_and_tags(store: dict) -> None:
    version = _client(store).get_model_version(MODEL, "2")
    assert "customers" in version.description and "| segment |" in version.description
    assert version.tags[keys.TAG_SPEC_DIGEST]
    assert float(version.tags[keys.STABILITY_JACCARD_MIN]) > 0.5
    assert store["second"].parent_run_id in version.tags[keys.TAG_RUN_LINK]
    assert version.tags["segml.register.run_id"] == store["second"].parent_run_id


def test_review_report_shows_agreement_migration_and_gates(store: dict) -> None:
    result = store["review"]
    assert result.exit_code == 0, result.output
    for text in ("ARI 1.000", "Migration", "max_migration_share", "Verdict: passed"):
        assert text in result.output
    assert "| over-segmentation | True | smallest segment " in result.output
    assert "| under-segmentation | True | " in result.output
    html = (store["review_dir"] / "review.html").read_text()
    assert "data:image/png;base64," in html and "max_quality_drop" in html
    assert "Under- and over-segmentation" in html
    version = _client(store).get_model_version(MODEL, "2")
    assert version.tags[keys.TAG_VERDICT] == "passed"
    review_run = _client(store).get_run(version.tags[keys.TAG_REVIEW_RUN])
    assert review_run.data.tags[keys.TAG_ROLE] == keys.ROLE_REVIEW
    assert review_run.data.metrics[keys.REVIEW_ARI] == pytest.approx(1.0, abs=0.02)


def test_promote_refuses_failed_review_unless_forced_and_rollback_restores(store: dict) -> None:
    client = _client(store)
    client.set_model_version_tag(MODEL, "2", keys.TAG_VERDICT, "failed")
    refused = _cli(store["uri"], "promote", "2", "--model", MODEL)
    assert refused.exit_code == 3 and "review failed" in refused.output
    assert _alias(store, CHAMPION) == "1"
    no_reason = _cli(store["uri"], "promote", "2", "--model", MODEL, "--force")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    forced = _cli(store["uri"], "promote", "2", "--model", MODEL, "--force", "--reason", "test")
    assert forced.exit_code == 0, forced.output
    assert (_alias(store, CHAMPION), _alias(store, PREVIOUS)) == ("2", "1")
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["segml.promote.reason"] == "test" and tags["segml.promote.forced"] == "true"
    again = _cli(store["uri"], "promote", "2", "--model", MODEL, "--force", "--reason", "test")
    assert again.exit_code == 0 and _alias(store, PREVIOUS) == "1"
    rolled = _cli(store["uri"], "rollback", "--model", MODEL, "--reason", "bad week")
    assert rolled.exit_code == 0, rolled.output
    assert _alias(store, CHAMPION) == "1"
    again = _cli(store["uri"], "rollback", "--model", MODEL)  # done: a rerun changes nothing
    assert (again.exit_code, again.output) == (0, f"{MODEL}: champion v1 (rolled back)\n")
    aliases = _client(store).get_registered_model(MODEL).aliases
    assert {k: str(v) for k, v in aliases.items()} == {CHAMPION: "1"}


def test_fresh_process_by_alias_predicts_byte_identically(store: dict, tmp_path: Path) -> None:
    customers = store["tmp"] / "customers.csv"
    uri = f"models:/{MODEL}@{CHAMPION}"
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({store['uri']!r})\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        f"model.predict(pd.read_csv({str(customers)!r})).to_parquet(sys.argv[1])\n"
    )
    out = tmp_path / "fresh.parquet"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    mlflow.set_tracking_uri(store["uri"])
    here = mlflow.pyfunc.load_model(uri).predict(pd.read_csv(customers))
    here.to_parquet(tmp_path / "here.parquet")
    assert (tmp_path / "here.parquet").read_bytes() == out.read_bytes()


def test_export_is_a_self_contained_model_folder(store: dict, tmp_path: Path) -> None:
    target = tmp_path / "models" / MODEL
    result = _cli(store["uri"], "export", "champion", str(target), "--model", MODEL)
    assert result.exit_code == 0, result.output
    assert (target / "MLmodel").is_file()
    segmenter = load_segmenter(ModelRef(str(target)))
    assert segmenter.spec.model_name == MODEL
    again = _cli(store["uri"], "export", "champion", str(target), "--model", MODEL)
    assert again.exit_code == 0


def test_review_names_the_migration_and_logs_its_question_and_data(store: dict) -> None:
    client = _client(store)
    run = client.get_run(client.get_model_version(MODEL, "2").tags[keys.TAG_REVIEW_RUN])
    params = run.data.params
    assert params["gates.max_migration_share"] == "0.3" and params["champion"] == f"{MODEL} v1"
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name == "customers.csv" and data.dataset.digest
    assert run.data.tags.get("mlflow.user") and run.data.tags.get("mlflow.source.name")
    names = load_segmenter(ModelRef(f"models:/{MODEL}/2")).segment_names()
    markdown = (store["review_dir"] / "review.md").read_text()
    header = markdown.split("## Migration (customers", 1)[1].splitlines()[1]
    assert header.startswith("| champion \\ challenger | ")
    assert all(f"{i}: {name}" in header for i, name in names.items())
    html = (store["review_dir"] / "review.html").read_text()
    assert "<th></th>" not in html and "to_segment" not in html
    segments = (store["review_dir"] / "segments.html").read_text()
    assert "precision" in segments and all(name in segments for name in names.values())


def test_model_card_links_its_run_and_states_value_and_rules(store: dict) -> None:
    version = _client(store).get_model_version(MODEL, "2")
    run = store["second"]
    assert f"](#/experiments/{run.experiment_id}/runs/{run.parent_run_id})" in version.description
    assert "| rule |" in version.description and "| priority |" in version.description
    silhouette = version.tags[keys.QUALITY_SILHOUETTE]
    assert len(silhouette.split(".")[1]) <= 3, "rounded as every report rounds"
