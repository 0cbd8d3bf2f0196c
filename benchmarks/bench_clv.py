"""segml's CLV models (BG/NBD, Gamma-Gamma) on CDNOW against the published fits and against
PyMC-Marketing, with the 39-week holdout forecast of repeat purchases.

Usage: ``python benchmarks/bench_clv.py [--reference-python .venv-clv/bin/python]
[--tracking-uri sqlite:///mlflow.db] [--repeats 3] [--output benchmarks/results/clv.md]``

The second implementation is PyMC-Marketing's ``clv`` module (``BetaGeoModel``,
``GammaGammaModel``) fitted by MAP with flat priors, i.e. by maximum likelihood, in a venv of
its own so that segml never depends on pymc (``python3 -m venv .venv-clv &&
.venv-clv/bin/pip install pymc-marketing``): ``clv_reference.py`` runs there on the same
customer summaries, written to a temporary CSV.

Both are fitted on the 39-week calibration period (1997-01-01..1997-09-30) of the bundled 1/10
sample (the data of the published fits: Fader, Hardie and Lee 2005) and of the whole cohort
(``cdnow_master.txt``), each customer summarised by segml (``build_features`` with
``features.clv``: purchases are distinct days, spend per order the mean over repeat days). The
holdout is the next 39 weeks (to 1998-06-30): actual repeat purchases (distinct days) against
each model's conditional expectation, in total and by calibration frequency, and the cohort's
cumulative repeat purchases week by week against the sum of each customer's unconditional
expectation since their first purchase (the papers' figures), charted as a PNG and logged to
an MLflow run. Last, the seconds ``features.clv`` adds to ``build_features`` on the CDNOW demo
spec (median of ``--repeats``) and what installing PyMC-Marketing would add to segml's venv.
Prints a Markdown section and appends it, dated, to ``--output``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from machine import load_average, machine

import segml
from segml.clv import BgNbd, fit_bgnbd
from segml.customer_value import ValueModel, fit_value_model
from segml.features import build_features, value_history
from segml.spec import Spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results") / "clv.md"
DEMO_SPEC = ROOT / "experiments" / "cdnow.yaml"
REFERENCE = Path(__file__).with_name("clv_reference.py")
COHORT_START = pd.Timestamp("1997-01-01")
CALIBRATION_END = datetime.date(1997, 9, 30)
HOLDOUT_END = datetime.date(1998, 6, 30)
HOLDOUT_WEEKS = 39.0
CALIBRATION_WEEKS = 39
WEEKS = 78
PUBLISHED = {
    "r": 0.243,
    "alpha": 4.414,
    "a": 0.793,
    "b": 2.426,
    "p": 6.25,
    "q": 3.74,
    "gamma": 15.44,
}
"""Fader, Hardie and Lee (2005): BG/NBD (alpha in weeks) and Gamma-Gamma on the 1/10 sample."""
DATASETS = {"1/10 sample": "cdnow_sample.txt", "whole cohort": "cdnow_master.txt"}
MAX_FREQUENCY = 7
"""Calibration frequencies from this one up are pooled, as in the paper's figure 4."""


@dataclass(frozen=True)
class Cohort:
    """One data set's calibration summary and holdout, and segml's fit on it."""

    name: str
    customers: pd.DataFrame
    """Per customer: x, t_x, T, zbar (calibration), first (week of the first purchase) and
    holdout (repeat purchases in weeks 40-78)."""
    weekly: np.ndarray
    """Repeat purchases of the cohort in each of the 78 weeks."""
    value: ValueModel
    fit_seconds: float
    """segml's fit of both models alone (the summaries built)."""


def cdnow_spec(source: str, reference: datetime.date, clv: bool) -> Spec:
    """The demo spec on the bundled ``source`` as of ``reference`` (with ``features.clv``)."""
    demo = segml.load_spec(DEMO_SPEC).model_dump()
    demo["data"] |= {"source": DEMO_SPEC.parent / "data" / source, "reference_date": reference}
    demo["features"]["clv"] = {"horizon_days": 273} if clv else None
    return Spec.model_validate(demo)


def cohort(name: str, source: str) -> Cohort:
    """Summarise ``source``'s customers as segml does and fit segml's models on them."""
    spec = cdnow_spec(source, CALIBRATION_END, clv=True)
    built = build_features(spec)
    assert built.value is not None and spec.features.clv is not None
    past = value_history(spec, built.intake, built.table)
    started = time.perf_counter()
    fit_value_model(spec.features.clv, past)
    seconds = time.perf_counter() - started
    ids = built.table[spec.data.id_column]
    later = build_features(cdnow_spec(source, HOLDOUT_END, clv=False))
    total = later.table.set_index(spec.data.id_column)["frequency"].reindex(ids).to_numpy()
    days = (pd.Timestamp(CALIBRATION_END) - COHORT_START).days
    customers = pd.DataFrame(
        {
            "x": past.x,
            "t_x": past.t_x,
            "T": past.T,
            "zbar": past.zbar,
            "first": (days - built.table["tenure_days"].to_numpy()) / 7,
            "holdout": total - built.table["frequency"].to_numpy(),
        }
    )
    return Cohort(name, customers, weekly_repeats(later, spec), built.value, seconds)


