"""How close steady refreshes come to an alarm: emerging candidates and feature drift.

Usage: ``python benchmarks/bench_false_alarms.py [--train 3000 20000] [--rows 100000]
[--seeds 10] [--min-share 0.0005 0.005] [--unseen 0.01] [--families kmeans gmm hdbscan]
[--workdir build/bench_false_alarms]``.

For each family and training size a model is fitted as in ``bench_scoring.py``. Batches of
``--rows`` customers drawn from the training distribution (steady refreshes, one per seed) are
scored with the growth check off (``candidate_min_growth: 0``), so that every cohesive cluster
of novel customers big enough for ``candidate_min_share`` is reported with its growth. The
table shows how many such clusters came up, their largest growth, and how many would be
candidates at the default minimum growth (false alarms), and the largest feature drift those
batches showed (normed Wasserstein distance, which alarms at 0.1 by default, and PSI, whose
moderate-shift level is 0.1; ``--rows`` above ``test_max_rows``, 1,000). For
comparison, the same seeds with an ``--unseen`` share of customers from a group the model has
not seen give the smallest growth of that group's candidate, and in how many seeds it was one.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from bench_scoring import PARAMS, fit_model
from machine import machine

from segml.model import Segmenter
from segml.monitoring import EMERGING_ID, BatchReport
from segml.scoring import score
from segml.spec import Monitoring, Spec
from segml.synthetic import ID_COLUMN, TRUTH_COLUMN, synthetic_customers

HEADER = (
    "| family | training customers | min share | steady batches | clusters | largest growth "
    "| false alarms | unseen group: smallest growth (found) | largest drift distance "
    "| largest PSI |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)
NEW_GROUP = 5
"""``synthetic_customers``' truth id of the unseen group (its five segments are 0-4)."""
PURITY = 0.8
"""Share of a cluster's members from the unseen group for it to count as that group."""


def growth_off(spec: Spec, min_share: float) -> Spec:
    """``spec`` with ``candidate_min_share`` set and the growth check off."""
    monitoring = spec.monitoring.model_copy(
        update={"candidate_min_share": min_share, "candidate_min_growth": 0.0}
    )
    return spec.model_copy(update={"monitoring": monitoring})


def scored(
    segmenter: Segmenter, spec: Spec, rows: int, seed: int, unseen: float
) -> tuple[BatchReport, pd.DataFrame]:
    """The report of one batch (``unseen``: the share of customers from a group the model has
    not seen), and the batch with each customer's ``emerging_id``."""
    batch = synthetic_customers(rows, seed=seed, new_group_share=unseen)
    with tempfile.TemporaryDirectory() as tmp:
        source, output = Path(tmp) / "batch.parquet", Path(tmp) / "scores.parquet"
        batch.drop(columns=TRUTH_COLUMN).to_parquet(source)
        report = score(segmenter, source, output, spec=spec).report
        found = pd.read_parquet(output, columns=[ID_COLUMN, EMERGING_ID])  # novel rows last
        batch[EMERGING_ID] = batch[ID_COLUMN].map(found.set_index(ID_COLUMN)[EMERGING_ID])
    return report, batch


def group_growth(report: BatchReport, batch: pd.DataFrame) -> float:
    """The growth of the candidate whose members are mostly the unseen group (NaN if none)."""
    new = batch[TRUTH_COLUMN] == NEW_GROUP
    for name, growth in zip(report.emerging.ids, report.emerging.table["growth"], strict=True):
        if new[batch[EMERGING_ID] == name].mean() >= PURITY:
            return float(growth)
    return math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, nargs="+", default=[3_000, 20_000])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--min-share", type=float, nargs="+", default=[0.0005, 0.005])
    parser.add_argument("--unseen", type=float, default=0.01)
    parser.add_argument("--families", nargs="+", default=list(PARAMS), choices=list(PARAMS))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench_false_alarms"))
    args = parser.parse_args()
    limit = Monitoring().candidate_min_growth
    print(f"{machine()}; {args.rows:,} customers per batch; false alarm: growth >= {limit:g}\n")
    print(HEADER)
    for family in args.families:
        for train in args.train:
            segmenter = joblib.load(fit_model(args.workdir, family, train))
            for min_share in args.min_share:
                spec = growth_off(segmenter.spec, min_share)
                seeds = range(100, 100 + args.seeds)
                steady = [scored(segmenter, spec, args.rows, s, 0)[0] for s in seeds]
                grown = np.concatenate(
                    [r.emerging.table["growth"].to_numpy(float) for r in steady]
                )
                drift = pd.concat([r.features for r in steady])
                distances = drift.loc[drift["method"] == "wasserstein", "score"]
                alarms = int((~(grown < limit)).sum())  # a NaN growth (no tail) is unchecked
                changed = [scored(segmenter, spec, args.rows, s, args.unseen) for s in seeds]
                found = [g for g in (group_growth(*c) for c in changed) if not math.isnan(g)]
                print(
                    f"| {family} | {train:,} | {min_share:g} | {args.seeds} | {grown.size} | "
                    f"{np.nanmax(grown, initial=0):.2f} | {alarms} | "
                    f"{min(found, default=math.nan):.1f} ({len(found)} of {args.seeds}) | "
                    f"{distances.max():.3f} | {drift['psi'].max():.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
