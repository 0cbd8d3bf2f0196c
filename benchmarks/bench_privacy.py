"""What the privacy layer costs in answers: saved clusterers and the drift reference.

Usage: ``python benchmarks/bench_privacy.py [--train 5000] [--rows 20000] [--seeds 20]``.

1. Saved clusterers (``segml.privacy.without_training_rows``, pickled and loaded) against the
   fitted ones on new customers: the share of identical segment labels, the largest
   difference in confidence and novelty, and the pickle's size before and after.
2. The drift reference, microaggregated by ``min_report_size`` (20) against the exact one
   (every training value kept, as before): per training size, batch size and shift (in the
   features' standard deviations), how often the two agree on "drifted", and the largest
   difference in score (KS p-value for batches up to 1,000 customers, normed Wasserstein
   distance above).
"""

from __future__ import annotations

import argparse
import datetime as dt
import pickle
from pathlib import Path

import numpy as np
from machine import load_average, machine

from segml.families import FAMILIES
from segml.metrics.drift import drift_reference, feature_drift
from segml.privacy import without_training_rows
from segml.spec import Monitoring
from segml.synthetic import FEATURES, synthetic_customers

K = 20
PARAMS = {
    "kmeans": {"n_clusters": 5},
    "gmm": {"n_components": 5},
    "hdbscan": {"min_cluster_size": 50},
}


def saved_clusterers(train: int, rows: int) -> list[str]:
    """Table rows: each family's saved clusterer against the fitted one."""
    X = synthetic_customers(train, seed=1)[list(FEATURES)].to_numpy()
    new = synthetic_customers(rows, seed=2, new_group_share=0.05)[list(FEATURES)].to_numpy()
    out = []
    for family, params in PARAMS.items():
        fitted = FAMILIES[family].fit(X, params, 0)
        before_bytes = pickle.dumps(fitted)
        after_bytes = pickle.dumps(without_training_rows(fitted))
        a = FAMILIES[family].assign(fitted, new)
        b = FAMILIES[family].assign(pickle.loads(after_bytes), new)
        same = float(np.mean(a.labels == b.labels))
        conf = float(np.max(np.abs(a.confidence - b.confidence)))
        nov = float(np.max(np.abs(a.novelty - b.novelty)))
        out.append(
            f"| {family} | {train:,} | {rows:,} | {same:.4f} | {conf:.1e} | {nov:.1e} "
            f"| {len(before_bytes) / 1024:,.0f} | {len(after_bytes) / 1024:,.0f} |"
        )
    return out


def drift_agreement(train: int, batch: int, shift: float, seeds: int) -> str:
    """A table row: exact against microaggregated drift reference on ``seeds`` batches."""
    settings = Monitoring()
    columns = list(FEATURES)
    agree, largest, total, alarms = 0, 0.0, 0, [0, 0]
    for seed in range(seeds):
        training = synthetic_customers(train, seed=100 + seed)[columns]
        current = synthetic_customers(batch, seed=200 + seed)[columns] + shift
        exact = drift_reference(training, [], 1)
        aggregated = drift_reference(training, [], K)
        kwargs = {
            "test_max_rows": settings.test_max_rows,
            "p_value": settings.p_value,
            "distance": settings.distance,
        }
        x = feature_drift(exact, current, **kwargs)
        y = feature_drift(aggregated, current, **kwargs)
        agree += int((x["drifted"] == y["drifted"]).sum())
        alarms[0] += int(x["drifted"].sum())
        alarms[1] += int(y["drifted"].sum())
        total += len(x)
        largest = max(largest, float((x["score"] - y["score"]).abs().max()))
    method = "KS p-value" if min(train, batch) <= settings.test_max_rows else "Wasserstein"
    return (
        f"| {train:,} | {batch:,} | {shift:.2f} | {method} | {alarms[0]} | {alarms[1]} "
        f"| {agree}/{total} | {largest:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5_000)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    lines = [
        f"# Privacy: saved clusterers and the drift reference ({dt.date.today()})",
        "",
        f"Machine: {machine()}; load average {load_average()} at the start. Command: "
        f"`python benchmarks/bench_privacy.py --train {args.train} --rows {args.rows} "
        f"--seeds {args.seeds}`.",
        "",
        "## Saved clusterers against the fitted ones (5% of new customers from an unseen group)",
        "",
        "| family | training | new customers | identical labels | max confidence diff "
        "| max novelty diff | pickle KiB before | after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *saved_clusterers(args.train, args.rows),
        "",
        f"## Drift reference: microaggregated by {K} against every training value "
        f"({args.seeds} batches per row, {len(FEATURES)} features each)",
        "",
        "| training | batch | shift (within-segment sd) | score | drifted, exact "
        "| drifted, aggregated | same verdict | largest score diff |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for train in (800, args.train):
        for batch in (500, args.rows):
            for shift in (0.0, 0.1, 0.2, 0.3):
                lines.append(drift_agreement(train, batch, shift, args.seeds))
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "privacy.md"
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
