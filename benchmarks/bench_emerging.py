"""Emerging segments against injected groups in real customers: precision, recall, false alarms.

Usage: ``python benchmarks/bench_emerging.py [--models kmeans kmeans+umap gmm gmm+umap hdbscan
hdbscan+umap] [--kinds extreme combination gap] [--shares 0.01 0.03] [--seeds 2] [--steady 20]
[--train-customers N] [--output benchmarks/results/emerging.md] [--workdir build/bench_emerging]``.

The CDNOW transaction log (``experiments/data``) is split by customer: 60% train a model of
each family, with and without UMAP, on their 1997 purchases (``experiments/cdnow.yaml``'s
features); the other 40% are never seen in training and make the batches, scored as raw
transaction rows through ``segml.scoring.score`` as of 1997-12-31:

- injected: the held-out customers plus 1% or 3% of customers of one kind, built as raw rows:
  ``extreme`` (wholesale-like: about 35 orders of about $7,400), ``combination`` (ordinary values
  in an unusual combination: 12-16 orders, each one CD for about $7), ``gap`` (a dense group
  inside the training range where training had no customers: the purchase pattern whose
  features lie farthest from any training customer while every feature stays within the
  training 2nd-98th percentiles). The candidate holding most injected customers gives precision
  (injected among its members) and recall (injected customers it holds);
- steady: ``--steady`` random 80% subsets of the held-out customers, with candidate minimums of
  20 customers and 0.2% of the batch, so that any group of novel customers could be reported;
- later: all held-out customers scored as of 1998-03-31 and 1998-06-30 (real time passing:
  recency grows, customers come back).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from machine import load_average, machine
from scipy.spatial import cKDTree

from segml.families.segmentation import fit_segmentation
from segml.features import build_features, build_preprocessor
from segml.model import Segmenter, build_segmenter
from segml.monitoring import EMERGING_ID
from segml.scoring import score
from segml.spec import Spec, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "cdnow.yaml"
ID, DATE, CDS, DOLLARS = "customer_id", "date", "number_of_cds", "dollar_value"
TRAIN_SHARE = 0.6
TRAIN_DATE = dt.date(1997, 12, 31)
LATER_DATES = (dt.date(1998, 3, 31), dt.date(1998, 6, 30))
UMAP = {"reducer": "umap", "n_components": 5, "n_neighbors": 15, "min_dist": 0.0}
MODELS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "kmeans": ("kmeans", {"n_clusters": 5}, {}),
    "kmeans+umap": ("kmeans", {"n_clusters": 5}, UMAP),
    "gmm": ("gmm", {"n_components": 5}, {}),
    "gmm+umap": ("gmm", {"n_components": 5}, UMAP),
    "hdbscan": ("hdbscan", {"min_cluster_size": 100, "min_samples": 10}, {}),
    "hdbscan+umap": ("hdbscan", {"min_cluster_size": 100, "min_samples": 10}, UMAP),
}
KINDS = ("extreme", "combination", "gap")
TARGET = {0.03: 0.8, 0.01: 0.7}
"""Precision and recall the candidate must reach, by injected share."""
STEADY_SHARE = 0.8
STEADY_MIN_SIZE, STEADY_MIN_SHARE = 20, 0.002
FIRST_INJECTED_ID = 900_000


@dataclass(frozen=True)
class Data:
    """The CDNOW log split by customer: training rows and held-out rows."""

    train: pd.DataFrame
    held_out: pd.DataFrame


def read_log() -> pd.DataFrame:
    """The bundled CDNOW log with integer ids and YYYYMMDD dates."""
    path = ROOT / "experiments" / "data" / "cdnow_master.txt"
    return pd.read_csv(path, sep=r"\s+", dtype={DATE: str})


def split(
    log: pd.DataFrame, train_customers: int | None = None, held_out_customers: int | None = None
) -> Data:
    """Training and held-out customers (``TRAIN_SHARE``), at most ``train_customers`` and
    ``held_out_customers`` of them."""
    ids = np.random.default_rng(0).permutation(log[ID].unique())
    cut = int(TRAIN_SHARE * ids.size)
    train, held_out = ids[: min(cut, train_customers or cut)], ids[cut:][:held_out_customers]
    return Data(log[log[ID].isin(train)], log[log[ID].isin(held_out)])


def spec_for(source: Path, workdir: Path) -> Spec:
    """``experiments/cdnow.yaml`` reading a comma-separated log at ``source``."""
    spec = load_spec(SPEC)
    data = spec.data.model_copy(update={"source": source, "delimiter": ","})
    return spec.model_copy(update={"data": data, "path": workdir / "spec.yaml"})


def write_log(rows: pd.DataFrame, path: Path) -> Path:
    """Write raw transaction rows as the comma-separated log the spec reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows[[ID, DATE, CDS, DOLLARS]].to_csv(path, index=False)
    return path


