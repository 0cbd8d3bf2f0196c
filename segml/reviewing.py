"""Champion/challenger review: both models on the same customers, transitions, gates, verdict."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import EvaluationResult, MetricThreshold
from mlflow.models.evaluation.validation import ModelValidationFailedException
from mlflow.tracking import MlflowClient

from segml import report
from segml import tracking as keys
from segml.errors import DataError
from segml.features import build_features, outcome_frame, value_outcome
from segml.metrics import (
    Check,
    agreement,
    business_metrics,
    granularity_checks,
    migration_matrix,
    migration_share,
    quality_metrics,
    segment_table,
    transitions,
)
from segml.model import NO_SEGMENT, SEGMENT_ID, SEGMENT_NAME, Segmenter
from segml.privacy import hidden_cells, published_share
from segml.registry import ModelRef, load_segmenter
from segml.segment_report import (
    SegmentReport,
    rule_table,
    segment_html,
    segment_report,
    segment_sections,
    value_table,
)
from segml.spec import Gates, Spec, load_spec

SIDE_METRICS = (
    keys.QUALITY_SILHOUETTE,
    keys.QUALITY_DAVIES_BOULDIN,
    keys.QUALITY_NOISE_SHARE,
    keys.BUSINESS_N_SEGMENTS,
    keys.BUSINESS_MIN_SHARE,
    keys.BUSINESS_MAX_SHARE,
    keys.STABILITY_JACCARD_MIN,
    keys.STABILITY_JACCARD_MEAN,
)
"""Metrics shown side by side; stability comes from each version's tuning run."""
SIZE_COLUMN = "customers_min"
"""Smaller of a segment's sizes under the two models: what privacy suppression looks at."""


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate's outcome: the metric it checks, the value, the bound and the verdict."""

    name: str
    metric: str
    value: float
    bound: str
    passed: bool


@dataclass(frozen=True)
class Review:
    """Everything a reviewer needs to decide whether the challenger may become champion."""

    challenger: ModelRef
    champion: ModelRef | None
    customers: int
    metrics: dict[str, float]
    side_by_side: pd.DataFrame
    migration: pd.DataFrame
    fates: pd.DataFrame
    new_segments: list[int]
    business: pd.DataFrame
    gates: list[Gate]
    names: dict[int, str]
    checks: list[Check]
    challenger_names: dict[int, str]
    segments: SegmentReport
    """The challenger's segment report on the reviewed customers."""
    spec: Spec
    """The spec whose data was reviewed (gates, source, reference date)."""
    dataset: pd.DataFrame
    """The reviewed customers' features (logged as the review run's dataset)."""
    hidden: set[int]
    """Segment ids every published table blanks (privacy: ``report.suppress_small``)."""

    @property
    def passed(self) -> bool:
        """True when every gate passed."""
        return all(g.passed for g in self.gates)

    @property
    def verdict(self) -> str:
        """``passed`` or ``failed``, as tagged on the challenger version."""
        return keys.VERDICT_PASSED if self.passed else keys.VERDICT_FAILED


def review_data(challenger: Segmenter, data: str | Path) -> tuple[Spec, pd.DataFrame]:
    """The customers to review on: a spec's data, or a file read with the challenger's spec."""
    path = Path(data)
    if path.suffix in {".yaml", ".yml"}:
        spec = load_spec(path)
    elif challenger.spec.data.customers is not None and challenger.spec.data.table_attributes:
        raise DataError(
            f"{path}: the model needs an attribute table beside the log; review with "
            "--data SPEC, whose data.customers names it"
        )
    else:
        spec = challenger.spec.model_copy(
            update={"data": challenger.spec.data.model_copy(update={"source": path.resolve()})}
        )
    table = build_features(spec).table
    if len(table) < spec.min_report_size:
        raise DataError(
            f"{spec.data.source}: {len(table)} customer(s) to review; a review needs at least "
            f"min_report_size ({spec.min_report_size}), the smallest group a report may show"
        )
    return spec, table


