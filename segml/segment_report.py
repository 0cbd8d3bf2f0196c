"""The segment report: who is in each segment, what they are worth and a rule that finds them.

For marketing and reviewers: per segment its name, size, share, value (revenue share, mean and
median spend, CLV or conversion when the spec declares them; with ``features.clv``, the
predicted CLV's mean and total, the mean probability alive and expected purchases), a profile
in the data's own units, a membership rule with its precision and coverage, and a priority
ranking. Rendered as one self-contained HTML page (pandas ``Styler`` tables, inline charts)
and as Markdown. Segments smaller than the spec's ``min_report_size`` are listed with their
size only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segml import report
from segml.features import outcome_frame
from segml.metrics import feature_profile
from segml.metrics.surrogate import Rules, membership_rules
from segml.model import NO_SEGMENT, SEGMENT_ID, SEGMENT_NAME
from segml.privacy import pool_rare
from segml.spec import Spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRIORITY_RULE = (
    "priority = share of customers x {value} per customer relative to the average customer, "
    "i.e. the segment's share of all {value}; rank 1 first"
)
"""How segments are ranked (``{value}`` is CLV, spend, or customers without a value)."""
SEGMENT = "segment"
"""The column that shows a segment as ``id: name``."""


@dataclass(frozen=True)
class SegmentReport:
    """A segmentation of some customers, described for people who act on it.

    Attributes
    ----------
    title : str
        What was segmented (model and customers).
    customers : int
        How many customers.
    segments : DataFrame
        One row per segment: id, name, customers, share, value columns, priority, rank,
        rule, precision and coverage; small segments blanked.
    medians : DataFrame
        Per segment (``id: name`` index), each feature's median (a category's most common
        value for text features), in the data's units.
    percentiles : DataFrame
        Where each segment's median falls among all customers (0..1; numeric features).
    profile : DataFrame
        The long profile of :func:`segml.metrics.feature_profile` (means, medians, std
        differences), missing values left out.
    rules : Rules
        The membership rules and their fidelity.
    value : str
        What priority is measured in: "CLV", "spend" or "customers".
    """

    title: str
    customers: int
    segments: pd.DataFrame
    medians: pd.DataFrame
    percentiles: pd.DataFrame
    profile: pd.DataFrame
    rules: Rules
    value: str

    @property
    def priority_rule(self) -> str:
        """The ranking rule in words."""
        return PRIORITY_RULE.format(value=self.value)


def segment_report(
    spec: Spec,
    table: pd.DataFrame,
    features: list[str],
    ids: np.ndarray,
    names: dict[int, str],
    title: str,
    hidden: Collection[int] | None = None,
) -> SegmentReport:
    """Describe the segments ``ids`` (one per row of the customer ``table``) named ``names``;
    the segments ``hidden`` (default: those ``report.suppress_small`` picks) by size only.

    Categories fewer than ``min_report_size`` customers share are pooled first
    (:func:`segml.privacy.pool_rare`): neither a rule nor a profile names one.
    """
    k = spec.min_report_size
    shown = {**{-1: NO_SEGMENT}, **names}
    text = [
        c
        for c in features
        if c in spec.features.categorical or not pd.api.types.is_numeric_dtype(table[c])
    ]
    described = pool_rare(table[features], text, k)
    rules = membership_rules(described, ids)
    segments, value = _segment_table(spec, table, ids, shown)
    segments = segments.merge(rules.table, on=SEGMENT_ID, how="left")
    segments = report.suppress_small(segments, k, hidden=hidden)
    large = segments.loc[segments["customers"].map(lambda n: isinstance(n, int | np.integer))]
    medians, percentiles = _medians(described, ids, large, shown)
    numeric = table[features].select_dtypes("number")
    profile = feature_profile(numeric, ids)
    profile = profile[profile[SEGMENT_ID].isin(large[SEGMENT_ID])].reset_index(drop=True)
    return SegmentReport(title, len(ids), segments, medians, percentiles, profile, rules, value)


def _segment_table(
    spec: Spec, table: pd.DataFrame, ids: np.ndarray, names: dict[int, str]
) -> tuple[pd.DataFrame, str]:
    """Size, value and priority per segment (largest priority first), and the value's name."""
    outcomes = outcome_frame(spec, table).reset_index(drop=True)
    segment = pd.Series(ids, name=SEGMENT_ID)
    grouped = outcomes.groupby(segment)
    counts = segment.value_counts().sort_index()
    frame = pd.DataFrame({SEGMENT_ID: counts.index, "customers": counts.to_numpy()})
    frame.insert(1, SEGMENT_NAME, frame[SEGMENT_ID].map(names))
    frame["share"] = frame["customers"] / len(ids)
    by_id = frame[SEGMENT_ID]
    if "revenue" in outcomes:
        revenue = grouped["revenue"]
        frame["revenue_share"] = by_id.map(revenue.sum() / outcomes["revenue"].sum())
        frame["spend_mean"] = by_id.map(revenue.mean())
        frame["spend_median"] = by_id.map(revenue.median())
    for role, column in (("clv", "clv_mean"), ("conversion", "conversion_rate")):
        if role in outcomes:
            frame[column] = by_id.map(grouped[role].mean())
    if "clv" in outcomes:
        frame["clv_total"] = by_id.map(grouped["clv"].sum())
    for role in ("p_alive", "expected_purchases"):  # predicted by features.clv
        if role in outcomes:
            frame[f"{role}_mean"] = by_id.map(grouped[role].mean())
    value = "CLV" if "clv" in outcomes else "spend" if "revenue" in outcomes else "customers"
    frame["priority"] = frame["share"]
    if value != "customers":
        role = "clv" if value == "CLV" else "revenue"
        frame["priority"] = by_id.map(grouped[role].sum() / outcomes[role].sum())
    frame = frame.sort_values("priority", ascending=False, ignore_index=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame, value


def _medians(
    features: pd.DataFrame, ids: np.ndarray, segments: pd.DataFrame, names: dict[int, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per shown segment, each feature's median (or most common category) and, for numeric
    features, the share of all customers at or below it."""
    labels = [f"{s}: {names[s]}" for s in segments[SEGMENT_ID]]
    columns = list(features.columns)
    medians = pd.DataFrame(index=pd.Index(labels, name=SEGMENT), columns=columns, dtype=object)
    percentiles = pd.DataFrame(index=medians.index, columns=columns, dtype=float)
    for column in features:
        values = features[column]
        base = np.sort(values.dropna().to_numpy())
        numeric = pd.api.types.is_numeric_dtype(values)
        for label, segment in zip(labels, segments[SEGMENT_ID], strict=True):
            member = values[ids == segment].dropna()
            if numeric:
                median = float(member.median()) if len(member) else np.nan
                medians.loc[label, column] = median
                at_or_below = np.searchsorted(base, median, side="right") / max(len(base), 1)
                percentiles.loc[label, column] = np.nan if np.isnan(median) else at_or_below
            elif len(member):
                common = member.value_counts(normalize=True)
                medians.loc[label, column] = f"{common.index[0]} ({common.iloc[0]:.0%})"
    return medians, percentiles


# ---------------------------------------------------------------------------------------------
# Rendering

_FORMATS = {
    "customers": "{:,}",
    "share": "{:.1%}",
    "revenue_share": "{:.1%}",
    "spend_mean": "{:,.2f}",
    "spend_median": "{:,.2f}",
    "clv_mean": "{:,.2f}",
    "clv_total": "{:,.0f}",
    "p_alive_mean": "{:.0%}",
    "expected_purchases_mean": "{:,.2f}",
    "conversion_rate": "{:.1%}",
    "priority": "{:.1%}",
    "precision": "{:.0%}",
    "coverage": "{:.0%}",
    "rank": "{:.0f}",
}
_HEADERS = {
    "customers": "customers",
    "share": "share",
    "revenue_share": "revenue share",
    "spend_mean": "mean spend",
    "spend_median": "median spend",
    "clv_mean": "mean CLV",
    "clv_total": "total CLV",
    "p_alive_mean": "P(alive)",
    "expected_purchases_mean": "expected purchases",
    "conversion_rate": "conversion",
    "priority": "priority",
    "rank": "rank",
}


def _labelled(segments: pd.DataFrame) -> pd.DataFrame:
    labels = segments[SEGMENT_ID].astype(str) + ": " + segments[SEGMENT_NAME]
    return segments.drop(columns=[SEGMENT_ID, SEGMENT_NAME]).set_index(labels.rename(SEGMENT))


def value_table(segment_report: SegmentReport) -> pd.DataFrame:
    """Segments by priority: size, share, value, priority and rank (one row per segment)."""
    columns = [c for c in _HEADERS if c in segment_report.segments.columns]
    table = _labelled(segment_report.segments)[columns]
    numbers = [c for c in columns if c != "customers"]  # a blanked size reads "<20"
    return table.assign(**{c: pd.to_numeric(table[c], errors="coerce") for c in numbers})


PREDICTED_VALUE = ("clv_mean", "clv_total", "p_alive_mean", "expected_purchases_mean")
"""The per-segment columns of ``features.clv``."""


def summary_table(segment_report: SegmentReport) -> pd.DataFrame:
    """Segments by id: id, name, customers, share and, with ``features.clv``, the predicted
    value (mean and total CLV, mean probability alive and expected purchases)."""
    segments = segment_report.segments
    columns = [SEGMENT_ID, SEGMENT_NAME, "customers", "share"]
    columns += [c for c in PREDICTED_VALUE if c in segments.columns]
    return segments[columns].sort_values(SEGMENT_ID, ignore_index=True)


def rule_table(segment_report: SegmentReport) -> pd.DataFrame:
    """Each segment's membership rule with its precision and coverage."""
    table = _labelled(segment_report.segments)[["rule", "precision", "coverage"]]
    return table.assign(**{c: pd.to_numeric(table[c]) for c in ("precision", "coverage")})


def _styled(frame: pd.DataFrame) -> str:
    """A compact HTML table: numbers formatted per column, priority drawn as a bar."""
    frame = frame.reset_index()
    formats: dict[Any, str | Callable[[object], str] | None] = {
        c: _formatter(f) for c, f in _FORMATS.items() if c in frame.columns
    }
    styler = frame.style.format(formats, na_rep="", escape="html").hide(axis="index")
    if "priority" in frame.columns:
        styler = styler.bar(subset=["priority"], color="#9ecae1", vmin=0)
    styler = styler.format_index(lambda c: _HEADERS.get(str(c), str(c)), axis=1, escape="html")
    return styler.set_table_attributes('class="compact"').to_html()


def _formatter(spec: str) -> Callable[[object], str]:
    """``spec`` for numbers; anything else (a blanked size, "<20") as it is."""

    def formatted(value: object) -> str:
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            return spec.format(value)
        return str(value)

    return formatted


def _profile_html(segment_report: SegmentReport) -> str:
    """The medians table, each numeric cell coloured by where it falls among all customers."""
    medians, percentiles = segment_report.medians, segment_report.percentiles
    numeric: list[Hashable] = [c for c in medians.columns if percentiles[c].notna().any()]
    formats: dict[Any, str | Callable[[object], str] | None] = {
        c: _number_format(medians[c]) for c in numeric
    }
    styler = medians.reset_index().style.format(formats, na_rep="none", escape="html")
    styler = styler.hide(axis="index")
    if numeric:
        # a segment without any value of a feature gets the neutral colour, not the colour map's
        # transparent "bad" one, under which its "none" would be white on white
        shares = np.nan_to_num(percentiles[numeric].to_numpy(dtype=float), nan=0.5)
        styler = styler.background_gradient(
            cmap="RdBu_r", subset=numeric, gmap=shares, axis=None, vmin=0, vmax=1
        )
    return styler.set_table_attributes('class="compact"').to_html()


def _number_format(values: pd.Series) -> str:
    present = pd.to_numeric(values, errors="coerce").dropna()
    return "{:,.0f}" if bool((present == present.round()).all()) else "{:,.1f}"


def _summary(segment_report: SegmentReport) -> str:
    rules = segment_report.rules
    return (
        f"{segment_report.customers:,} customers in {len(segment_report.segments)} segments. "
        f"The membership rules (a decision tree of depth {rules.depth}) "
        f"put {rules.fidelity:.0%} of customers in their own segment. Ranking: "
        f"{segment_report.priority_rule}."
    )


def segment_html(segment_report: SegmentReport) -> str:
    """The report as one self-contained HTML page."""
    return report.html_page(f"Segments: {segment_report.title}", segment_sections(segment_report))


def segment_sections(segment_report: SegmentReport) -> list[tuple[str, str]]:
    """The report's (heading, HTML) sections, for a page of its own or inside the review."""
    from html import escape

    return [
        ("Segments", f"<p>{escape(_summary(segment_report))}</p>"),
        ("Size, value and priority", _styled(value_table(segment_report))),
        ("Size against value", report.figure_html(size_value_chart(segment_report))),
        ("Who is in each segment", _styled(rule_table(segment_report))),
        (
            "Profile (medians; colour: where the median falls among all customers, blue low, "
            "red high)",
            _profile_html(segment_report),
        ),
    ]


def segment_markdown(segment_report: SegmentReport) -> str:
    """The report as Markdown: summary, value, rules and profile tables."""
    value = value_table(segment_report).reset_index()
    rules = rule_table(segment_report).reset_index()
    lines = [
        f"# Segments: {segment_report.title}",
        "",
        _summary(segment_report),
        "",
        "## Size, value and priority",
        report.markdown_table(value),
        "",
        "## Who is in each segment",
        report.markdown_table(rules),
        "",
        "## Profile (medians)",
        report.markdown_table(segment_report.medians.reset_index()),
    ]
    return "\n".join(lines) + "\n"


def size_value_chart(segment_report: SegmentReport) -> Figure:
    """Each segment's share of customers against its value per customer; the label gives its
    priority rank."""
    table = _numeric_rows(segment_report.segments)
    column = {"CLV": "clv_mean", "spend": "spend_mean"}.get(segment_report.value)
    fig = report.new_figure(7.0, 4.5)
    ax = fig.subplots()
    y = table[column] if column else table["priority"]
    ax.scatter(table["share"], y, s=300 * table["priority"] / table["priority"].max(), alpha=0.6)
    for (_, row), value in zip(table.iterrows(), y, strict=True):
        ax.annotate(
            f"#{int(row['rank'])} {row[SEGMENT_ID]}: {row[SEGMENT_NAME]}",
            (row["share"], value),
            fontsize="x-small",
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("share of customers")
    ax.set_ylabel(f"mean {segment_report.value} per customer" if column else "priority")
    ax.set_title("Size against value (bubble: priority)")
    return fig


def profile_heatmap(segment_report: SegmentReport) -> Figure:
    """Where each segment's median of each numeric feature falls among all customers."""
    shares = segment_report.percentiles.dropna(axis=1, how="all")
    fig = report.new_figure(2.5 + 1.1 * shares.shape[1], 1.2 + 0.45 * shares.shape[0])
    ax = fig.subplots()
    if shares.empty:
        ax.set_title("No numeric feature to profile")
        return fig
    image = ax.imshow(shares.to_numpy(dtype=float), cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
    medians = segment_report.medians[shares.columns]
    for (r, c), value in np.ndenumerate(medians.to_numpy(dtype=float)):
        text = (
            "none" if np.isnan(value) else f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"
        )
        ax.text(c, r, text, ha="center", va="center", fontsize="x-small")
    ax.set_xticks(range(shares.shape[1]), list(shares.columns), rotation=30, ha="right")
    ax.set_yticks(range(shares.shape[0]), list(shares.index))
    ax.set_title("Segment medians (colour: percentile among all customers)")
    fig.colorbar(image, ax=ax, label="percentile")
    return fig


def _numeric_rows(segments: pd.DataFrame) -> pd.DataFrame:
    """The segments whose statistics are shown (not blanked as too small)."""
    shown = pd.to_numeric(segments["share"], errors="coerce").notna()
    numeric = segments.loc[shown].copy()
    for column in numeric.columns.difference([SEGMENT_ID, SEGMENT_NAME, "rule"]):
        numeric[column] = pd.to_numeric(numeric[column], errors="coerce")
    return numeric
