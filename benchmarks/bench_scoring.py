"""Rows/s and peak memory of ``segml.scoring.score`` per family, against a bare scoring loop.

Usage: ``python benchmarks/bench_scoring.py [--rows 1000000 10000000] [--repeat 3]
[--families kmeans gmm hdbscan] [--unseen 0 0.03] [--format parquet|csv]
[--ids ascending|shuffled] [--workdir build/bench_scoring]``.

For each family a model is fitted on ``--train`` synthetic customers (4 features, 5 segments);
inputs of ``--rows`` customers are written once to ``--workdir``, for each ``--unseen`` share
of customers from a group the model has not seen: 0 is a steady refresh (about 1% novel, no
candidate), 0.03 a changed world (one emerging candidate, whose search assigns every novel
customer). Ids are ascending (a table sorted by its key, which lets the duplicate-id
check skip its index) or, with ``--ids shuffled``, in random order.
Each measurement runs in a fresh process, which reports its wall time and peak RSS:

- ``score``: ``segml.scoring.score`` (read, check, score, novelty, monitoring, the atomic
  output write; the command adds model loading and one tracking call);
- ``bare loop``: read the same file in batches with pandas, ``preprocessor.transform`` and
  ``predict`` (the family's ``assign`` for HDBSCAN, which has no ``predict``), nothing written;
- ``bare job``: the same loop that also reads the ids and writes id and segment to Parquet,
  the least a hand-written scoring job does.

The three run in turn, ``--repeat`` times (3), so that a change in the machine's speed
affects all three alike; times are medians, and each ratio (segml's time over the bare one's)
is the median over rounds of the round's ratio, with, from 4 rounds on, their quartiles in
brackets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from machine import load_average, machine, peak_rss_mib

from segml.families import FAMILIES
from segml.synthetic import ID_COLUMN, synthetic_customers, synthetic_spec

PARAMS = {
    "kmeans": {"n_clusters": 5},
    "gmm": {"n_components": 5},
    "hdbscan": {"min_cluster_size": 100, "min_samples": 10},
}
HEADER = (
    "| family | customers | unseen | segml rows/s | bare loop rows/s | ratio | bare job rows/s "
    "| ratio | segml peak RSS | bare peak RSS | candidates | novel |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)
CHUNK_ROWS = 1_000_000
"""Customers generated (and held in memory) at a time while writing an input."""


def write_input(path: Path, rows: int, unseen: float, fmt: str, shuffled: bool) -> Path:
    """``rows`` synthetic customers (a share ``unseen`` of them new), written chunk by chunk;
    their ids ascending or ``shuffled``."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    numbers = np.random.default_rng(rows).permutation(rows) if shuffled else np.arange(rows)
    writer = None
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        chunk = synthetic_customers(n, seed=start + 1, new_group_share=unseen)
        chunk[ID_COLUMN] = [f"C{i:07d}" for i in numbers[start : start + n]]
        if fmt == "csv":
            chunk.to_csv(path, mode="a", header=start == 0, index=False)
            continue
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return path


def fit_model(workdir: Path, family: str, train: int) -> Path:
    """A segmenter of ``family`` fitted on ``train`` customers, saved with joblib."""
    from segml.families.segmentation import fit_segmentation
    from segml.features import build_features, build_preprocessor
    from segml.model import build_segmenter
    from segml.spec import load_spec

    target = workdir / f"model-{family}-{train}.joblib"
    if target.exists():
        return target
    folder = workdir / "train"
    folder.mkdir(parents=True, exist_ok=True)
    synthetic_customers(train, seed=0).to_csv(folder / "customers.csv", index=False)
    (folder / "spec.yaml").write_text(yaml.safe_dump(synthetic_spec("customers.csv")))
    spec = load_spec(folder / "spec.yaml")
    built = build_features(spec)
    preprocessor = build_preprocessor(spec, built.table).fit(built.table)
    X = preprocessor.transform(built.table)
    segmentation = fit_segmentation(X, family, PARAMS[family], {}, 0)
    segmenter = build_segmenter(spec, built.features, preprocessor, segmentation, built.table, X)
    joblib.dump(segmenter, target)
    return target


def child_score(model: Path, source: Path, output: Path) -> dict:
    """``segml.scoring.score`` once; its own timing and findings."""
    from segml.scoring import score

    segmenter = joblib.load(model)
    start = time.perf_counter()
    summary = score(segmenter, source, output)
    return {
        "seconds": time.perf_counter() - start,
        "rows": summary.rows_scored,
        "candidates": len(summary.report.emerging.table),
        "novel_share": summary.novel / summary.rows_scored,
    }


