"""Tuning at scale: a full default study (every family, UMAP in the search, 30 trials) on 100k,
1M and 3M synthetic customers with known segments; wall time, peak memory, and how the pick,
fitted on the ``search.sample_size`` sample, agrees with the truth and with the same
configuration fitted on every customer.

Usage: ``python benchmarks/bench_scale.py [--sizes 100000 1000000] [--trials 30]
[--full-fit-max 100000] [--output benchmarks/results/scale.md] [--work DIR]``

Customers: ``segml.synthetic.synthetic_customers`` (5 equal unit-variance Gaussian segments,
centres at least 8 apart, in 4 features) with two more features whose segment means are drawn
as the generator draws its centres: 6 features, truth known. Each size runs in a child process
(``--one N``) that writes the table as Parquet, then times ``segml tune``'s function on the
spec every other option of which is at its default, into a throwaway MLflow store. Peak memory
is the child's process tree (the child and its bootstrap workers), summed and polled every
0.2 s from the parent. CPU is the user and system time of the child and its reaped workers:
other jobs on the machine stretch it far less than the wall time (on 2 quiet cores the wall
time is at least half of it). The load average (other jobs) is polled with the memory.

"The same configuration on all customers" refits the pick's parameters (its trial's seed) on
every customer with ``fit_segmentation``; parameters counted in customers (a density family's
``min_cluster_size`` and ``min_samples``) are scaled by customers / sample size first
(``segml.tuning.scaled``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from machine import load_average, machine, peak_rss_mib
from sklearn.metrics import adjusted_rand_score

RESULTS = Path(__file__).with_name("results") / "scale.md"
EXTRA_FEATURES = ("loyalty_index", "channel_mix")
POLL_SECONDS = 0.2


def customers(n: int, seed: int = 0) -> pd.DataFrame:
    """``synthetic_customers(n)`` with two more features that follow the segments."""
    from segml.synthetic import TRUTH_COLUMN, synthetic_customers

    frame = synthetic_customers(n, n_segments=5, seed=seed)
    rng = np.random.default_rng(seed + 1)
    means = np.random.default_rng(7).uniform(-16.0, 16.0, size=(6, len(EXTRA_FEATURES)))
    truth = frame[TRUTH_COLUMN].to_numpy()
    extra = means[truth] + rng.normal(size=(n, len(EXTRA_FEATURES)))
    for i, name in enumerate(EXTRA_FEATURES):
        frame.insert(5 + i, name, extra[:, i])
    return frame


def write_spec(frame: pd.DataFrame, folder: Path, trials: int) -> Path:
    """The customer table as Parquet and a default spec over its six features."""
    from segml.synthetic import FEATURES, synthetic_spec

    source = folder / "customers.parquet"
    frame.drop(columns="true_segment").to_parquet(source, index=False)
    spec = synthetic_spec(str(source), name="scale", search={"n_trials": trials})
    spec["data"]["attributes"] = {"behavioural": [*FEATURES, *EXTRA_FEATURES]}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_one(n: int, trials: int, full_fit_max: int, work: Path) -> dict[str, Any]:
    """Tune ``n`` customers in this process; the row of the results table."""
    import segml
    from segml import tuning
    from segml.families.segmentation import fit_segmentation

    started = time.perf_counter()
    frame = customers(n)
    spec = segml.load_spec(write_spec(frame, work, trials))
    generate_seconds = time.perf_counter() - started
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    started = time.perf_counter()
    result = segml.tune(spec, tracking_uri=tracking_uri)
    tune_seconds = time.perf_counter() - started

    segmenter = result.segmenter
    built = segml.build_features(spec)
    truth = frame.set_index("customer_id").loc[built.table["customer_id"], "true_segment"]
    labels = segmenter.segmentation.labels
    chosen = result.chosen
    params, reduction = tuning.split_params(chosen)
    fitted_on = int(result.final_metrics.get("study.sample_size", n))
    row: dict[str, Any] = {
        "customers": n,
        "sample": fitted_on,
        "trials": result.n_trials,
        "tune_seconds": tune_seconds,
        "generate_seconds": generate_seconds,
        "pick": chosen.family + ("+umap" if reduction.get("reducer", "none") != "none" else ""),
        "segments": int(result.final_metrics["business.n_segments"]),
        "ari_truth": adjusted_rand_score(truth.to_numpy(), labels),
        "refit_ari": result.final_metrics.get("study.refit_ari"),
        "ari_full_fit": None,
        "full_fit_seconds": None,
        "trial_seconds": trial_costs(tracking_uri, spec.name),
    }
    if n <= full_fit_max:
        params = tuning.scaled(chosen.family, params, n / fitted_on)
        X = segmenter.preprocess(built.table)
        started = time.perf_counter()
        seed = tuning.trial_seed(spec.search.seed, chosen.number)
        full = fit_segmentation(X, chosen.family, params, reduction, seed)
        row["full_fit_seconds"] = time.perf_counter() - started
        row["ari_full_fit"] = adjusted_rand_score(full.labels, labels)
        row |= reducer_check(X, spec.search.sample_size, spec.search.seed)
    row["child_peak_mib"] = peak_rss_mib()
    return row


def reducer_check(X: np.ndarray, sample_size: int, seed: int) -> dict[str, float]:
    """UMAP (5 components) then k-means (k = 5) fitted on the search's sample: every customer
    assigned by the model (UMAP's transform, then the nearest centroid) against the segment of
    the nearest sampled customer (what a reducer trial's business metrics use); ARI and
    seconds of each."""
    from segml import tuning
    from segml.families.segmentation import fit_segmentation

    data = tuning.search_data(X, None, seed, sample_size)
    reduction = {"reducer": "umap", "n_components": 5, "n_neighbors": 15, "min_dist": 0.0}
    fitted = fit_segmentation(data.X, "kmeans", {"n_clusters": 5}, reduction, seed)
    started = time.perf_counter()
    own = fitted.assign(X).labels
    own_seconds = time.perf_counter() - started
    started = time.perf_counter()
    nearest = tuning.everyone_labels(fitted, data)
    nearest_seconds = time.perf_counter() - started
    return {
        "umap_transform_seconds": own_seconds,
        "nearest_seconds": nearest_seconds,
        "nearest_ari": adjusted_rand_score(own, nearest),
    }


def trial_costs(tracking_uri: str, name: str) -> dict[str, list[float]]:
    """Seconds of each trial, by pool (family, +umap after a reducer)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`segml.role` = 'trial'")
    costs: dict[str, list[float]] = {}
    for run in runs:
        reducer = run.data.params.get("prep.reducer", "none")
        pool = run.data.params["family"] + ("+umap" if reducer != "none" else "")
        seconds = run.data.metrics.get("cost.trial_seconds")
        if seconds is not None:
            costs.setdefault(pool, []).append(round(seconds, 1))
    return costs


def tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (MiB), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def measure(n: int, trials: int, full_fit_max: int, work: Path) -> dict[str, Any]:
    """Run one size in a child process under ``nice``; its row with peak memory and load."""
    folder = work / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--one", str(n), "--trials", str(trials)]
    command += ["--full-fit-max", str(full_fit_max), "--work", str(folder)]
    started = dt.datetime.now(dt.timezone.utc)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=_nice)
    peak, loads = 0.0, []
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mib(child.pid))
            loads.append(os.getloadavg()[0])
            done.wait(POLL_SECONDS)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    assert child.stdout is not None
    out = child.stdout.read()
    # wait4, not wait: its CPU times include the child's reaped bootstrap workers, a figure
    # that other jobs on the machine stretch far less than the wall time.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    watcher.join()
    if child.returncode:
        raise SystemExit(f"size {n}: the child failed with exit code {child.returncode}")
    row = json.loads(out.strip().splitlines()[-1])
    return row | {
        "started_utc": f"{started:%Y-%m-%d %H:%M}",
        "peak_tree_mib": peak,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "load_mean": float(np.mean(loads)) if loads else np.nan,
        "load_max": float(np.max(loads)) if loads else np.nan,
    }


