"""Tuning: the search finds known segments, tracks every trial, and resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from segml import tracking as keys
from segml.experiment import tune
from segml.families.segmentation import fit_segmentation
from segml.spec import load_spec
from segml.synthetic import (
    TRUTH_COLUMN,
    structure_free_customers,
    synthetic_customers,
    synthetic_spec,
)
from segml.tuning import TrialResult, pareto_front, search_data

NO_UMAP = {"reduction": {"reducer": "none"}}
TRIAL_METRICS = {
    keys.QUALITY_SILHOUETTE,
    keys.QUALITY_DAVIES_BOULDIN,
    keys.QUALITY_CALINSKI_HARABASZ,
    keys.QUALITY_NOISE_SHARE,
    keys.STABILITY_JACCARD_MIN,
    keys.STABILITY_JACCARD_MEAN,
    keys.STABILITY_ARI_MEAN,
    keys.BUSINESS_N_SEGMENTS,
    keys.BUSINESS_MIN_SHARE,
    keys.BUSINESS_MAX_SHARE,
    keys.BUSINESS_VALUE_R2,
    keys.COST_TRIAL_SECONDS,
}


def _spec(tmp_path: Path, write_spec: Callable[..., Path], table: pd.DataFrame, **search: object):
    table.to_csv(tmp_path / "customers.csv", index=False)
    return load_spec(
        write_spec(synthetic_spec("customers.csv", search={"seed": 3, **NO_UMAP, **search}))
    )


@pytest.fixture(scope="module")
def clean_tune(tmp_path_factory: pytest.TempPathFactory, clean_customers: pd.DataFrame):
    """A 30-trial tune of the clean 5-segment customers, on a store of its own."""
    tmp = tmp_path_factory.mktemp("clean")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    clean_customers.to_csv(tmp / "customers.csv", index=False)
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump(synthetic_spec("customers.csv", search={"seed": 3, **NO_UMAP}))
    )
    return tune(load_spec(spec_path), n_trials=30, tracking_uri=uri), uri


@pytest.mark.slow
def test_clean_segments_are_recovered(clean_tune, clean_customers: pd.DataFrame) -> None:
    result, _ = clean_tune
    assigned = result.segmenter.predict(clean_customers)
    assert adjusted_rand_score(clean_customers[TRUTH_COLUMN], assigned["segment_id"]) >= 0.9
    assert result.final_metrics[keys.BUSINESS_N_SEGMENTS] == 5
    assert result.final_metrics[keys.STABILITY_JACCARD_MEAN] >= 0.9
    assert result.chosen.feasible


@pytest.mark.slow
def test_every_trial_is_a_nested_run_with_documented_keys(clean_tune) -> None:
    result, uri = clean_tune
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([result.experiment_id], max_results=200)
    parents = [r for r in runs if r.data.tags.get(keys.TAG_ROLE) == keys.ROLE_STUDY]
    trials = [r for r in runs if r.data.tags.get(keys.TAG_ROLE) == keys.ROLE_TRIAL]
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    assert len(trials) == 30
    for run in trials:
        assert run.data.tags[keys.TAG_PARENT] == result.parent_run_id
        assert TRIAL_METRICS <= set(run.data.metrics)
        assert set(run.data.metrics) <= set(keys.METRICS)
        family = run.data.params[keys.PARAM_FAMILY]
        assert run.data.tags[keys.TAG_FAMILY] == family
        other = set(run.data.params) - {keys.PARAM_FAMILY}
        assert all(k.startswith((f"{family}.", "prep.")) for k in other)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics[keys.STUDY_N_TRIALS] == 30
    assert parent.data.tags[keys.TAG_SPEC_DIGEST]
    assert parent.inputs.dataset_inputs, "the training data is logged as the run's input"
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "study")}
    assert {"study/pareto_front.png", "study/history.png", "study/pareto_front.json"} <= artifacts
    segments = {a.path for a in client.list_artifacts(result.parent_run_id, "segments")}
    assert {"segments/embedding.png", "segments/sizes.png", "segments/profile.json"} <= segments


@pytest.mark.slow
def test_structure_free_data_is_less_stable(
    clean_tune, tmp_path: Path, write_spec: Callable[..., Path], tracking_uri: str
) -> None:
    spec = _spec(tmp_path, write_spec, structure_free_customers(2_000, seed=2))
    noisy = tune(spec, n_trials=15)
    clean, _ = clean_tune
    clean_stability = clean.final_metrics[keys.STABILITY_JACCARD_MEAN]
    assert noisy.final_metrics[keys.STABILITY_JACCARD_MEAN] < clean_stability - 0.15


@pytest.mark.slow
def test_interrupted_study_resumes_with_the_same_storage(
    tmp_path: Path, write_spec: Callable[..., Path], tracking_uri: str, clean_customers
) -> None:
    spec = _spec(tmp_path, write_spec, clean_customers.head(600))
    storage = f"journal:{tmp_path / 'study.journal'}"
    first = tune(spec, n_trials=3, storage=storage, families=["kmeans"])
    second = tune(spec, n_trials=7, storage=storage, families=["kmeans"])
    assert first.n_trials == 3 and second.n_trials == 7
    assert second.parent_run_id == first.parent_run_id
    client = mlflow.tracking.MlflowClient(tracking_uri)
    trials = client.search_runs(
        [second.experiment_id], filter_string=f"tags.`{keys.TAG_ROLE}` = 'trial'"
    )
    assert sorted(int(r.data.tags[keys.TAG_TRIAL]) for r in trials) == list(range(7))


def _result(number: int, objectives: tuple[float, ...], feasible: bool = True) -> TrialResult:
    return TrialResult(
        number,
        "kmeans",
        {},
        {keys.BUSINESS_N_SEGMENTS: 3.0},
        {"c": -1.0 if feasible else 1.0},
        objectives,
    )


def test_pareto_front_keeps_undominated_trials() -> None:
    results = [
        _result(0, (0.9, 0.2)),
        _result(1, (0.7, 0.9)),
        _result(2, (0.6, 0.6)),  # dominated by 1
        _result(3, (0.95, 0.95), feasible=False),
        _result(4, (0.2, 1.0)),
    ]
    assert [r.number for r in pareto_front(results)] == [3, 4]
    assert [r.number for r in pareto_front([r for r in results if r.feasible])] == [0, 1, 4]


@pytest.mark.slow
def test_failed_finalisation_marks_the_parent_failed_and_a_rerun_finishes(
    tmp_path: Path,
    write_spec: Callable[..., Path],
    tracking_uri: str,
    clean_customers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = _spec(tmp_path, write_spec, clean_customers.head(600))
    storage = f"journal:{tmp_path / 'study.journal'}"

    def disk_full(*args: object, **kwargs: object) -> str:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr("segml.experiment.log_segment_model", disk_full)
        with pytest.raises(OSError, match="No space left"):
            tune(spec, n_trials=3, storage=storage, families=["kmeans"])
    client = mlflow.tracking.MlflowClient(tracking_uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name(spec.name).experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_STUDY}'",
    )
    assert parent.info.status == "FAILED"

    rerun = tune(spec, n_trials=3, storage=storage, families=["kmeans"])
    assert rerun.parent_run_id == parent.info.run_id
    assert rerun.n_trials == 3 and rerun.model_version == "1"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_data_up_to_the_sample_size_is_searched_whole() -> None:
    X, value = np.arange(20.0).reshape(10, 2), np.arange(10.0)
    whole = search_data(X, value, seed=0, sample_size=10)
    assert whole.X is X and whole.value is value and whole.everyone is None
    sampled = search_data(X, value, seed=0, sample_size=4)
    assert sampled.X.shape == (4, 2) and sampled.customers.X is X
    assert (sampled.value == sampled.X[:, 0] / 2).all(), "each row keeps its own value"


def test_a_study_on_a_sample_picks_and_assigns_as_a_fit_on_everyone(
    tmp_path: Path, write_spec: Callable[..., Path], tracking_uri: str
) -> None:
    table = synthetic_customers(2_000, seed=2)
    spec = _spec(
        tmp_path, write_spec, table, sample_size=1_000, bootstrap_search=2, bootstrap_final=2
    )
    result = tune(spec, n_trials=2, families=["kmeans"], register=False)
    assert result.final_metrics[keys.STUDY_SAMPLE_SIZE] == 1_000
    assert result.final_metrics[keys.STUDY_REFIT_ARI] >= 0.99  # refitted on all 2,000
    assert result.chosen.params[keys.param_key("kmeans", "n_clusters")] == 5
    labels = result.segmenter.segmentation.labels
    X = result.segmenter.preprocess(table)
    everyone = fit_segmentation(X, "kmeans", {"n_clusters": 5}, {}, seed=3)
    assert adjusted_rand_score(everyone.labels, labels) >= 0.99
    assert adjusted_rand_score(table[TRUTH_COLUMN], labels) >= 0.99
    shares = np.bincount(labels) / len(table)  # shares count every customer, not the sample
    assert result.final_metrics[keys.BUSINESS_MIN_SHARE] == pytest.approx(shares.min())