def review(
    client: MlflowClient,
    challenger_ref: ModelRef,
    champion_ref: ModelRef | None,
    data: str | Path,
) -> Review:
    """Score the same customers with both models and judge the challenger by the spec's gates.

    Without a champion only the challenger's own gates (stability, smallest share) apply.
    """
    challenger = load_segmenter(challenger_ref)
    spec, table = review_data(challenger, data)
    new_ids, new_side = _score(client, challenger_ref, challenger, spec, table)
    names = challenger.segment_names()
    side = {keys.CHALLENGER_PREFIX + k: v for k, v in new_side.items()}
    outcomes = outcome_frame(spec, table)
    business = {keys.CHALLENGER_PREFIX: segment_table(new_ids, outcomes)}
    metrics: dict[str, float] = {keys.REVIEW_CUSTOMERS: float(len(table))}
    migration, fates = pd.DataFrame(), pd.DataFrame()
    new_only: list[int] = []
    if champion_ref is not None:
        champion = load_segmenter(champion_ref)
        old_ids, old_side = _score(client, champion_ref, champion, spec, table)
        names = champion.segment_names() | names
        side |= {keys.CHAMPION_PREFIX + k: v for k, v in old_side.items()}
        migration = migration_matrix(old_ids, new_ids)
        fates, new_only = transitions(old_ids, new_ids)
        business[keys.CHAMPION_PREFIX] = segment_table(old_ids, outcomes)
        agreed = agreement(old_ids, new_ids)
        metrics |= {
            keys.REVIEW_ARI: agreed["ari"],
            keys.REVIEW_AMI: agreed["ami"],
            keys.REVIEW_MIGRATION_SHARE: migration_share(old_ids, new_ids),
            keys.REVIEW_SILHOUETTE_DROP: old_side[keys.QUALITY_SILHOUETTE]
            - new_side[keys.QUALITY_SILHOUETTE],
        }
    gates = check_gates(spec.gates, new_side | metrics, champion_ref is not None)
    metrics |= side | {keys.REVIEW_PASSED: float(all(g.passed for g in gates))}
    k = spec.min_report_size
    # One set of hidden segments for every table of the review, so that none shows a size
    # another hides.
    hidden = report.hidden_segments(_merged(business), k, [p + "customers" for p in business])
    segments = segment_report(
        spec,
        table,
        challenger.features,
        new_ids,
        challenger.segment_names(),
        f"{challenger_ref.label} on {len(table):,} reviewed customers",
        hidden,
    )
    return Review(
        challenger_ref,
        champion_ref,
        len(table),
        metrics,
        _side_by_side(side),
        migration,
        fates,
        new_only,
        business_table(business, k, hidden),
        gates,
        names,
        granularity_checks(new_ids, value_outcome(spec, table), spec.constraints.min_share, k),
        challenger.segment_names(),
        segments,
        spec,
        table[challenger.features],
        hidden,
    )


def _score(
    client: MlflowClient, ref: ModelRef, segmenter: Segmenter, spec: Spec, table: pd.DataFrame
) -> tuple[np.ndarray, dict[str, float]]:
    """Segment ids of ``table`` and the model's side-by-side metrics on it."""
    found = segmenter.assign(table)
    ids = found.segment_ids
    X = segmenter.preprocess(table)
    quality = quality_metrics(X, ids, sample_size=spec.search.silhouette_sample, seed=0)
    business = business_metrics(ids, min_count=spec.min_report_size)
    return ids, {
        keys.QUALITY_SILHOUETTE: quality.silhouette,
        keys.QUALITY_DAVIES_BOULDIN: quality.davies_bouldin,
        keys.QUALITY_NOISE_SHARE: published_share(
            quality.noise_share, len(ids), spec.min_report_size
        ),
        keys.BUSINESS_N_SEGMENTS: float(business.n_segments),
        keys.BUSINESS_MIN_SHARE: business.min_share,
        keys.BUSINESS_MAX_SHARE: business.max_share,
    } | _training_stability(client, ref)


