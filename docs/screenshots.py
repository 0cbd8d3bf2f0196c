"""Screenshots of the MLflow UI on a segml store, taken in Debian's headless Chromium.

Usage (after ``make demo``): ``make screenshots``, or
``python -m docs.screenshots [--store .] [--spec experiments/cdnow.yaml] [--out docs/images]``.

Starts ``mlflow server`` on a free loopback port against ``sqlite:///<store>/mlflow.db`` (artifacts
in ``<store>/mlartifacts``), waits until it answers, opens the views that matter in Chromium
(``/usr/bin/chromium``, driven by Playwright) and waits for their content before saving:

- ``runs.png``: the experiment's run table, the latest study expanded to its trial runs, with
  segml metric columns;
- ``compare.png``: the comparison of the study's best trials by silhouette;
- ``model.png``: the registered model's versions with their aliases (``champion``).

Exit code 2, with one line, when Chromium, Playwright or the store is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient

from segml import tracking as keys
from segml.registry import CHAMPION
from segml.spec import load_spec

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH = 1600
HEIGHTS = {"runs.png": 800, "compare.png": 1700, "model.png": 1300}
TIMEOUT_MS = 60_000
RUN_COLUMNS = (
    keys.QUALITY_SILHOUETTE,
    keys.STABILITY_JACCARD_MIN,
    keys.BUSINESS_N_SEGMENTS,
    keys.BUSINESS_MIN_SHARE,
    keys.BUSINESS_VALUE_R2,
)
HIDDEN_COLUMNS = ("Dataset", "Source")
COMPARED_TRIALS = 4


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """Run ``mlflow server`` on a free loopback port until the block ends; yield its URL.

    Raises
    ------
    RuntimeError
        If the server exits or does not answer ``/health`` within two minutes (with the end
        of its log).
    """
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        *("--backend-store-uri", backend, "--artifacts-destination", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(server, url, log)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after 120 s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def chromium() -> Iterator[Page]:
    """A page in a fresh headless Chromium profile (Debian's ``/usr/bin/chromium``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHTS["runs.png"]})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _open(page: Page, url: str, ready: str) -> None:
    """Go to ``url``, wait for the text ``ready``, close the assistant panel and pick the
    model-training side bar."""
    page.goto(url)
    page.get_by_text(ready, exact=True).first.wait_for()
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
    page.get_by_role("button", name="Model training", exact=True).click()


def _toggle_column(page: Page, group: str, column: str) -> None:
    """Tick or untick ``column`` of ``group`` in the open column selector."""
    search = page.get_by_placeholder("Search columns")
    tree = page.get_by_test_id("column-selector-tree")
    search.fill("")
    search.fill(column)
    tree.locator(f"[title^='{group}']").wait_for()
    page.wait_for_timeout(300)  # the filtered tree settles
    node = tree.locator(f"xpath=.//span[strong][normalize-space(.)='{column}']")
    if not node.count():  # the search left the group folded: unfold it
        tree.locator(
            f"xpath=.//span[starts-with(@title, '{group}')]/preceding-sibling::span[2]"
        ).click()
    node.click()


def show_runs(page: Page, url: str, experiment_id: str, study_run: str) -> None:
    """The experiment's run table with segml metric columns and ``study_run`` expanded."""
    _open(page, f"{url}/#/experiments/{experiment_id}/runs", "Columns")
    page.get_by_role("button", name="Columns", exact=True).click()
    for column in HIDDEN_COLUMNS:
        _toggle_column(page, "Attributes", column)
    for column in RUN_COLUMNS:
        _toggle_column(page, "Metrics", column)
    page.keyboard.press("Escape")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=study_run, exact=True))
    row.get_by_role("button").first.click()
    page.get_by_role("link", name=re.compile(r"^trial-\d+")).first.wait_for()
    page.get_by_role("columnheader", name=keys.QUALITY_SILHOUETTE).first.wait_for()


def show_comparison(page: Page, url: str, experiment_id: str, run_ids: Sequence[str]) -> None:
    """MLflow's comparison page for ``run_ids``."""
    query = urllib.parse.urlencode(
        {"runs": json.dumps(list(run_ids)), "experiments": json.dumps([experiment_id])}
    )
    _open(page, f"{url}/#/compare-runs?{query}", keys.QUALITY_SILHOUETTE)
    page.get_by_text("Visualizations", exact=True).click()  # folded: the tables tell more
    page.get_by_role("link", name=keys.BUSINESS_VALUE_R2, exact=True).first.wait_for()


def show_model(page: Page, url: str, model_name: str) -> None:
    """The registered model's page: its versions and their aliases."""
    _open(page, f"{url}/#/models/{urllib.parse.quote(model_name)}", f"@ {CHAMPION}")


def latest_study(client: MlflowClient, experiment_id: str) -> tuple[str, str]:
    """The id and name of the experiment's latest study (parent) run."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_STUDY}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError(f"experiment {experiment_id} has no segml study run: run segml tune")
    return runs[0].info.run_id, runs[0].info.run_name


def best_trials(client: MlflowClient, experiment_id: str, study_id: str, n: int) -> list[str]:
    """The ids of the study's ``n`` feasible trials with the highest silhouette."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{keys.TAG_PARENT}` = '{study_id}' and tags.`{keys.TAG_FEASIBLE}` = 'true'"
        ),
        order_by=[f"metrics.`{keys.QUALITY_SILHOUETTE}` DESC"],
        max_results=n,
    )
    return [run.info.run_id for run in runs]


def take_screenshots(store: Path, spec_path: Path, out: Path) -> list[Path]:
    """Serve ``store`` and save the run table, trial comparison and model page under ``out``."""
    spec = load_spec(spec_path)
    backend = f"sqlite:///{(store / 'mlflow.db').resolve()}"
    client = MlflowClient(backend, registry_uri=backend)
    experiment = client.get_experiment_by_name(spec.name)
    if experiment is None:
        raise LookupError(f"{backend}: no experiment {spec.name!r}: run make demo first")
    exp_id = experiment.experiment_id
    study_id, study_name = latest_study(client, exp_id)
    trials = best_trials(client, exp_id, study_id, COMPARED_TRIALS)
    views: dict[str, Callable[[Page, str], None]] = {
        "runs.png": lambda page, url: show_runs(page, url, exp_id, study_name),
        "compare.png": lambda page, url: show_comparison(page, url, exp_id, trials),
        "model.png": lambda page, url: show_model(page, url, spec.model_name),
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "mlflow-server.log"
        artifacts = store / keys.ARTIFACTS_FOLDER
        with mlflow_server(backend, artifacts, log) as url, chromium() as page:
            for name, show in views.items():
                page.set_viewport_size({"width": WIDTH, "height": HEIGHTS[name]})
                show(page, url)
                page.wait_for_timeout(500)  # let the last rows paint
                page.screenshot(path=out / f"{name}.part", type="png")
                (out / f"{name}.part").replace(out / name)
    return [out / name for name in views]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: take the screenshots; exit 2 with one line when something is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("."), help="folder of mlflow.db")
    parser.add_argument("--spec", type=Path, default=Path("experiments/cdnow.yaml"))
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"screenshots: {CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    if not (args.store / "mlflow.db").exists():
        print(f"screenshots: {args.store / 'mlflow.db'} not found: run make demo", file=sys.stderr)
        return 2
    try:
        for path in take_screenshots(args.store, args.spec, args.out):
            print(f"screenshots: {path}")
    except (LookupError, ImportError) as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the UI did not show what it should: say what, in one line
        print(f"screenshots: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
