"""A tune on the bundled CDNOW data leaves one parent and one nested run per trial, keyed."""

from __future__ import annotations

from pathlib import Path

import mlflow

from segml import tracking as keys
from segml.experiment import tune
from segml.spec import load_spec

TRIAL_METRICS = {
    k for k in keys.METRICS if k.split(".")[0] in {"quality", "stability", "business", "cost"}
}


def test_cdnow_tune_tracks_every_trial(cdnow_spec: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = tune(load_spec(cdnow_spec), n_trials=4, families=["kmeans"], tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([result.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags[keys.TAG_ROLE] == keys.ROLE_STUDY]
    trials = [r for r in runs if r.data.tags[keys.TAG_ROLE] == keys.ROLE_TRIAL]
    assert len(parents) == 1 and len(trials) == 4
    for run in trials:
        assert run.data.tags[keys.TAG_PARENT] == parents[0].info.run_id
        assert TRIAL_METRICS <= set(run.data.metrics), TRIAL_METRICS - set(run.data.metrics)
        assert run.data.params["family"] == "kmeans" and "kmeans.n_clusters" in run.data.params
    assert result.segmenter.catalog["customers"].sum() == 23_570
    assert result.model_version == "1"