def _training_stability(client: MlflowClient, ref: ModelRef) -> dict[str, float]:
    """Bootstrap stability measured when the version was tuned (NaN if unknown)."""
    found = dict.fromkeys((keys.STABILITY_JACCARD_MIN, keys.STABILITY_JACCARD_MEAN), np.nan)
    if ref.name is None or ref.version is None:
        return found
    try:
        run_id = client.get_model_version(ref.name, ref.version).run_id
        metrics = client.get_run(run_id).data.metrics if run_id else {}
    except MlflowException:
        return found
    return {k: metrics.get(k, v) for k, v in found.items()}


def check_gates(gates: Gates, metrics: dict[str, float], with_champion: bool) -> list[Gate]:
    """Judge the challenger with MLflow's ``MetricThreshold`` validation, one gate at a time.

    A gate whose metric could not be measured (NaN) fails.
    """
    wanted = {
        "min_stability": (keys.STABILITY_JACCARD_MIN, gates.min_stability, True),
        "min_share": (keys.BUSINESS_MIN_SHARE, gates.min_share, True),
    }
    if with_champion:
        wanted |= {
            "max_migration_share": (
                keys.REVIEW_MIGRATION_SHARE,
                gates.max_migration_share,
                False,
            ),
            "max_quality_drop": (keys.REVIEW_SILHOUETTE_DROP, gates.max_quality_drop, False),
        }
    return [
        _gate(name, metric, metrics.get(metric, math.nan), bound, higher)
        for name, (metric, bound, higher) in wanted.items()
    ]


def _gate(name: str, metric: str, value: float, bound: float, higher: bool) -> Gate:
    logging.getLogger("mlflow.models.evaluation.validation").setLevel(logging.WARNING)
    sign = ">=" if higher else "<="
    passed = not math.isnan(value)
    if passed:
        threshold = {metric: MetricThreshold(threshold=float(bound), greater_is_better=higher)}
        try:
            mlflow.validate_evaluation_results(
                threshold, EvaluationResult(metrics={metric: value}, artifacts={})
            )
        except ModelValidationFailedException:
            passed = False
    return Gate(name, metric, value, f"{sign} {bound}", passed)


def _side_by_side(side: dict[str, float]) -> pd.DataFrame:
    rows = [
        (k, side.get(keys.CHAMPION_PREFIX + k, np.nan), side.get(keys.CHALLENGER_PREFIX + k))
        for k in SIDE_METRICS
    ]
    return pd.DataFrame(rows, columns=["metric", "champion", "challenger"])


