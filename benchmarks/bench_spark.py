"""Rows/s of ``segml score --engine spark`` (local[N]) against the pandas engine, same input.

Usage: ``python benchmarks/bench_spark.py [--rows 1000000] [--master local[2]] [--repeats 3]
[--workdir build/bench_spark]``.

A k-means model (5 segments, fitted on ``--train`` synthetic customers) is logged to a
throwaway MLflow store in ``--workdir``, so the Spark engine loads it with
``mlflow.pyfunc.spark_udf`` as in production. The input, ``--rows`` customers with a 3% unseen
group, is one Parquet file written once (``bench_scoring.write_input``). Both engines run
in this process, alternately, ``--repeats`` times: ``score`` for pandas and ``score_spark``
for Spark (the Spark session is started before the first run and its start-up time is
reported on its own). Each run covers the whole job: checks, scoring, monitoring, the atomic
output write. The table gives medians, the machine and the load average.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import joblib
from bench_scoring import fit_model, write_input
from machine import load_average, machine

from segml import tracking as keys
from segml.model import Segmenter, log_segment_model
from segml.registry import ModelRef
from segml.scoring import score, score_spark
from segml.scoring.spark import spark_session
from segml.synthetic import synthetic_customers

UNSEEN = 0.03
"""Share of the input's customers from a group the model has not seen (one candidate)."""


def model_uri(workdir: Path, train: int) -> tuple[Segmenter, str]:
    """The k-means segmenter and its URI in a throwaway MLflow store."""
    segmenter = joblib.load(fit_model(workdir, "kmeans", train))
    client = keys.connect(f"sqlite:///{workdir / 'mlflow.db'}")
    run_id = client.create_run(keys.experiment_id(client, "bench_spark")).info.run_id
    return segmenter, log_segment_model(segmenter, synthetic_customers(200, seed=1), run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench_spark"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    segmenter, uri = model_uri(args.workdir, args.train)
    name = f"customers-{args.rows}-unseen{UNSEEN:g}.parquet"
    source = write_input(args.workdir / name, args.rows, UNSEEN, "parquet", shuffled=False)
    load = load_average()
    started = time.perf_counter()
    spark_session(args.master)
    start_up = time.perf_counter() - started
    seconds: dict[str, list[float]] = {"pandas": [], "spark": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            out = Path(tmp) / "scores.parquet"
            started = time.perf_counter()
            score(segmenter, source, out)
            seconds["pandas"].append(time.perf_counter() - started)
            started = time.perf_counter()
            spark_out = Path(tmp) / "spark.parquet"
            score_spark(segmenter, source, spark_out, model=ModelRef(uri), master=args.master)
            seconds["spark"].append(time.perf_counter() - started)
    print(
        f"{machine()}; load average {load} at start, {load_average()} at end; "
        f"Spark start-up {start_up:.1f} s\n"
    )
    print("| engine | customers | median s | rows/s | runs (s) | time vs pandas |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    base = statistics.median(seconds["pandas"])
    for engine, runs in seconds.items():
        median = statistics.median(runs)
        name = f"spark {args.master}" if engine == "spark" else engine
        listed = ", ".join(f"{s:.1f}" for s in runs)
        print(
            f"| {name} | {args.rows:,} | {median:.1f} | {args.rows / median:,.0f} | {listed} "
            f"| {median / base:.2f} |"
        )


if __name__ == "__main__":
    main()
