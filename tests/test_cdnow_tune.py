"""A small tune on the bundled CDNOW data leaves one parent and one keyed nested run per trial."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from segml import tracking as keys
from segml.experiment import TuneResult, tune
from segml.spec import load_spec
from segml.tuning import search_spaces

pytestmark = pytest.mark.slow  # make test-fast leaves this module out

N_TRIALS = 5
FAMILIES = ["kmeans", "gmm"]
TRIAL_METRICS = {
    k for k in keys.METRICS if k.split(".")[0] in {"quality", "stability", "business", "cost"}
}


@pytest.fixture(scope="module")
def cdnow_tune(
    cdnow_spec: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TuneResult, str]:
    """A 5-trial k-means/GMM tune of the CDNOW spec without UMAP, on a store of its own."""
    tmp = tmp_path_factory.mktemp("cdnow")
    raw = yaml.safe_load(cdnow_spec.read_text(encoding="utf-8"))
    raw["data"]["source"] = str((cdnow_spec.parent / raw["data"]["source"]).resolve())
    raw["search"] = {**raw.get("search", {}), "reduction": {"reducer": "none"}}
    spec_path = tmp / "cdnow.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return tune(load_spec(spec_path), n_trials=N_TRIALS, families=FAMILIES, tracking_uri=uri), uri


def _runs_by_role(result: TuneResult, uri: str) -> dict[str, list[mlflow.entities.Run]]:
    runs = mlflow.MlflowClient(uri).search_runs([result.experiment_id], max_results=100)
    by_role: dict[str, list[mlflow.entities.Run]] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get(keys.TAG_ROLE, ""), []).append(run)
    return by_role


def test_one_parent_and_one_nested_run_per_trial(cdnow_tune: tuple[TuneResult, str]) -> None:
    result, uri = cdnow_tune
    by_role = _runs_by_role(result, uri)
    assert set(by_role) == {keys.ROLE_STUDY, keys.ROLE_TRIAL}
    assert [run.info.run_id for run in by_role[keys.ROLE_STUDY]] == [result.parent_run_id]
    trials = by_role[keys.ROLE_TRIAL]
    assert len(trials) == N_TRIALS
    assert {run.data.tags[keys.TAG_PARENT] for run in trials} == {result.parent_run_id}


def test_every_trial_carries_the_documented_keys(
    cdnow_tune: tuple[TuneResult, str], cdnow_spec: Path
) -> None:
    result, uri = cdnow_tune
    spaces = search_spaces(load_spec(cdnow_spec), FAMILIES)
    trials = _runs_by_role(result, uri)[keys.ROLE_TRIAL]
    # the spec's seed (7) samples both families in 5 trials, so both are checked
    assert {run.data.params[keys.PARAM_FAMILY] for run in trials} == set(FAMILIES)
    for run in trials:
        missing = TRIAL_METRICS - set(run.data.metrics)
        assert not missing, f"{run.info.run_name} lacks {sorted(missing)}"
        family = run.data.params[keys.PARAM_FAMILY]
        assert run.data.tags[keys.TAG_FAMILY] == family
        expected = {keys.param_key(family, name) for name in spaces[family]}
        assert expected <= set(run.data.params), expected - set(run.data.params)
        assert run.data.params[keys.param_key(keys.PREP_NAMESPACE, "reducer")] == "none"


def test_the_tune_reports_predicted_value_per_segment(cdnow_tune: tuple[TuneResult, str]) -> None:
    """The demo spec declares ``features.clv``: the summary, the run's business table and the
    model card carry expected CLV and probability alive per segment."""
    result, uri = cdnow_tune
    assert result.segments is not None and result.segmenter.value is not None
    summary = result.segments.set_index("segment_id")
    assert summary["p_alive_mean"].between(0, 1).all() and (summary["clv_mean"] > 0).all()
    client = mlflow.MlflowClient(uri)
    path = client.download_artifacts(result.parent_run_id, "segments/business.json")
    table = pd.read_json(path, orient="split").set_index("segment_id")
    assert table["clv_share"].sum() == pytest.approx(1.0)
    assert table["clv_total"].to_dict() == pytest.approx(summary["clv_total"].to_dict())
    card = client.get_model_version(result.segmenter.spec.model_name, result.model_version)
    assert "p_alive_mean" in card.description and "clv_total" in card.description