def weekly_repeats(built: Any, spec: Spec) -> np.ndarray:
    """The cohort's repeat purchases (distinct days after each customer's first) per week."""
    tx = spec.data.transactions
    assert tx is not None
    log = built.intake.frame
    days = log[[spec.data.id_column]].assign(day=log[tx.timestamp].dt.normalize())
    days = days.drop_duplicates().sort_values([spec.data.id_column, "day"])
    repeats = days[days.duplicated(spec.data.id_column)]
    week = (repeats["day"] - COHORT_START).dt.days.to_numpy() // 7
    return np.bincount(week, minlength=WEEKS)[:WEEKS].astype(float)


def cumulative_expected(expected_new: Any, first: np.ndarray) -> np.ndarray:
    """The cohort's expected cumulative repeat purchases at the end of each week: every
    customer's unconditional expectation over the time since their first purchase."""
    starts, counts = np.unique(first, return_counts=True)
    ends = np.arange(1, WEEKS + 1, dtype=float)
    ages = np.clip(ends[None, :] - starts[:, None], 0, None)
    return counts @ expected_new(ages)


def age_grid(first: np.ndarray) -> np.ndarray:
    """Every customer age ``cumulative_expected`` asks for (for the reference)."""
    starts = np.unique(first)
    return np.clip(np.arange(1, WEEKS + 1)[None, :] - starts[:, None], 0, None)


def run_reference(python: str, customers: pd.DataFrame) -> dict[str, Any]:
    """PyMC-Marketing's fit and forecasts on the same customers (``clv_reference.py``)."""
    with tempfile.TemporaryDirectory() as work:
        summary = Path(work) / "customers.csv"
        customers.to_csv(summary, index=False)
        ages = Path(work) / "ages.json"
        ages.write_text(json.dumps(age_grid(customers["first"].to_numpy()).tolist()))
        out = Path(work) / "reference.json"
        subprocess.run(
            [python, str(REFERENCE), str(summary), str(ages), str(out), str(HOLDOUT_WEEKS)],
            check=True,
        )
        return json.loads(out.read_text())


def segml_params(value: ValueModel) -> dict[str, float]:
    purchases, spend = value.purchases, value.spend
    return {
        "r": purchases.r,
        "alpha": purchases.alpha,
        "a": purchases.a,
        "b": purchases.b,
        "p": spend.p,
        "q": spend.q,
        "gamma": spend.gamma,
    }


def conditional(purchases: BgNbd, customers: pd.DataFrame) -> np.ndarray:
    """segml's expected holdout purchases per customer."""
    c = customers
    return purchases.expected_purchases(HOLDOUT_WEEKS, c["x"], c["t_x"], c["T"])


def differs(a: float, b: float) -> str:
    return f"{100 * (a - b) / b:+.2f}%"


def parameter_table(cohorts: list[Cohort], references: list[dict[str, Any]]) -> list[str]:
    header = "| model | parameter | published (1/10 sample) |"
    rule = "| --- | --- | ---: |"
    for c in cohorts:
        header += f" segml, {c.name} | PyMC-Marketing, {c.name} | segml vs PyMC |"
        rule += " ---: | ---: | ---: |"
    lines = [header, rule]
    for key, published in PUBLISHED.items():
        model = "BG/NBD" if key in ("r", "alpha", "a", "b") else "Gamma-Gamma"
        row = f"| {model} | {key} | {published:.3f} |"
        for c, ref in zip(cohorts, references, strict=True):
            ours, theirs = segml_params(c.value)[key], ref["params"][key]
            row += f" {ours:.3f} | {theirs:.3f} | {differs(ours, theirs)} |"
        lines.append(row)
    return lines