def _nice() -> None:
    os.nice(10)


def report(rows: list[dict[str, Any]], trials: int) -> str:
    """The Markdown results: one row per size, then each size's trial costs by pool."""
    lines = [
        f"# Tuning at scale ({dt.date.today():%Y-%m-%d})",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/bench_scale.py --sizes "
        f"{' '.join(str(r['customers']) for r in rows)} --trials {trials}`.",
        "",
        "| customers | fitted on | trials | tune wall | CPU (all processes) "
        "| peak memory (tree) | pick | segments "
        "| ARI vs truth | ARI vs refit on 4x sample | ARI vs same config on all "
        "| load avg mean / max | started (UTC) |",
        "|" + " ---: |" * 6 + " --- |" + " ---: |" * 4 + " --- | --- |",
    ]
    for r in rows:
        full = "-" if r["ari_full_fit"] is None else f"{r['ari_full_fit']:.3f}"
        refit = "-" if r["refit_ari"] is None else f"{r['refit_ari']:.3f}"
        cpu = f"{r['cpu_seconds'] / 60:.1f} min" if "cpu_seconds" in r else "-"
        lines.append(
            f"| {r['customers']:,} | {r['sample']:,} | {r['trials']} "
            f"| {r['tune_seconds'] / 60:.1f} min | {cpu} | {r['peak_tree_mib'] / 1024:.2f} GiB "
            f"| {r['pick']} | {r['segments']} | {r['ari_truth']:.3f} | {refit} | {full} "
            f"| {r['load_mean']:.1f} / {r['load_max']:.1f} | {r['started_utc']} |"
        )
    for r in rows:
        if "nearest_ari" in r:
            lines += [
                "",
                f"Reducer trials at {r['customers']:,}: UMAP + k-means (k = 5) fitted on the "
                f"sample; every customer assigned by UMAP's transform and the centroids took "
                f"{r['umap_transform_seconds']:.0f} s, by the nearest sampled customer's segment "
                f"{r['nearest_seconds']:.1f} s; the two agree at ARI {r['nearest_ari']:.3f}.",
            ]
    lines += ["", "Seconds per trial by pool (median, max, count):", ""]
    for r in rows:
        pools = ", ".join(
            f"{pool} {np.median(s):.1f} / {max(s):.1f} / {len(s)}"
            for pool, s in sorted(r["trial_seconds"].items())
        )
        lines.append(f"- {r['customers']:,}: {pools}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--full-fit-max", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        row = run_one(args.one, args.trials, args.full_fit_max, args.work)
        print(json.dumps(row))
        return [row]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = []
        for n in args.sizes:
            print(f"{n:,} customers: started, load {load_average()}", file=sys.stderr)
            rows.append(measure(n, args.trials, args.full_fit_max, work))
            print(report(rows, args.trials), file=sys.stderr)
    text = report(rows, args.trials)
    args.output.write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
