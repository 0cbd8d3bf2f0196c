"""Cost of one tuning trial per family at 10k..1M customers, and of tracking it in MLflow.

Usage: ``python benchmarks/bench_tuning.py [--sizes 10000 100000 1000000] [--repeats 3]
[--large-repeats 1] [--budget 600] [--output benchmarks/results/tuning.md]``

A trial is what ``segml tune`` does per trial (``tuning.run_trial``): ``fit_segmentation``
(UMAP if asked, then the clusterer) and ``evaluate`` (quality metrics with silhouette on the
spec's sample, business metrics, and the bootstrap stability with the spec's default
``bootstrap_search`` resamples, in parallel over the cores). Each family runs one fixed,
representative configuration (``CASES``) on ``synthetic_customers`` (5 segments, 4 features);
k-means also runs once behind UMAP at the smaller sizes. Every trial time is the median of
``--repeats`` runs (``--large-repeats`` from ``LARGE`` customers on).

A case is skipped, with the reason in the table, when the log-log fit of its smaller sizes
predicts more than ``--budget`` seconds for one trial; the predicted figure is printed, never
a measured one in its place. Tracking overhead is the median of ``TRACKING_CALLS`` trials'
tracking (``tracking.start_trial`` when the trial starts, ``tracking.finish_trial`` when it
ends) into a fresh SQLite store, with the params and metrics of a real trial. Prints a
Markdown table and writes it to ``--output``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from machine import load_average, machine

from segml import tracking as keys
from segml.families.segmentation import fit_segmentation
from segml.features import build_preprocessor, value_outcome
from segml.spec import Spec
from segml.synthetic import synthetic_customers, synthetic_spec
from segml.tuning import SearchData, evaluate

NO_REDUCTION: dict[str, Any] = {"reducer": "none"}
UMAP: dict[str, Any] = {"reducer": "umap", "n_components": 2, "n_neighbors": 15, "min_dist": 0.1}
LARGE = 1_000_000
"""From this many customers on, cases run ``--large-repeats`` times instead of ``--repeats``."""
TRACKING_CALLS = 50
RESULTS = Path(__file__).with_name("results") / "tuning.md"
SEED = 0


@dataclass(frozen=True, slots=True)
class Case:
    """One family with a fixed configuration, optionally behind UMAP, up to ``max_n`` rows."""

    family: str
    params: dict[str, Any]
    reduction: dict[str, Any] = field(default_factory=lambda: dict(NO_REDUCTION))
    max_n: int | None = None

    @property
    def label(self) -> str:
        """The family, with ``+ UMAP`` when reduced first."""
        umap = self.reduction["reducer"] == "umap"
        return f"{self.family} + UMAP" if umap else self.family


CASES = (
    Case("kmeans", {"n_clusters": 5, "init": "k-means++", "n_init": 3}),
    Case("gmm", {"n_components": 5, "covariance_type": "full", "reg_covar": 1e-6}),
    Case("hdbscan", {"min_cluster_size": 100, "min_samples": 10,
                     "cluster_selection_method": "eom", "cluster_selection_epsilon": 0.0}),
    Case("kmeans", {"n_clusters": 5, "init": "k-means++", "n_init": 3}, UMAP, max_n=100_000),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    """Medians of one case at one size, or the reason it was not measured."""

    case: Case
    n: int
    repeats: int = 0
    fit: float = float("nan")
    trial: float = float("nan")
    stability_share: float = float("nan")
    skipped: str = ""


def search_data(n: int) -> tuple[Spec, SearchData]:
    """The synthetic spec (every search default) and the preprocessed data of ``n`` customers."""
    spec = Spec.model_validate(synthetic_spec("unused.csv"))
    table = synthetic_customers(n, seed=SEED)
    X = build_preprocessor(spec, table).fit_transform(table)
    return spec, SearchData(X, value_outcome(spec, table), SEED)


def run_case(spec: Spec, data: SearchData, case: Case) -> dict[str, float]:
    """One trial of ``case``: its metrics, with fit and trial seconds as ``run_trial`` has them."""
    started = time.perf_counter()
    segmentation = fit_segmentation(data.X, case.family, case.params, case.reduction, SEED)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate(segmentation, data, spec, spec.search.bootstrap_search, SEED)
    metrics[keys.COST_FIT_SECONDS] = fit_seconds
    metrics[keys.COST_TRIAL_SECONDS] = time.perf_counter() - started
    return metrics


def measure(
    spec: Spec, data: SearchData, case: Case, repeats: int
) -> tuple[Row, dict[str, float]]:
    """Medians over ``repeats`` trials of ``case``, and the last trial's metrics."""
    runs = [run_case(spec, data, case) for _ in range(repeats)]
    trial = [r[keys.COST_TRIAL_SECONDS] for r in runs]
    row = Row(
        case,
        data.X.shape[0],
        repeats,
        fit=statistics.median(r[keys.COST_FIT_SECONDS] for r in runs),
        trial=statistics.median(trial),
        stability_share=statistics.median(
            r[keys.COST_STABILITY_SECONDS] / t for r, t in zip(runs, trial, strict=True)
        ),
    )
    return row, runs[-1]