def fit_model(name: str, train: pd.DataFrame, workdir: Path) -> tuple[Segmenter, np.ndarray]:
    """A model ``name`` (see ``MODELS``) fitted on the training rows, and its training
    customers' preprocessed features."""
    family, params, reduction = MODELS[name]
    spec = spec_for(write_log(train, workdir / "train.csv"), workdir)
    built = build_features(spec)
    preprocessor = build_preprocessor(spec, built.table).fit(built.table)
    X = preprocessor.transform(built.table)
    segmentation = fit_segmentation(X, family, params, reduction, 0)
    reducer = segmentation.reducer
    Z = X if reducer is None else reducer.embedding_
    segmenter = build_segmenter(spec, built.features, preprocessor, segmentation, built.table, Z)
    return segmenter, np.asarray(X, dtype=np.float64)


def _dates(rng: np.random.Generator, n: int, orders: np.ndarray, last_day: np.ndarray) -> list:
    """Per customer, ``orders`` purchase dates evenly spaced from a first day in Q1 1997 to
    its ``last_day`` (days after 1997-01-01), as YYYYMMDD text."""
    start = pd.Timestamp("1997-01-01")
    # A first day in Q1 that leaves at least a day between orders (one order a day at most).
    first = (rng.random(n) * np.clip(last_day - orders, 1, 90)).astype(int)
    days = [
        np.linspace(f, last, k).round().astype(int)
        for f, k, last in zip(first, orders, last_day, strict=True)
    ]
    return [(start + pd.to_timedelta(d, unit="D")).strftime("%Y%m%d") for d in days]


@dataclass(frozen=True)
class Pattern:
    """A purchase pattern: orders per customer, dollars and CDs per order, last purchase day
    (days after 1997-01-01), and the relative jitter of the dollars."""

    orders: int
    basket: float
    cds: int
    last_day: int
    jitter: float = 0.1


EXTREME = Pattern(orders=35, basket=7_400.0, cds=300, last_day=350, jitter=0.25)
COMBINATION = Pattern(orders=14, basket=7.0, cds=1, last_day=340, jitter=0.1)


