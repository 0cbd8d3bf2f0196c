"""The MLflow UI, in headless Chromium, shows a segml study and its registered champion.

Drives the same views as ``docs/screenshots.py`` (``make screenshots``) against a small store
made here: a tiny tune, registered and promoted.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from docs.screenshots import (
    CHROMIUM,
    chromium,
    mlflow_server,
    show_comparison,
    show_model,
    show_runs,
)
from segml import tracking as keys
from segml.cli import app
from segml.experiment import tune
from segml.registry import CHAMPION
from segml.spec import load_spec
from segml.synthetic import synthetic_customers, synthetic_spec

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytest.importorskip("playwright", reason="no Playwright: pip install -e '.[dev]'")
pytestmark = [
    pytest.mark.slow,  # make test-fast leaves this module out
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
    ),
]

MODEL = "ui_synthetic"
TRIALS = 3
SEARCH = {
    "seed": 3,
    "reduction": {"reducer": "none"},
    "bootstrap_search": 2,
    "bootstrap_final": 2,
    "families": {"kmeans": {"n_clusters": 5}, "gmm": {"n_components": 5}},
}


@dataclass(frozen=True)
class Store:
    experiment_id: str
    study_name: str
    trial_ids: list[str]
    trial_names: list[str]
    url: str
    study_id: str
    chosen_id: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A tiny study registered and promoted to champion, served by ``mlflow server``."""
    tmp = tmp_path_factory.mktemp("ui")
    synthetic_customers(300, seed=1).to_csv(tmp / "customers.csv", index=False)
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(synthetic_spec("customers.csv", MODEL, search=SEARCH)))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = tune(load_spec(spec_path), n_trials=TRIALS, tracking_uri=uri)
    promoted = CliRunner().invoke(
        app,
        [
            "promote",
            "1",
            "--model",
            MODEL,
            "--force",
            "--reason",
            "UI test",
            "--tracking-uri",
            uri,
        ],
    )
    assert promoted.exit_code == 0, promoted.output
    client = mlflow.MlflowClient(uri)
    study = client.get_run(result.parent_run_id)
    trials = client.search_runs(
        [study.info.experiment_id], f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_TRIAL}'"
    )
    chosen = [run for run in trials if run.data.tags.get(keys.TAG_CHOSEN) == "true"]
    with mlflow_server(uri, tmp / keys.ARTIFACTS_FOLDER, tmp / "server.log") as url:
        yield Store(
            study.info.experiment_id,
            study.info.run_name,
            [run.info.run_id for run in trials],
            [run.info.run_name for run in trials],
            url,
            study.info.run_id,
            chosen[0].info.run_id,
        )


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with chromium() as opened:
        yield opened


def test_run_table_shows_study_with_trial_runs_and_metrics(store: Store, page: Page) -> None:
    assert len(store.trial_names) == TRIALS
    show_runs(page, store.url, store.experiment_id, store.study_name)
    table = page.get_by_role("grid").first
    for name in (store.study_name, *store.trial_names):
        assert table.get_by_role("link", name=name, exact=True).is_visible(), name
    for key in (keys.QUALITY_SILHOUETTE, keys.STABILITY_JACCARD_MIN):
        assert table.get_by_role("columnheader", name=key).first.is_visible(), key


def test_comparison_shows_the_trials_side_by_side(store: Store, page: Page) -> None:
    show_comparison(page, store.url, store.experiment_id, store.trial_ids)
    text = page.inner_text("body")
    assert f"Comparing {TRIALS} Runs from 1 Experiment" in text
    assert all(name in text for name in store.trial_names)


def test_registered_model_shows_champion_alias_on_its_version(store: Store, page: Page) -> None:
    show_model(page, store.url, MODEL)
    row = page.get_by_role("row").filter(has_text="Version 1")
    assert f"@ {CHAMPION}" in " ".join(row.inner_text().split())  # the UI writes "@\xa0champion"


def test_the_chosen_trial_page_shows_its_user_source_and_mark(store: Store, page: Page) -> None:
    page.goto(f"{store.url}/#/experiments/{store.experiment_id}/runs/{store.chosen_id}")
    page.get_by_text(keys.TAG_CHOSEN).first.wait_for()
    text = page.inner_text("body")
    assert f"Created by\n{getpass.getuser()}" in text, text
    assert f"Source\n{Path(sys.argv[0]).name}" in text, text  # this process ran the tune


def test_the_segment_report_renders_in_the_artifact_viewer(store: Store, page: Page) -> None:
    run = f"{store.url}/#/experiments/{store.experiment_id}/runs/{store.study_id}"
    page.goto(f"{run}/artifacts/segments/report.html")
    frame = page.frame_locator("iframe").first
    frame.get_by_text("Who is in each segment").wait_for()
    assert frame.get_by_text("precision").first.is_visible()