def holdout_table(cohorts: list[Cohort], references: list[dict[str, Any]]) -> list[str]:
    """Repeat purchases in weeks 40-78: actual against the sum of each customer's conditional
    expectation (given their calibration history) and against the week-by-week curve (each
    customer's unconditional expectation since their first purchase, weeks 40-78)."""
    lines = [
        "| data | forecast | customers | actual repeat purchases | segml | segml vs actual "
        "| PyMC-Marketing | segml vs PyMC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, ref in zip(cohorts, references, strict=True):
        actual = float(c.customers["holdout"].sum())
        ours_curve, theirs_curve = curves(c, ref)
        forecasts = {
            "conditional": (
                float(conditional(c.value.purchases, c.customers).sum()),
                float(np.sum(ref["conditional"])),
            ),
            "week-by-week curve": (
                ours_curve[-1] - ours_curve[CALIBRATION_WEEKS - 1],
                theirs_curve[-1] - theirs_curve[CALIBRATION_WEEKS - 1],
            ),
        }
        for kind, (ours, theirs) in forecasts.items():
            lines.append(
                f"| {c.name} | {kind} | {len(c.customers):,} | {actual:,.0f} | {ours:,.1f} | "
                f"{differs(ours, actual)} | {theirs:,.1f} | {differs(ours, theirs)} |"
            )
    return lines


def curves(c: Cohort, ref: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's expected cumulative repeat purchases per week, segml's and PyMC's."""
    ours = cumulative_expected(c.value.purchases.expected_purchases_new, c.customers["first"])
    counts = np.unique(c.customers["first"], return_counts=True)[1]
    return ours, counts @ np.asarray(ref["unconditional"])


def definition_sensitivity(source: str) -> list[str]:
    """segml's whole-cohort forecast and the actual count when purchases or the calibration's
    end are defined otherwise than in the papers (read straight from the log)."""
    log = pd.read_csv(DEMO_SPEC.parent / "data" / source, sep=r"\s+", dtype={"customer_id": str})
    log["date"] = pd.to_datetime(log["date"].astype(str), format="%Y%m%d")
    end = pd.Timestamp(CALIBRATION_END)
    calibration, holdout = log[log["date"] <= end], log[log["date"] > end]
    days = calibration[["customer_id", "date"]].drop_duplicates()
    holdout_days = len(holdout[["customer_id", "date"]].drop_duplicates())
    variants = (
        (
            "purchases are distinct days, T to the end of 1997-09-30 (the papers', segml's)",
            days,
            holdout_days,
            end,
        ),
        ("the same, holdout counted in transaction lines", days, len(holdout), end),
        ("purchases are transaction lines", calibration, len(holdout), end),
        (
            "T one day longer (to the end of 1997-10-01)",
            days,
            holdout_days,
            end + pd.Timedelta(days=1),
        ),
    )
    lines = [
        "| definition | actual repeat purchases | segml forecast | vs actual |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, events, actual, until in variants:
        dates = events.groupby("customer_id")["date"]
        first, last = dates.min(), dates.max()
        x = dates.size().to_numpy(float) - 1
        t_x = (last - first).dt.days.to_numpy() / 7
        T = (until - first).dt.days.to_numpy() / 7
        forecast = fit_bgnbd(x, t_x, T).expected_purchases(HOLDOUT_WEEKS, x, t_x, T).sum()
        lines.append(f"| {label} | {actual:,} | {forecast:,.0f} | {differs(forecast, actual)} |")
    return lines


def frequency_table(c: Cohort, ref: dict[str, Any]) -> list[str]:
    """Mean holdout purchases by calibration frequency: actual, segml, PyMC-Marketing."""
    frame = c.customers.assign(
        group=np.minimum(c.customers["x"], MAX_FREQUENCY).astype(int),
        segml=conditional(c.value.purchases, c.customers),
        pymc=np.asarray(ref["conditional"]),
    )
    means = frame.groupby("group").agg(
        customers=("x", "size"),
        actual=("holdout", "mean"),
        segml=("segml", "mean"),
        pymc=("pymc", "mean"),
    )
    lines = [
        f"{c.name}:",
        "",
        "| repeat purchases in weeks 1-39 | customers | actual mean, weeks 40-78 | segml | "
        "PyMC-Marketing |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for group, row in means.iterrows():
        shown = f"{group}+" if group == MAX_FREQUENCY else str(group)
        lines.append(
            f"| {shown} | {row['customers']:,.0f} | {row['actual']:.3f} | {row['segml']:.3f} | "
            f"{row['pymc']:.3f} |"
        )
    return lines


def chart(cohorts: list[Cohort], references: list[dict[str, Any]], path: Path) -> Any:
    """Cumulative repeat purchases week by week: actual, segml, PyMC-Marketing (one panel
    per data set), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cohorts), figsize=(6 * len(cohorts), 4.2))
    weeks = np.arange(1, WEEKS + 1)
    for ax, c, ref in zip(np.atleast_1d(axes), cohorts, references, strict=True):
        ours, theirs = curves(c, ref)
        ax.plot(weeks, np.cumsum(c.weekly), color="black", label="actual")
        ax.plot(weeks, ours, "--", color="tab:blue", label="segml (BG/NBD)")
        ax.plot(weeks, theirs, ":", color="tab:orange", lw=2, label="PyMC-Marketing")
        ax.axvline(CALIBRATION_WEEKS, color="grey", lw=0.8)
        ax.set_title(f"CDNOW {c.name}: cumulative repeat purchases")
        ax.set_xlabel("week (calibration ends at week 39)")
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def extra_install_mib(python: str) -> tuple[float, list[str]]:
    """What PyMC-Marketing's venv holds that segml's does not: MiB on disk and the packages
    (distributions) only it has."""
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    theirs = Path(
        subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    names = {p.name.split("-")[0].lower() for p in ours.glob("*.dist-info")}
    extra = sorted(
        p for p in theirs.glob("*.dist-info") if p.name.split("-")[0].lower() not in names
    )
    total = 0
    for dist in extra:
        record = dist / "RECORD"
        for line in record.read_text().splitlines() if record.exists() else []:
            path = theirs / line.split(",")[0]
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20, [p.name.split("-")[0] for p in extra]


def fit_seconds(repeats: int) -> tuple[float, float]:
    """Median seconds of ``build_features`` on the CDNOW demo spec, without and with
    ``features.clv`` (the only extra work ``features.clv`` adds to a tune)."""
    with_clv = segml.load_spec(DEMO_SPEC)
    assert with_clv.features.clv is not None, "the demo spec declares features.clv"
    features = with_clv.features.model_copy(update={"clv": None})
    without = with_clv.model_copy(update={"features": features})
    timings: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for clv, s in ((False, without), (True, with_clv)):
            started = time.perf_counter()
            build_features(s)
            timings[clv].append(time.perf_counter() - started)
    return statistics.median(timings[False]), statistics.median(timings[True])


def log_to_mlflow(uri: str, fig: Any, text: str, cohorts: list[Cohort]) -> str:
    import mlflow

    client = mlflow.MlflowClient(uri)
    name = "bench_clv"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=f"bench_clv {datetime.date.today()}")
    for c in cohorts:
        tag = "sample" if "sample" in c.name else "cohort"
        for key, value in segml_params(c.value).items():
            client.log_metric(run.info.run_id, f"{tag}.{key}", value)
    client.log_figure(run.info.run_id, fig, "clv_holdout.png")
    client.log_text(run.info.run_id, text, "clv.md")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default=str(ROOT / ".venv-clv" / "bin" / "python"))
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_start = load_average()
    cohorts = [cohort(name, source) for name, source in DATASETS.items()]
    references = [run_reference(args.reference_python, c.customers) for c in cohorts]
    png = args.output.with_name("clv_holdout.png")
    fig = chart(cohorts, references, png)
    without, with_clv = fit_seconds(args.repeats)
    extra_mib, extra = extra_install_mib(args.reference_python)
    ref_version = references[0]["version"]
    lines = [
        f"## CLV on CDNOW: segml against the published fits and PyMC-Marketing "
        f"({datetime.date.today()})",
        "",
        f"{machine()}; load average {load_start} at start, {load_average()} at end. "
        f"`python benchmarks/bench_clv.py` (PyMC-Marketing {ref_version}, MAP with flat priors).",
        "",
        "### Parameters, 39-week calibration (alpha in weeks)",
        "",
        *parameter_table(cohorts, references),
        "",
        "### Holdout: repeat purchases in weeks 40-78",
        "",
        *holdout_table(cohorts, references),
        "",
    ]
    lines += [
        "Whole cohort, the same model under other definitions of a purchase or of the "
        "calibration's end:",
        "",
        *definition_sensitivity(DATASETS["whole cohort"]),
        "",
        "By calibration frequency (mean repeat purchases per customer in weeks 40-78):",
        "",
    ]
    for c, ref in zip(cohorts, references, strict=True):
        lines += [*frequency_table(c, ref), ""]
    lines += [
        f"Week by week: `{png.name}` (logged to MLflow, experiment `bench_clv`).",
        "",
        "### Cost",
        "",
        "| what | segml (scipy) | PyMC-Marketing |",
        "| --- | ---: | ---: |",
    ]
    for c, ref in zip(cohorts, references, strict=True):
        lines.append(
            f"| fit both models, {c.name} ({len(c.customers):,} customers), s | "
            f"{c.fit_seconds:.2f} | {ref['fit_seconds']:.2f} |"
        )
    lines += [
        f"| import, s | (scipy, already imported) | {references[0]['import_seconds']:.1f} |",
        f"| added to segml's venv, MiB | 0 | {extra_mib:,.0f} ({len(extra)} packages: "
        f"{', '.join(extra[:12])}{', ...' if len(extra) > 12 else ''}) |",
        f"| `build_features` on the CDNOW demo spec, s (median of {args.repeats}) | "
        f"{without:.2f} without `features.clv`, {with_clv:.2f} with | |",
        "",
    ]
    text = "\n".join(lines)
    run_id = log_to_mlflow(args.tracking_uri, fig, text, cohorts)
    text += f"MLflow run: `{run_id}` in `{args.tracking_uri}`.\n"
    print(text)
    with args.output.open("a", encoding="utf-8") as out:
        out.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