def pattern_rows(
    pattern: Pattern, n: int, rng: np.random.Generator, first_id: int
) -> pd.DataFrame:
    """Raw transaction rows of ``n`` customers following ``pattern``, ids from ``first_id``."""
    spread = max(1, pattern.orders // 5)
    orders = np.maximum(2, rng.integers(pattern.orders - spread, pattern.orders + spread + 1, n))
    last = np.clip(pattern.last_day + rng.integers(-10, 11, n), 0, 364)
    frames = []
    for i, dates in enumerate(_dates(rng, n, orders, last)):
        basket = pattern.basket * rng.lognormal(0.0, pattern.jitter, size=len(dates))
        frames.append(
            pd.DataFrame(
                {
                    ID: first_id + i,
                    DATE: dates,
                    CDS: np.maximum(1, np.round(pattern.cds * basket / pattern.basket)).astype(
                        int
                    ),
                    DOLLARS: basket.round(2),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def gap_pattern(segmenter: Segmenter, X_train: np.ndarray, workdir: Path) -> Pattern:
    """The purchase pattern, among a grid, whose customers lie farthest (distance to the 20th
    nearest training customer, preprocessed features) from the training customers while every
    feature stays within the training 2nd-98th percentiles: a dense group there is inside the
    training range, where no segment had customers."""
    grid = [
        Pattern(orders, basket, cds, last_day, jitter=0.03)
        for orders in (2, 3, 4, 5, 7, 9)
        for basket in (8.0, 15.0, 25.0, 40.0, 70.0, 120.0)
        for cds in (1, 2, 4)
        for last_day in (60, 150, 240, 330)
    ]
    rng = np.random.default_rng(0)
    rows = pd.concat([pattern_rows(p, 1, rng, i) for i, p in enumerate(grid)], ignore_index=True)
    spec = spec_for(write_log(rows, workdir / "grid.csv"), workdir)
    table = build_features(spec).table  # ids as text, in the order of the grid
    table = table.set_index(ID).loc[[str(i) for i in range(len(grid))]].reset_index()
    X = segmenter.preprocess(table)
    low, high = np.quantile(X_train, [0.02, 0.98], axis=0)
    inside = ((X >= low) & (X <= high)).all(axis=1)
    distance = cKDTree(X_train).query(X, k=20)[0][:, -1]
    return grid[int(np.flatnonzero(inside)[distance[inside].argmax()])]


def scored(
    segmenter: Segmenter, spec: Spec, rows: pd.DataFrame, date: dt.date, workdir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The candidates table of one batch of raw rows and each customer's ``emerging_id``."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        source = write_log(rows, Path(tmp) / "batch.csv")
        output = Path(tmp) / "scores.parquet"
        summary = score(segmenter, source, output, spec=spec, reference_date=date)
        found = pd.read_parquet(output, columns=[ID, EMERGING_ID])
    return summary.report.emerging.table, found


def with_monitoring(spec: Spec, **settings: float) -> Spec:
    """``spec`` with other ``monitoring`` settings."""
    return spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update=settings)})


def injected_count(held_out: int, share: float) -> int:
    """Customers to inject for them to be ``share`` of the batch."""
    return round(share * held_out / (1 - share))


def precision_recall(found: pd.DataFrame, injected: set[int]) -> tuple[str, float, float]:
    """The candidate holding most injected customers, its precision and recall (0 if none)."""
    members = found.dropna(subset=[EMERGING_ID])
    if members.empty:
        return "", 0.0, 0.0
    hit = members[ID].astype(str).isin({str(i) for i in injected})
    hits = hit.groupby(members[EMERGING_ID]).agg(["sum", "size"])
    best = hits["sum"].idxmax()
    return (
        best,
        hits.loc[best, "sum"] / hits.loc[best, "size"],
        hits.loc[best, "sum"] / len(injected),
    )


def differs(table: pd.DataFrame) -> str:
    """The candidates' explanations, for the tables."""
    column = "explanation" if "explanation" in table.columns else "differs_by"
    return "; ".join(
        f"{r[EMERGING_ID]} ({r['customers']}): {r[column]}" for _, r in table.iterrows()
    )


def injected_batch(
    segmenter: Segmenter, data: Data, pattern: Pattern, share: float, seed: int, workdir: Path
) -> tuple[pd.DataFrame, str, float, float]:
    """The candidates of the held-out customers plus ``share`` of injected ones following
    ``pattern``, and the best candidate's id, precision and recall."""
    n = injected_count(data.held_out[ID].nunique(), share)
    rows = pattern_rows(pattern, n, np.random.default_rng(1000 + seed), FIRST_INJECTED_ID)
    batch = pd.concat([data.held_out, rows], ignore_index=True)
    table, found = scored(segmenter, segmenter.spec, batch, TRAIN_DATE, workdir)
    return table, *precision_recall(found, set(rows[ID]))


def injected_runs(
    name: str, segmenter: Segmenter, data: Data, patterns: dict[str, Pattern], args: Any
) -> list[dict[str, Any]]:
    """One row per (kind, share, seed): candidates, precision, recall."""
    results = []
    for kind in args.kinds:
        for share in args.shares:
            for seed in range(args.seeds):
                table, _, precision, recall = injected_batch(
                    segmenter, data, patterns[kind], share, seed, args.workdir
                )
                results.append(
                    {
                        "model": name,
                        "kind": kind,
                        "share": share,
                        "seed": seed,
                        "injected": injected_count(data.held_out[ID].nunique(), share),
                        "candidates": len(table),
                        "precision": precision,
                        "recall": recall,
                        "passed": len(table) == 1
                        and min(precision, recall) >= TARGET.get(share, 0.8),
                        "found": differs(table),
                    }
                )
                print(f"  {name} {kind} {share:.0%} seed {seed}: {results[-1]}", flush=True)
    return results


def steady_batch(segmenter: Segmenter, data: Data, seed: int, workdir: Path) -> pd.DataFrame:
    """The candidates of a random ``STEADY_SHARE`` of the held-out customers, scored with
    candidate minimums small enough for any group of novel customers to be reported."""
    spec = with_monitoring(
        segmenter.spec, candidate_min_size=STEADY_MIN_SIZE, candidate_min_share=STEADY_MIN_SHARE
    )
    ids = data.held_out[ID].unique()
    keep = np.random.default_rng(seed).choice(ids, int(STEADY_SHARE * ids.size), replace=False)
    rows = data.held_out[data.held_out[ID].isin(keep)]
    return scored(segmenter, spec, rows, TRAIN_DATE, workdir)[0]


def steady_runs(name: str, segmenter: Segmenter, data: Data, args: Any) -> dict[str, Any]:
    """Candidates on ``--steady`` steady batches."""
    counts, found = [], []
    for seed in range(args.steady):
        table = steady_batch(segmenter, data, seed, args.workdir)
        counts.append(len(table))
        if len(table):
            found.append(f"batch {seed}: {differs(table)}")
    print(f"  {name} steady: {counts}", flush=True)
    return {"model": name, "batches": args.steady, "candidates": sum(counts), "found": found}


def later_runs(name: str, segmenter: Segmenter, data: Data, args: Any) -> list[dict[str, Any]]:
    """Candidates on all held-out customers scored at the later reference dates."""
    results = []
    for date in LATER_DATES:
        table, found = scored(segmenter, segmenter.spec, data.held_out, date, args.workdir)
        results.append(
            {"model": name, "date": date, "candidates": len(table), "found": differs(table)}
        )
        print(f"  {name} later {date}: {results[-1]}", flush=True)
    return results


def markdown(
    injected: pd.DataFrame, steady: pd.DataFrame, later: pd.DataFrame, header: str
) -> str:
    """The results as the Markdown section written to ``--output``."""
    lines = [header, "", "Injected groups (one row per model, kind and share; seeds pooled):", ""]
    lines += [
        "| model | kind | share | injected | runs passed | candidates per run "
        "| precision (min) | recall (min) |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for (model, kind, share), g in injected.groupby(["model", "kind", "share"], sort=False):
        lines.append(
            f"| {model} | {kind} | {share:.0%} | {g['injected'].iloc[0]} | "
            f"{int(g['passed'].sum())} of {len(g)} | {', '.join(map(str, g['candidates']))} | "
            f"{g['precision'].min():.2f} | {g['recall'].min():.2f} |"
        )
    lines += [
        "",
        "Steady batches (80% of the held-out customers, minimums 20 customers, 0.2%):",
        "",
    ]
    lines += ["| model | batches | candidates |", "| --- | ---: | ---: |"]
    lines += [f"| {r.model} | {r.batches} | {r.candidates} |" for r in steady.itertuples()]
    lines += ["", "Later reference dates (all held-out customers, default minimums):", ""]
    lines += ["| model | as of | candidates | what they are |", "| --- | --- | ---: | --- |"]
    lines += [
        f"| {r.model} | {r.date} | {r.candidates} | {r.found or '-'} |" for r in later.itertuples()
    ]
    failed = injected[~injected["passed"]]
    if len(failed):
        lines += ["", "Injected runs that missed the target:", ""]
        lines += [
            f"- {r.model}, {r.kind} {r.share:.0%} seed {r.seed}: {r.candidates} candidate(s), "
            f"precision {r.precision:.2f}, recall {r.recall:.2f}; {r.found or 'none'}"
            for r in failed.itertuples()
        ]
    alarms = [f"- {r.model}: {'; '.join(r.found)}" for r in steady.itertuples() if r.found]
    if alarms:
        lines += ["", "Steady-batch candidates:", "", *alarms]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.03])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steady", type=int, default=20)
    parser.add_argument("--later", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-customers", type=int, help="fewer training customers")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench_emerging"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started, load = time.perf_counter(), load_average()
    data = split(read_log(), args.train_customers)
    injected, steady, later = [], [], []
    for name in args.models:
        segmenter, X_train = fit_model(name, data.train, args.workdir)
        patterns = {"extreme": EXTREME, "combination": COMBINATION}
        if "gap" in args.kinds:
            patterns["gap"] = gap_pattern(segmenter, X_train, args.workdir)
            print(f"  {name} gap pattern: {patterns['gap']}", flush=True)
        injected += injected_runs(name, segmenter, data, patterns, args)
        if args.steady:
            steady.append(steady_runs(name, segmenter, data, args))
        if args.later:
            later += later_runs(name, segmenter, data, args)
    frames = pd.DataFrame(injected), pd.DataFrame(steady), pd.DataFrame(later)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"## {dt.date.today()}\n\n`python benchmarks/bench_emerging.py {command}`: "
        f"{machine()}, load average {load} at start, "
        f"{load_average()} at end, {time.perf_counter() - started:.0f} s. CDNOW: "
        f"{data.train[ID].nunique():,} training customers, {data.held_out[ID].nunique():,} held "
        "out."
    )
    text = markdown(*frames, header)
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    return frames


if __name__ == "__main__":
    main()