def slope(rows: Sequence[Row], case: Case) -> tuple[float, float] | None:
    """Exponent and intercept of trial seconds against n on log-log, from measured sizes."""
    points = [(np.log(r.n), np.log(r.trial)) for r in rows if r.case == case and not r.skipped]
    if len(points) < 2:
        return None
    x, y = np.array(points).T
    exponent, intercept = np.polyfit(x, y, 1)
    return float(exponent), float(intercept)


def skip_reason(rows: Sequence[Row], case: Case, n: int, budget: float) -> str:
    """Why ``case`` is not measured at ``n`` ("" when it is): above its ``max_n``, or when
    the log-log fit of its measured sizes extrapolates one trial beyond ``budget`` seconds."""
    if case.max_n is not None and n > case.max_n:
        return f"not run above {case.max_n:,} customers (UMAP is measured at the smaller sizes)"
    fit = slope(rows, case)
    predicted = np.inf if fit is None else float(np.exp(fit[1]) * n ** fit[0])
    if fit is None or predicted <= budget:
        return ""
    sizes = ", ".join(f"{r.n:,}" for r in rows if r.case == case and not r.skipped)
    return (
        f"skipped: extrapolated {predicted:,.0f} s per trial (n^{fit[0]:.2f} fitted on "
        f"{sizes}) exceeds the {budget:.0f} s budget"
    )


def tracking_overhead(metrics: dict[str, float], params: dict[str, Any]) -> float:
    """Median seconds of a trial's tracking (``tracking.start_trial`` then
    ``tracking.finish_trial``) into a fresh embedded store."""
    with tempfile.TemporaryDirectory() as tmp:
        client = keys.connect(f"sqlite:///{tmp}/mlflow.db")
        experiment = keys.experiment_id(client, "bench")
        parent = keys.study_run(client, experiment, ("bench", "bench"), "digest", None)
        seconds = []
        for number in range(TRACKING_CALLS):
            started = time.perf_counter()
            run_id = keys.start_trial(client, experiment, parent, number, "digest")
            keys.finish_trial(client, run_id, number, params, metrics, True)
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def trial_params(case: Case) -> dict[str, Any]:
    """The namespaced params ``run_trial`` logs for ``case``."""
    params: dict[str, Any] = {keys.PARAM_FAMILY: case.family}
    params |= {keys.param_key(case.family, k): v for k, v in case.params.items()}
    return params | {keys.param_key(keys.PREP_NAMESPACE, k): v for k, v in case.reduction.items()}


def table_row(row: Row, rows: Sequence[Row]) -> str:
    """One Markdown row: the medians, or the reason the case was not measured."""
    head = f"| {row.case.label} | {row.n:,} |"
    if row.skipped:
        return f"{head} {row.skipped} | | | | |"
    fit = slope(rows, row.case)
    growth = "-" if fit is None else f"n^{fit[0]:.2f}"
    return (
        f"{head} {row.trial:.2f} | {row.fit:.2f} | {row.stability_share:.0%} | "
        f"{row.repeats} | {growth} |"
    )


def report(rows: Sequence[Row], tracking: float, loads: tuple[str, str]) -> str:
    """The Markdown results: machine, table, tracking overhead."""
    measured = [r for r in rows if not r.skipped]
    smallest = min(measured, key=lambda r: r.trial).trial if measured else float("nan")
    lines = [
        f"Machine: {machine()}; 1-min load average {loads[0]} at start, {loads[1]} at end.",
        "",
        "| case | customers | trial s (median) | fit s | stability share | repeats | growth |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *(table_row(row, rows) for row in rows),
        "",
        f"Tracking overhead per trial (`start_trial` + `finish_trial` into SQLite, median of "
        f"{TRACKING_CALLS} calls): {tracking * 1000:.0f} ms, {tracking / smallest:.1%} of the "
        "cheapest trial above.",
        "",
        "Growth is the log-log slope of trial seconds over the measured sizes (1 = linear). "
        "k-means switches to MiniBatchKMeans at 50,000 rows, so its slope spans two algorithms.",
    ]
    return "\n".join(lines) + "\n"


def run(
    sizes: Sequence[int], repeats: int, large_repeats: int, budget: float
) -> tuple[list[Row], dict[str, float]]:
    """Measure every case at every size (smallest first), skipping unaffordable ones; also
    return the metrics of the first trial (what the tracking overhead is measured with)."""
    rows: list[Row] = []
    first: dict[str, float] = {}
    for n in sorted(sizes):
        spec, data = search_data(n)
        for case in CASES:
            reason = skip_reason(rows, case, n, budget)
            if reason:
                rows.append(Row(case, n, skipped=reason))
            else:
                row, metrics = measure(spec, data, case, repeats if n < LARGE else large_repeats)
                rows.append(row)
                first = first or metrics
            print(table_row(rows[-1], rows), flush=True)
    return rows, first


def main() -> None:
    """Measure, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, LARGE])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-repeats", type=int, default=1)
    parser.add_argument("--budget", type=float, default=600.0, help="max seconds per trial")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    start_load = load_average()
    rows, metrics = run(args.sizes, args.repeats, args.large_repeats, args.budget)
    tracking = tracking_overhead(metrics, trial_params(CASES[0]))
    text = report(rows, tracking, (start_load, load_average()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