def _merged(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per segment id, each model's figures prefixed by the model (``champion.customers``)."""
    return (
        pd.concat(
            [t.set_index(SEGMENT_ID).add_prefix(prefix) for prefix, t in tables.items()], axis=1
        )
        .rename_axis(SEGMENT_ID)
        .reset_index()
    )


def business_table(
    tables: dict[str, pd.DataFrame], k: int, hidden: set[int] | None = None
) -> pd.DataFrame:
    """Per segment id, each model's business figures (``champion.*``, ``challenger.*``) and
    their differences (``delta.*``); segments below ``k`` customers in either, and those that
    would give their sizes away, are blanked (``hidden``: the review's set)."""
    merged = _merged(tables).set_index(SEGMENT_ID)
    if len(tables) == 2:
        champion = tables[keys.CHAMPION_PREFIX]
        for column in champion.select_dtypes("number").columns.drop(SEGMENT_ID):
            new, old = keys.CHALLENGER_PREFIX + column, keys.CHAMPION_PREFIX + column
            merged[f"delta.{column}"] = merged[new] - merged[old]
    sizes = merged[[p + "customers" for p in tables]].fillna(np.inf).min(axis=1)
    merged.insert(0, SIZE_COLUMN, sizes.astype(int))
    table = merged.rename_axis(SEGMENT_ID).reset_index().sort_values(SEGMENT_ID)
    if hidden is None:
        hidden = report.hidden_segments(table, k, [p + "customers" for p in tables])
    return report.suppress_small(table.reset_index(drop=True), k, SIZE_COLUMN, hidden)


def review_params(review: Review) -> dict[str, object]:
    """What a review run was asked: the models, the data and the gates in effect."""
    data, gates = review.spec.data, review.spec.gates
    return {
        "challenger": review.challenger.label,
        "champion": review.champion.label if review.champion else "none",
        "data.source": str(data.source),
        "data.reference_date": data.reference_date,
    } | {f"gates.{key}": value for key, value in gates.model_dump().items()}


def log_review(
    client: MlflowClient, review: Review, experiment_name: str, started: float | None = None
) -> str:
    """A review run (tag ``segml.role=review``) that started at ``started`` (``time.time()``;
    default now) with parameters, the reviewed data, metrics and reports; the challenger
    version is tagged with the verdict and the run. Returns the run id."""
    experiment, project = keys.run_home(client, experiment_name)
    champion = review.champion.label if review.champion else "none"
    tags = {
        keys.TAG_ROLE: keys.ROLE_REVIEW,
        keys.TAG_CHALLENGER: review.challenger.label,
        keys.TAG_CHAMPION: champion,
        keys.TAG_VERDICT: review.verdict,
    }
    name = f"review {review.challenger.label} vs {champion}"
    run_id = keys.new_run(client, experiment, name, tags, project, started)
    data = review.spec.data
    keys.log_dataset(
        client,
        run_id,
        review.dataset,
        keys.dataset_name(data.source, data.reference_date),
        source=str(data.source),
        context="review",
    )
    keys.log_params(client, run_id, review_params(review))
    keys.log_metrics(client, run_id, review.metrics)
    client.log_text(run_id, review_markdown(review), "review/review.md")
    client.log_text(run_id, review_html(review), "review/review.html")
    client.log_text(run_id, segment_html(review.segments), "review/segments.html")
    client.log_text(run_id, review.business.to_csv(index=False), "review/business.csv")
    if not review.migration.empty:
        client.log_text(run_id, published_migration(review).to_csv(), "review/migration.csv")
    if review.challenger.name and review.challenger.version:
        tags = {keys.TAG_VERDICT: review.verdict, keys.TAG_REVIEW_RUN: run_id}
        for key, value in (tags | keys.audit_tags("review", run_id=run_id)).items():
            client.set_model_version_tag(
                review.challenger.name, review.challenger.version, key, value
            )
    client.set_terminated(run_id)
    return run_id


def review_markdown(review: Review) -> str:
    """The review as Markdown: verdict, gates, agreement, transitions, side-by-side metrics."""
    champion = review.champion.label if review.champion else "no champion"
    lines = [
        f"# Review: {review.challenger.label} vs {champion}",
        "",
        f"**Verdict: {review.verdict}** on {review.customers} customers.",
        "",
        "## Gates",
        report.markdown_table(_gate_table(review.gates)),
        "",
        "## Side by side",
        report.markdown_table(review.side_by_side),
        "",
        "## Under- and over-segmentation (challenger)",
        report.markdown_table(_check_table(review.checks)),
    ]
    if review.champion is not None:
        m = review.metrics
        lines += [
            "",
            "## Agreement",
            f"ARI {m[keys.REVIEW_ARI]:.3f}, AMI {m[keys.REVIEW_AMI]:.3f}; "
            f"{m[keys.REVIEW_MIGRATION_SHARE]:.1%} of customers change segment.",
            "",
            "## What became of the champion's segments",
            report.markdown_table(_fate_table(review)),
            "",
            f"New segments: {', '.join(map(str, review.new_segments)) or 'none'}",
            "",
            "## Migration (customers, champion rows to challenger columns)",
            report.markdown_table(migration_table(review)),
        ]
    lines += [
        "",
        "## Segments per model",
        report.markdown_table(compact_business(review)),
        "",
        "## The challenger's segments: value and priority",
        f"{review.segments.priority_rule}.",
        "",
        report.markdown_table(value_table(review.segments).reset_index()),
        "",
        "## Who is in each of the challenger's segments",
        f"The rules put {review.segments.rules.fidelity:.0%} of customers in their own segment.",
        "",
        report.markdown_table(rule_table(review.segments).reset_index()),
    ]
    return "\n".join(lines) + "\n"


def published_migration(review: Review) -> pd.DataFrame:
    """The migration counts with the cells :func:`segml.privacy.hidden_cells` hides (the
    review's hidden segments whole, and every count under ``min_report_size`` with what would
    give it away) as missing."""
    counts = review.migration
    return counts.astype(object).mask(_hidden_cells(review), None)


def _hidden_cells(review: Review) -> np.ndarray:
    k = review.spec.min_report_size
    return hidden_cells(review.migration, k, rows=review.hidden, columns=review.hidden)


def migration_table(review: Review) -> pd.DataFrame:
    """Customers per (champion segment, challenger segment), both labelled ``id: name``;
    hidden cells blank."""
    counts = published_migration(review)
    rows = [_label(int(i), review.names) for i in counts.index]
    columns = [_label(int(c), review.challenger_names) for c in counts.columns]
    table = pd.DataFrame(counts.to_numpy(), index=rows, columns=columns)
    return table.rename_axis("champion \\ challenger").reset_index()


def _label(segment: int, names: dict[int, str]) -> str:
    return f"{segment}: {names.get(segment, NO_SEGMENT if segment < 0 else '-')}"


COMPACT_COLUMNS = ("customers", "share", "revenue_share")
"""The per-segment figures the review shows for each model (``review/business.csv`` has all)."""


def compact_business(review: Review) -> pd.DataFrame:
    """Per segment id: its name and, per model, customers, share and revenue share."""
    table = review.business
    shown = [
        f"{prefix}{c}"
        for c in COMPACT_COLUMNS
        for prefix in (keys.CHAMPION_PREFIX, keys.CHALLENGER_PREFIX)
        if f"{prefix}{c}" in table.columns
    ]
    names = review.names | review.challenger_names
    segments = table[SEGMENT_ID].map(lambda segment: _label(int(segment), names))
    return table[shown].assign(segment=segments)[["segment", *shown]]


def review_html(review: Review) -> str:
    """The review as one self-contained HTML page (tables and inline charts)."""
    css = "passed" if review.passed else "failed"
    sections = [
        ("Verdict", f"<p class='{css}'>{review.verdict}</p><p>{review.customers} customers</p>"),
        ("Gates", report.table_html(_gate_table(review.gates))),
        ("Side by side", report.table_html(review.side_by_side)),
        ("Under- and over-segmentation", report.table_html(_check_table(review.checks))),
    ]
    if review.champion is not None:
        heatmap = report.migration_heatmap(
            review.migration, review.names, review.challenger_names, _hidden_cells(review)
        )
        sections += [
            ("Agreement", report.table_html(_agreement_table(review))),
            ("Champion segments", report.table_html(_fate_table(review))),
            ("New segments", f"<p>{', '.join(map(str, review.new_segments)) or 'none'}</p>"),
            ("Migration", report.figure_html(heatmap)),
            ("Migration counts", report.table_html(migration_table(review))),
        ]
    sections.append(("Segments per model", report.table_html(compact_business(review))))
    sections += segment_sections(review.segments)
    champion = review.champion.label if review.champion else "no champion"
    return report.html_page(f"Review: {review.challenger.label} vs {champion}", sections)


def _check_table(checks: list[Check]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"check": c.name, "passed": c.passed, "detail": c.detail} for c in checks]
    )


def _gate_table(gates: list[Gate]) -> pd.DataFrame:
    rows = [(g.name, g.metric, g.value, g.bound, "pass" if g.passed else "FAIL") for g in gates]
    return pd.DataFrame(rows, columns=["gate", "metric", "value", "required", "outcome"])


def _agreement_table(review: Review) -> pd.DataFrame:
    shown = (keys.REVIEW_ARI, keys.REVIEW_AMI, keys.REVIEW_MIGRATION_SHARE)
    return pd.DataFrame([(k, review.metrics[k]) for k in shown], columns=["metric", "value"])


def _fate_table(review: Review) -> pd.DataFrame:
    """What became of each champion segment; a hidden one's overlap is not shown."""
    fates = review.fates.copy()
    hidden = fates[SEGMENT_ID].isin(list(review.hidden))
    fates["kept_share"] = fates["kept_share"].astype(object).where(~hidden, None)
    fates.insert(1, SEGMENT_NAME, fates[SEGMENT_ID].map(review.names))
    fates["into"] = fates["into"].map(lambda ids: ", ".join(map(str, ids)))
    return fates
