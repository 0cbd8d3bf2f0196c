"""Cost of one tuning trial per family at 10k..1M customers, and of tracking it in MLflow.

Usage: ``python benchmarks/bench_tuning.py [--sizes 10000 100000 1000000] [--repeats 3]``

A trial is what ``segml tune`` does per trial: fit, quality metrics (silhouette on the spec's
sample), business metrics and the bootstrap stability with the spec's default B. Each family
runs one representative configuration on ``synthetic_customers`` (5 segments, 4 features).
Tracking overhead is ``tracking.log_trial`` (one nested run, one batched call) into a fresh
SQLite store. Prints medians as a Markdown table and writes ``benchmarks/results/tuning.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from segml import tracking
from segml.features import build_preprocessor
from segml.spec import Spec
from segml.synthetic import synthetic_customers, synthetic_spec
from segml.tuning import SearchData, evaluate, fit_segmentation

CONFIGS = {
    "kmeans": {"n_clusters": 5, "init": "k-means++", "n_init": 3},
    "gmm": {"n_components": 5, "covariance_type": "full", "reg_covar": 1e-6, "n_init": 1,
            "max_iter": 200},
    "hdbscan": {"min_cluster_size": 100, "min_samples": 10, "cluster_selection_method": "eom",
                "cluster_selection_epsilon": 0.0},
}  # fmt: skip
SKIP_ABOVE = {"hdbscan": 200_000}
"""Largest size measured per family: beyond it one trial takes longer than this run allows."""
RESULTS = Path(__file__).with_name("results") / "tuning.md"


def trial_cost(spec: Spec, data: SearchData, family: str) -> tuple[float, float]:
    """Seconds for one trial and for its stability step."""
    started = time.perf_counter()
    segmentation = fit_segmentation(data.X, family, CONFIGS[family], {"reducer": "none"}, 0)
    metrics = evaluate(segmentation, data, spec, spec.search.bootstrap_search, 0)
    return time.perf_counter() - started, metrics[tracking.COST_STABILITY_SECONDS]


def tracking_cost(metrics: dict[str, float], calls: int = 20) -> float:
    """Median seconds of ``log_trial`` into a fresh embedded store."""
    with tempfile.TemporaryDirectory() as tmp:
        client = tracking.connect(f"sqlite:///{tmp}/mlflow.db")
        experiment = tracking.experiment_id(client, "bench")
        parent = tracking.study_run(client, experiment, "bench", "digest", None)
        params = {"family": "kmeans", **{f"kmeans.{k}": v for k, v in CONFIGS["kmeans"].items()}}
        seconds = []
        for number in range(calls):
            started = time.perf_counter()
            tracking.log_trial(client, experiment, parent, number, params, metrics, True, "d")
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure(n: int, repeats: int) -> list[tuple[str, int, float, float]]:
    """(family, n, median trial seconds, median stability share) per family."""
    table = synthetic_customers(n, seed=0)
    spec = Spec.model_validate(synthetic_spec("unused.csv"))
    X = build_preprocessor(spec, table).fit_transform(table)
    data = SearchData(X, table["revenue"].to_numpy(float), 0)
    rows = []
    for family in CONFIGS:
        if n > SKIP_ABOVE.get(family, np.inf):
            rows.append((family, n, float("nan"), float("nan")))
            continue
        runs = [trial_cost(spec, data, family) for _ in range(repeats if n < 1_000_000 else 1)]
        total = statistics.median(r[0] for r in runs)
        share = statistics.median(r[1] / r[0] for r in runs)
        rows.append((family, n, total, share))
        print(f"  {family:<8} n={n:>9,}  trial {total:8.2f} s  stability {share:5.1%}", flush=True)
    return rows


def growth(rows: list[tuple[str, int, float, float]], family: str) -> str:
    """Log-log slope of trial time against n (1 = linear)."""
    points = [(np.log(n), np.log(t)) for f, n, t, _ in rows if f == family and np.isfinite(t)]
    if len(points) < 2:
        return "-"
    x, y = np.array(points).T
    return f"n^{np.polyfit(x, y, 1)[0]:.2f}"


def report(rows: list[tuple[str, int, float, float]], tracking_seconds: float) -> str:
    """The Markdown table of the results, with the machine they were measured on."""
    lines = [
        f"Machine: {os.cpu_count()} cores, {_cpu_model()}, Python {platform.python_version()}",
        "",
        "| family | customers | trial (s, median) | stability share | growth |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for family, n, total, share in rows:
        if np.isfinite(total):
            cells = f"{total:.2f} | {share:.0%} | {growth(rows, family)}"
        else:
            cells = f"not measured (above {SKIP_ABOVE[family]:,}) | - | -"
        lines.append(f"| {family} | {n:,} | {cells} |")
    lines += [
        "",
        f"Tracking overhead per trial (log_trial, SQLite): {tracking_seconds * 1000:.0f} ms",
    ]
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    """Measure, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [row for n in args.sizes for row in measure(n, args.repeats)]
    metrics = dict.fromkeys(tracking.METRICS, 0.5)
    text = report(rows, tracking_cost(metrics))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