def child_bare(model: Path, source: Path, batch_rows: int, output: str) -> dict:
    """Read in batches with pandas, transform and predict; nothing checked. With an ``output``
    path, also write each customer's id and segment there (a minimal hand-written job)."""
    segmenter = joblib.load(model)
    estimator = segmenter.segmentation.estimator
    family = FAMILIES[segmenter.segmentation.family]
    predict = getattr(estimator, "predict", None) or (lambda X: family.assign(estimator, X).labels)
    columns = [segmenter.id_column, *segmenter.features] if output else segmenter.features
    start, rows, writer = time.perf_counter(), 0, None
    if source.suffix == ".csv":
        batches = pd.read_csv(source, usecols=columns, chunksize=batch_rows)
    else:
        parquet = pq.ParquetFile(source)
        batches = (b.to_pandas() for b in parquet.iter_batches(batch_rows, columns=columns))
    for frame in batches:
        labels = predict(segmenter.preprocessor.transform(frame[segmenter.features]))
        rows += len(frame)
        if output:
            ids = frame[segmenter.id_column].to_numpy()
            table = pa.table({segmenter.id_column: ids, "segment_id": labels})
            writer = writer or pq.ParquetWriter(output, table.schema)
            writer.write_table(table)
    if writer is not None:
        writer.close()
    return {"seconds": time.perf_counter() - start, "rows": rows}


def run_child(*args: str) -> dict:
    """Run this script in ``--child`` mode; its result with its peak RSS (MiB)."""
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def aggregate(results: list[dict]) -> dict:
    """The median time, the largest peak RSS and the last findings of repeated runs."""
    last = dict(results[-1])
    last["seconds"] = statistics.median(r["seconds"] for r in results)
    last["peak_rss_mib"] = max(r["peak_rss_mib"] for r in results)
    return last


def ratio_text(numerators: list[dict], denominators: list[dict]) -> str:
    """The median over rounds of one run's time over the other's, as text, with the quartiles
    of those ratios from 4 rounds on (``statistics.quantiles``' exclusive method, which puts
    them near the extremes for few rounds): ``1.14 (1.06-1.23)``."""
    pairs = zip(numerators, denominators, strict=True)
    ratios = [n["seconds"] / d["seconds"] for n, d in pairs]
    median = f"{statistics.median(ratios):.2f}"
    if len(ratios) < 4:
        return median
    first, _, third = statistics.quantiles(ratios, n=4)
    return f"{median} ({first:.2f}-{third:.2f})"


def measure(
    family: str, model: Path, source: Path, unseen: float, workdir: Path, repeat: int
) -> str:
    """One table row: segml against both bare loops on the same input, ``repeat`` rounds."""
    from segml.scoring._input import READ_ROWS

    runs: dict[str, list[dict]] = {"score": [], "bare": [], "job": []}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        common = (str(model), str(source))
        for _ in range(repeat):
            runs["score"].append(run_child("score", *common, f"{tmp}/scores.parquet"))
            runs["bare"].append(run_child("bare", *common, str(READ_ROWS), ""))
            runs["job"].append(run_child("bare", *common, str(READ_ROWS), f"{tmp}/bare.parquet"))
    scored, bare, job = (aggregate(runs[name]) for name in ("score", "bare", "job"))
    rows = scored["rows"]
    return (
        f"| {family} | {rows:,} | {unseen:.0%} | {rows / scored['seconds']:,.0f} | "
        f"{rows / bare['seconds']:,.0f} | {ratio_text(runs['score'], runs['bare'])} | "
        f"{rows / job['seconds']:,.0f} | {ratio_text(runs['score'], runs['job'])} | "
        f"{scored['peak_rss_mib']:,.0f} MiB | {bare['peak_rss_mib']:,.0f} MiB | "
        f"{scored['candidates']} | {scored['novel_share']:.1%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--families", nargs="+", default=list(PARAMS), choices=list(PARAMS))
    parser.add_argument("--unseen", type=float, nargs="+", default=[0.0, 0.03])
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--ids", choices=["ascending", "shuffled"], default="ascending")
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per row (medians)")
    parser.add_argument("--workdir", type=Path, default=Path("build/bench_scoring"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, model, source, *extra = args.child
        if mode == "score":
            result = child_score(Path(model), Path(source), Path(extra[0]))
        else:
            result = child_bare(Path(model), Path(source), int(extra[0]), extra[1])
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return

    print(
        f"{machine()}; load average {load_average()} at start; medians of {args.repeat} rounds; "
        f"{args.ids} ids\n"
    )
    print(HEADER)
    for family in args.families:
        model = fit_model(args.workdir, family, args.train)
        for rows in args.rows:
            for unseen in args.unseen:
                shuffled = args.ids == "shuffled"
                name = f"customers-{rows}-unseen{unseen:g}{'-shuffled' * shuffled}.{args.format}"
                source = write_input(args.workdir / name, rows, unseen, args.format, shuffled)
                print(
                    measure(family, model, source, unseen, args.workdir, args.repeat),
                    flush=True,
                )
    print(f"\nload average {load_average()} at end")


if __name__ == "__main__":
    main()
