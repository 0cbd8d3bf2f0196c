"""HDBSCAN fits for tuning trials: ``hdbscan`` (what segml fits, with the prediction data its
assignment needs) against scikit-learn's ``HDBSCAN`` and ``fast_hdbscan`` (numba, parallel),
on the customers of ``bench_scale.py`` (6 features, 5 segments).

Usage: ``python benchmarks/bench_hdbscan_fit.py [--sizes 20000 100000] [--output FILE]``

Each library fits the same rows with ``min_cluster_size`` = 1% of them and ``min_samples`` =
10; ARI is against ``hdbscan``'s labels (noise as a label). ``fast_hdbscan`` is not a segml
dependency: install it by hand (``pip install fast_hdbscan``) to measure it; without it its
rows say so. Whether a library keeps what segml's assignment needs (the condensed tree and
the core distances) is stated beside its times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_scale import customers
from machine import load_average, machine
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

RESULTS = Path(__file__).with_name("results") / "hdbscan_fit.md"
MIN_SAMPLES = 10


def _hdbscan(X: np.ndarray, size: int) -> tuple[np.ndarray, str]:
    from segml.families import FAMILIES

    model = FAMILIES["hdbscan"].fit(X, {"min_cluster_size": size, "min_samples": MIN_SAMPLES}, 0)
    return model.labels_, "yes (segml's fit)"


def _sklearn(X: np.ndarray, size: int) -> tuple[np.ndarray, str]:
    from sklearn.cluster import HDBSCAN

    model = HDBSCAN(min_cluster_size=size, min_samples=MIN_SAMPLES, copy=True).fit(X)
    return model.labels_, "no condensed tree or core distances kept"


def _fast(X: np.ndarray, size: int) -> tuple[np.ndarray, str]:
    import fast_hdbscan

    model = fast_hdbscan.HDBSCAN(min_cluster_size=size, min_samples=MIN_SAMPLES).fit(X)
    kept = [
        a for a in ("condensed_tree_", "_condensed_tree", "_core_distances") if hasattr(model, a)
    ]
    return model.labels_, f"keeps {', '.join(kept) or 'neither'}"


LIBRARIES: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, str]]] = {
    "hdbscan": _hdbscan,
    "sklearn.cluster.HDBSCAN": _sklearn,
    "fast_hdbscan": _fast,
}


def measure(n: int) -> list[dict[str, Any]]:
    """One row per library: seconds to fit ``n`` customers (a warm-up fit first), ARI."""
    frame = customers(n)
    X = np.ascontiguousarray(StandardScaler().fit_transform(frame.iloc[:, 1:7].to_numpy()))
    size = max(10, n // 100)
    rows, reference = [], None
    for name, fit in LIBRARIES.items():
        try:
            fit(X[:2_000], 20)  # compile numba code before timing
        except ImportError:
            rows.append(
                {"library": name, "n": n, "seconds": None, "ari": None, "keeps": "not installed"}
            )
            continue
        started, load = time.perf_counter(), load_average()
        labels, keeps = fit(X, size)
        seconds = time.perf_counter() - started
        reference = labels if reference is None else reference
        ari = adjusted_rand_score(reference, labels)
        rows.append(
            {"library": name, "n": n, "seconds": seconds, "ari": ari, "keeps": keeps, "load": load}
        )
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    lines = [
        f"# HDBSCAN fits ({dt.date.today():%Y-%m-%d})",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/bench_hdbscan_fit.py --sizes "
        f"{' '.join(map(str, args.sizes))}`.",
        "",
        "| customers | library | fit (s) | ARI vs hdbscan | load avg "
        "| what segml's assignment needs |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for n in args.sizes:
        for r in measure(n):
            seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
            ari = "-" if r["ari"] is None else f"{r['ari']:.3f}"
            load = r.get("load", "-")
            lines.append(f"| {n:,} | {r['library']} | {seconds} | {ari} | {load} | {r['keeps']} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
