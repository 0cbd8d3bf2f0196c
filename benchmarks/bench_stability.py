"""segml's bootstrap stability against R's ``fpc::clusterboot`` on the CDNOW customer matrix.

Usage: ``python benchmarks/bench_stability.py [--spec experiments/cdnow.yaml] [--k 4]
[--n-boot 20] [--repeats 3] [--output benchmarks/results/stability.md]``

Needs R and fpc (Debian: ``apt-get install r-base-core r-cran-fpc``); not part of CI. The
matrix is the one segml's search clusters (``segml.experiment.search_matrix``: the spec's
features through the fitted preprocessor), written once to a temporary CSV for R. Each repeat
times, in turn:

* segml: ``bootstrap_stability`` of a k-means segmentation with ``--k`` segments, ``--n-boot``
  resamples, default thread and worker settings (what ``segml tune`` runs as its stability
  step), once per k-means setting in ``SETTINGS``: segml's search default (k-means++, 3
  starts), and clusterboot's (one start from k random rows, as R's ``kmeans``; R refines it
  with Hartigan-Wong, sklearn with Lloyd). The segmentation under test is fitted beforehand,
  untimed, with the same setting.
* R: ``clusterboot(X, B, clustermethod=kmeansCBI, k, bootmethod="boot", count=FALSE)``, timed
  inside R with ``system.time`` around that call only (which also fits the full matrix once),
  and the whole ``Rscript`` process from outside (start-up, ``library(fpc)``, reading the CSV).

Figures are medians over ``--repeats``, with every run listed (the first segml run may start
joblib's worker pool). Beside them, the clusterwise mean Jaccard per segment, sorted: segml's
``jaccard_per_segment`` and clusterboot's ``bootmean`` estimate the same quantity (Hennig 2007)
and should be close; k-means from several starts is more reproducible, so scores higher.
Prints a Markdown section and appends it, dated, to ``--output``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import load_average, machine

import segml
from segml.experiment import search_matrix
from segml.families import FAMILIES
from segml.metrics import bootstrap_stability

RESULTS = Path(__file__).with_name("results") / "stability.md"
SEED = 0
SETTINGS = (("k-means++", 3), ("k-means++", 1), ("random", 1))
"""k-means (init, n_init) settings segml runs: its search default first, clusterboot's last."""
R_CLUSTERBOOT = r"""
suppressPackageStartupMessages(library(fpc))
args <- commandArgs(trailingOnly = TRUE)
X <- as.matrix(read.csv(args[1]))
set.seed(as.integer(args[4]))
elapsed <- system.time(
  cb <- clusterboot(X, B = as.integer(args[2]), clustermethod = kmeansCBI,
                    k = as.integer(args[3]), bootmethod = "boot", count = FALSE,
                    seed = as.integer(args[4]))
)[["elapsed"]]
cat("elapsed", elapsed, "\n")
cat("bootmean", cb$bootmean, "\n")
"""
"""Prints ``elapsed <s>`` (``system.time`` of the clusterboot call) and ``bootmean <j>...``."""


def customer_matrix(spec_path: Path) -> np.ndarray:
    """The customers as segml's search sees them."""
    spec = segml.load_spec(spec_path)
    _, X = search_matrix(spec, segml.build_features(spec))
    return np.asarray(X, dtype=float)


def kmeans_refit(X: np.ndarray, seed: int, params: dict[str, Any]) -> np.ndarray:
    """segml's k-means family refitted on a resample, as the search's bootstrap refits it."""
    family = FAMILIES["kmeans"]
    return family.training_labels(family.fit(X, params, seed))


def time_segml(
    X: np.ndarray, k: int, setting: tuple[str, int], n_boot: int
) -> tuple[float, list[float]]:
    """Seconds of the stability step and the sorted per-segment Jaccard means."""
    init, n_init = setting
    refit = functools.partial(
        kmeans_refit, params={"n_clusters": k, "init": init, "n_init": n_init}
    )
    labels = refit(X, SEED)
    start = time.perf_counter()
    stability = bootstrap_stability(X, labels, refit, n_boot=n_boot, seed=SEED)
    seconds = time.perf_counter() - start
    return seconds, sorted(stability.jaccard_per_segment.values())


def time_clusterboot(
    rscript: str, script: Path, csv: Path, k: int, n_boot: int
) -> tuple[float, float, list[float]]:
    """clusterboot's ``system.time``, the whole ``Rscript`` wall time, sorted ``bootmean``."""
    start = time.perf_counter()
    out = subprocess.run(
        [rscript, str(script), str(csv), str(n_boot), str(k), str(SEED)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.perf_counter() - start
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    return float(fields["elapsed"][0]), wall, sorted(float(j) for j in fields["bootmean"])


def cell(runs: list[float]) -> str:
    """Median, then every run."""
    listed = ", ".join(f"{s:.2f}" for s in runs)
    return f"{statistics.median(runs):.2f} ({listed})"


def jaccards(means: list[float]) -> str:
    """Sorted clusterwise Jaccard means."""
    return " ".join(f"{j:.3f}" for j in means)


def main() -> None:
    """Time both sides on one matrix, print the section and append it to ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("experiments/cdnow.yaml"))
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--n-boot", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise SystemExit("Rscript not found: apt-get install r-base-core r-cran-fpc")

    load_start = load_average()
    X = customer_matrix(args.spec)
    segml_runs: dict[tuple[str, int], list[float]] = {setting: [] for setting in SETTINGS}
    segml_jaccard: dict[tuple[str, int], list[float]] = {}
    r_inside: list[float] = []
    r_wall: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "customers.csv", Path(tmp) / "clusterboot.R"
        np.savetxt(csv, X, delimiter=",", fmt="%.17g", comments="",
                   header=",".join(f"x{j}" for j in range(X.shape[1])))  # fmt: skip
        script.write_text(R_CLUSTERBOOT)
        for _ in range(args.repeats):
            for setting in SETTINGS:
                seconds, segml_jaccard[setting] = time_segml(X, args.k, setting, args.n_boot)
                segml_runs[setting].append(seconds)
            inside, wall, bootmean = time_clusterboot(rscript, script, csv, args.k, args.n_boot)
            r_inside.append(inside)
            r_wall.append(wall)

    title = (
        f"## {datetime.date.today().isoformat()}: {args.spec.name}, {X.shape[0]:,} customers x "
        f"{X.shape[1]} features, k-means k = {args.k}, B = {args.n_boot}"
    )
    lines = [
        title,
        "",
        f"Machine: {machine()}; load average {load_start} at start, {load_average()} at end.",
        f"Seconds: median of {args.repeats} (every run in brackets).",
        "",
        "| side | k-means | seconds | clusterwise Jaccard means, sorted |",
        "| --- | --- | --- | --- |",
    ]
    for init, n_init in SETTINGS:
        lines.append(
            f"| segml `bootstrap_stability` | {init}, n_init = {n_init}, Lloyd | "
            f"{cell(segml_runs[init, n_init])} | {jaccards(segml_jaccard[init, n_init])} |"
        )
    lines += [
        f"| `fpc::clusterboot` (`system.time`) | random, 1 start, Hartigan-Wong | "
        f"{cell(r_inside)} | {jaccards(bootmean)} |",
        f"| `Rscript` whole process | same | {cell(r_wall)} | |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with args.output.open("a") as out:
        out.write("\n" + text)


if __name__ == "__main__":
    main()
