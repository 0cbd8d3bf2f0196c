"""Plots and tables people look at: search progress, segment maps, sizes. Matplotlib is lazy."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segml import privacy
from segml import tracking as keys
from segml.features import CUMULATIVE_COLUMNS
from segml.migration import migration_summary
from segml.model import NO_SEGMENT, SEGMENT_ID, SEGMENT_NAME
from segml.monitoring import EMERGING_ID, EXPECTED, psi_level, unexpected

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from segml.scoring import ScoreSummary
    from segml.tuning import TrialResult

EMBEDDING_SAMPLE = 5_000


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """An empty figure, with matplotlib imported (headless) only now."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def pareto_plot(
    results: Sequence[TrialResult],
    front: Sequence[TrialResult],
    chosen: TrialResult,
    objectives: Sequence[str],
) -> Figure:
    """The first two objectives of every trial; the Pareto front and the pick highlighted.

    Undefined metrics appear at their worst value, as the study saw them.
    """
    fig = new_figure()
    ax = fig.subplots()
    for label, group, style in (
        ("infeasible", [r for r in results if not r.feasible], {"marker": "x", "color": "0.6"}),
        ("feasible", [r for r in results if r.feasible], {"marker": "o", "color": "C0"}),
        ("Pareto front", list(front), {"marker": "o", "color": "C1", "s": 60}),
    ):
        if group:
            ax.scatter(
                [r.objectives[0] for r in group],
                [r.objectives[1] for r in group],
                label=label,
                **style,
            )
    ax.scatter(
        [chosen.objectives[0]],
        [chosen.objectives[1]],
        marker="*",
        s=250,
        color="C3",
        label=f"chosen (trial {chosen.number})",
        zorder=3,
    )
    ax.set_xlabel(objectives[0])
    ax.set_ylabel(objectives[1])
    ax.set_title("Trials by objective")
    ax.legend(loc="best", fontsize="small")
    return fig


def history_plot(results: Sequence[TrialResult], objectives: Sequence[str]) -> Figure:
    """Each objective per trial, with the best feasible value so far."""
    fig = new_figure(7.0, 2.2 * len(objectives))
    axes = np.atleast_1d(fig.subplots(len(objectives), 1, sharex=True))
    ordered = sorted(results, key=lambda r: r.number)
    numbers = [r.number for r in ordered]
    for i, (ax, key) in enumerate(zip(axes, objectives, strict=True)):
        values = np.array([r.objectives[i] for r in ordered], dtype=float)
        feasible = np.array([r.feasible for r in ordered])
        best = np.fmax.accumulate(np.where(feasible, np.nan_to_num(values, nan=-np.inf), -np.inf))
        ax.scatter(numbers, values, s=12, c=np.where(feasible, "C0", "0.6"))
        ax.step(numbers, np.where(np.isfinite(best), best, np.nan), where="post", color="C3")
        ax.set_ylabel(key, fontsize="small")
    axes[-1].set_xlabel("trial")
    axes[0].set_title("Optimisation history (red: best feasible so far)")
    return fig


def choice_text(choice: dict[str, Any], chosen: int) -> str:
    """The finalists a tune weighed and the pick's granularity checks, for a terminal."""
    rows = [
        {
            "trial": f"{f['trial']}{' *' if f['trial'] == chosen else ''}",
            "pipeline": f["family"] + ("" if f.get("prep.reducer", "none") == "none" else "+umap"),
            "k": int(f[keys.BUSINESS_N_SEGMENTS]),
            "silhouette": f[keys.QUALITY_SILHOUETTE],
            "DBCV": f[keys.QUALITY_DBCV],
            "k-means DBCV": f["kmeans_dbcv"],
            "Jaccard": f[keys.STABILITY_JACCARD_MEAN],
            "min Jaccard": f[keys.STABILITY_JACCARD_MIN],
            "resamples": int(f["bootstraps"]) if "bootstraps" in f else "-",
            "value R²": f[keys.BUSINESS_VALUE_R2],
        }
        for f in choice.get("finalists", [])
    ]
    lines = []
    if rows:
        lines += [
            "finalists (* the pick; k-means DBCV: k-means with as many segments; resamples: "
            "behind the Jaccards, fewer for a finalist that could not be picked):",
            pd.DataFrame(rows).to_string(index=False, float_format="{:.3f}".format, na_rep="-"),
        ]
    for check in choice.get("checks", []):
        mark = "ok  " if check["passed"] else "WARN"
        lines.append(f"{mark} {check['name']}: {check['detail']}")
    return "\n".join(lines)


def scan_plot(scan: pd.DataFrame) -> Figure:
    """Each scanned family's criterion against the number of segments (BIC: lower is better)."""
    families = list(dict.fromkeys(scan["family"]))
    fig = new_figure(7.0, 2.2 * len(families))
    axes = np.atleast_1d(fig.subplots(len(families), 1, sharex=True))
    for ax, family in zip(axes, families, strict=True):
        rows = scan[scan["family"] == family]
        ax.plot(rows["k"], rows["value"], marker="o", color="C0")
        ax.set_ylabel(f"{family}: {rows['criterion'].iloc[0]}", fontsize="small")
    axes[-1].set_xlabel("number of segments")
    axes[0].set_title("Scan of segment counts")
    return fig


def embedding_plot(
    Z: np.ndarray,
    ids: np.ndarray,
    names: dict[int, str],
    hidden: Collection[int] = (),
    seed: int = 0,
) -> Figure:
    """A 2-D map of (a sample of) customers coloured by segment (PCA of the clusterer's
    space); customers of ``hidden`` segments are left out."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    take = rng.choice(len(Z), size=min(EMBEDDING_SAMPLE, len(Z)), replace=False)
    points = Z[take] if Z.shape[1] == 2 else PCA(2, random_state=seed).fit_transform(Z[take])
    fig = new_figure(7.0, 5.5)
    ax = fig.subplots()
    for segment in sorted(set(np.unique(ids[take]).tolist()) - set(hidden)):
        mask = ids[take] == segment
        label = names.get(int(segment), "no segment")
        color = "0.75" if segment < 0 else None
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=6,
            alpha=0.6,
            color=color,
            label=f"{segment}: {label}",
        )
    ax.set_title("Customers by segment (2-D projection)")
    ax.legend(loc="best", fontsize="x-small", markerscale=2)
    return fig


def size_chart(catalog: pd.DataFrame, hidden_ids: Collection[int]) -> Figure:
    """Share of customers per segment; ``hidden_ids`` (see ``hidden_segments``) have no bar."""
    fig = new_figure(7.0, 0.5 + 0.45 * len(catalog))
    ax = fig.subplots()
    hidden = catalog[SEGMENT_ID].isin(list(hidden_ids))
    labels = [
        f"{i}: {n}{' (hidden)' if h else ''}"
        for i, n, h in zip(catalog[SEGMENT_ID], catalog[SEGMENT_NAME], hidden, strict=True)
    ]
    ax.barh(labels, catalog["share"].where(~hidden, 0.0), color="C0")
    ax.invert_yaxis()
    ax.set_xlabel("share of customers")
    ax.set_title("Segment sizes")
    return fig


def hidden_segments(
    table: pd.DataFrame, k: int, size_columns: Sequence[str] = ("customers",)
) -> set[int]:
    """The segments of ``table`` (one or more rows each) a publication must hide:
    :func:`segml.privacy.hidden_segments` of its ``size_columns``."""
    sizes = table.drop_duplicates(SEGMENT_ID).set_index(SEGMENT_ID)[list(size_columns)]
    return privacy.hidden_segments(sizes.apply(pd.to_numeric, errors="coerce"), k)


def catalog_hidden(catalog: pd.DataFrame, k: int) -> set[int]:
    """The segments of a model's catalog that ``hidden_segments`` hides among all its
    training customers (those in no segment a group of their own, as in the tune's tables)."""
    counted = catalog["customers"].sum()
    total = round(counted / catalog["share"].sum()) if counted else 0
    noise = pd.DataFrame({SEGMENT_ID: [-1], "customers": [total - counted]})
    return hidden_segments(pd.concat([catalog[[SEGMENT_ID, "customers"]], noise]), k)


def suppress_small(
    table: pd.DataFrame,
    k: int,
    size_column: str = "customers",
    hidden: Collection[int] | None = None,
) -> pd.DataFrame:
    """Blank every statistic of the segments a publication must hide (privacy): those with
    fewer than ``k`` customers (size shown as ``<k``) and as many others as keep a hidden
    size from being read off the total (``>=k``). ``hidden`` (default:
    :func:`hidden_segments` of ``size_column``) names them when tables must agree."""
    if hidden is None:
        hidden = hidden_segments(table, k, [size_column])
    blank = table[SEGMENT_ID].isin(list(hidden))
    keep = {SEGMENT_ID, SEGMENT_NAME, size_column}
    masked = table.copy()
    for column in masked.columns.difference(list(keep)):
        masked[column] = masked[column].astype(object).where(~blank, None)
    label = pd.Series(np.where(table[size_column] < k, f"<{k}", f">={k}"), index=table.index)
    masked[size_column] = masked[size_column].astype(object).where(~blank, label)
    return masked


def migration_heatmap(
    counts: pd.DataFrame,
    names: dict[int, str],
    new_names: dict[int, str] | None = None,
    hidden: np.ndarray | None = None,
) -> Figure:
    """Row shares of a migration matrix: where each old segment's customers went; rows named
    by ``names``, columns by ``new_names`` (default: ``names``); ``hidden`` cells blank."""
    new_names = names if new_names is None else new_names
    shares = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    if hidden is not None:
        shares = shares.mask(hidden)
    fig = new_figure(3.5 + 1.1 * shares.shape[1], 2.5 + 0.5 * shares.shape[0])
    ax = fig.subplots()
    image = ax.imshow(shares.to_numpy(dtype=float), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (r, c), value in np.ndenumerate(shares.to_numpy(dtype=float)):
        if value >= 0.01:
            ax.text(c, r, f"{value:.0%}", ha="center", va="center", fontsize="x-small",
                    color="white" if value > 0.6 else "black")  # fmt: skip
    ax.set_xticks(
        range(shares.shape[1]),
        [
            f"{c}: {new_names.get(int(c), NO_SEGMENT if int(c) < 0 else '-')}"
            for c in shares.columns
        ],
        rotation=30,
        ha="right",
    )
    ax.set_yticks(
        range(shares.shape[0]),
        [f"{r}: {names.get(int(r), NO_SEGMENT if int(r) < 0 else '-')}" for r in shares.index],
    )
    ax.set_xlabel("to segment (challenger)")
    ax.set_ylabel("from segment (champion)")
    ax.set_title("Where each champion segment's customers went")
    fig.colorbar(image, ax=ax, label="share of row")
    return fig


DIGITS = 3
"""Decimals every table, card and tag shows a measured value with (one rounding everywhere:
a silhouette reads the same in the review as on the model version)."""


def number(value: float, digits: int = DIGITS) -> str:
    """A measured value as every report shows it: ``digits`` decimals (trailing zeros
    dropped), large values to ``digits`` significant digits."""
    if abs(value) >= 1e4:
        return f"{value:.{digits}g}"
    return f"{round(value, digits)}"


def markdown_table(frame: pd.DataFrame, digits: int = DIGITS) -> str:
    """A GitHub-flavoured Markdown table (floats rounded, missing values blank)."""

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, float):
            return number(value, digits)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *rows])


def figure_html(fig: Figure) -> str:
    """An ``<img>`` carrying the figure as inline PNG, so the page needs no other file."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="chart" src="data:image/png;base64,{encoded}">'


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A self-contained HTML page: ``sections`` are (heading, HTML body) pairs."""
    from html import escape

    body = "\n".join(f"<h2>{escape(h)}</h2>\n{content}" for h, content in sections)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_PAGE_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def table_html(frame: pd.DataFrame, digits: int = DIGITS) -> str:
    """A DataFrame as an HTML table with floats rounded as ``number`` rounds them."""
    return frame.to_html(index=False, float_format=lambda v: number(v, digits), na_rep="")


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
    "th{background:#f3f3f3}.passed{color:#17702d;font-weight:bold}"
    ".failed{color:#b00020;font-weight:bold}img{max-width:100%}"
)


# ---------------------------------------------------------------------------------------------
# Scoring runs


def scoring_tables(summary: ScoreSummary) -> dict[str, pd.DataFrame]:
    """The tables a scoring run logs: candidates, their profiles, share and feature drift."""
    emerging = summary.report.emerging
    return {
        "candidates": emerging.table,
        "candidate_profiles": emerging.profile,
        "segment_shares": _share_table(summary),
        "feature_drift": summary.report.features,
    }


def published_migration(summary: ScoreSummary) -> pd.DataFrame:
    """The migration counts with the cells ``privacy.hidden_cells`` hides blank; a column of
    a segment the share table hides is hidden whole."""
    counts = summary.report.migration
    assert counts is not None
    shares = summary.report.shares.table
    hidden = hidden_segments(shares, summary.min_report_size)
    cells = privacy.hidden_cells(counts, summary.min_report_size, columns=hidden)
    return counts.astype(object).mask(cells, None).reset_index()


def _share_table(summary: ScoreSummary) -> pd.DataFrame:
    table = summary.report.shares.table.copy()
    names = {-1: NO_SEGMENT} | summary.segment_names
    table.insert(1, SEGMENT_NAME, table[SEGMENT_ID].map(names))
    table["shift"] = psi_level(table["psi"], summary.settings)
    # A training share (and the PSI and tests computed from it) of a segment the training
    # reports hide would show its size there.
    training = [
        c for c in table.columns if c not in (SEGMENT_ID, SEGMENT_NAME, "customers", "share")
    ]
    table[training] = table[training].astype(object)
    table.loc[table[SEGMENT_ID].isin(list(summary.training_hidden)), training] = None
    return suppress_small(table, summary.min_report_size)


SCORING_CANDIDATE_COLUMNS = [
    EMERGING_ID,
    "customers",
    "share",
    "nearest_segment_id",
    "nearest_segment",
    "distance_ratio",
    "spread_ratio",
    "growth",
    "differs_by",
    "seen_before",
    "previous_id",
]
"""The candidate columns the summaries show (the logged table adds radius and centroid)."""


def _scoring_sections(summary: ScoreSummary) -> list[tuple[str, str | pd.DataFrame]]:
    """The summary's sections: (heading, a paragraph or a table)."""
    found, settings = summary.report, summary.settings
    candidates = found.emerging.table[SCORING_CANDIDATE_COLUMNS]
    shares = found.shares
    sections: list[tuple[str, str | pd.DataFrame]] = [
        ("Run", _scoring_overview(summary)),
        ("Alerts", "; ".join(found.alerts) or "none"),
        ("Emerging-segment candidates", candidates if len(candidates) else "none"),
        (
            "Segment shares against training",
            f"PSI {shares.psi:.4f} (moderate from {settings.psi_moderate}, major from "
            f"{settings.psi_major}); chi-square {shares.chi2:.1f}, p = {shares.p_value:.3g}",
        ),
        ("Segment shares", _share_table(summary)),
        ("Feature drift", drift_text(summary)),
    ]
    if len(found.features):
        sections.append(("Feature drift per feature", found.features))
    if found.migration is not None:
        matched, share = migration_summary(found.migration)
        sections += [
            ("Migration", f"{matched} customers in both outputs; {share:.1%} changed segment"),
            ("Migration counts (previous rows, new columns)", published_migration(summary)),
        ]
    return sections


def drift_text(summary: ScoreSummary) -> str:
    """What the feature drift means, beside the segment shares: features that move by
    construction (days counted up to a later reference date) are named as such and left out
    of the count, and a drift of features with steady shares is explained, not contradicted."""
    features, shares = summary.report.features, summary.report.shares
    if not len(features):
        return "not measured: the model keeps no training reference (re-tune it)"
    judged = unexpected(features)
    drifted = judged.loc[judged["drifted"], "feature"].tolist()
    text = f"{len(drifted)} of {len(judged)} features drifted" + (
        f" ({', '.join(drifted)})" if drifted else ""
    )
    clock = features.loc[features[EXPECTED].astype(bool), "feature"].tolist()
    if clock:
        moved = [f for f in clock if features.set_index("feature").loc[f, "drifted"]]
        text += (
            f"; not counted: {', '.join(clock)} (days up to the reference date, which grow by "
            f"construction when customers are scored later than at training; drifted: "
            f"{', '.join(moved) or 'none'})"
        )
    totals = [f for f in drifted if f in CUMULATIVE_COLUMNS and clock]
    if totals:
        text += (
            f"; {', '.join(totals)}: totals of every purchase up to the reference date, which "
            "a later date can only add to"
        )
    settings = summary.settings
    level = psi_level(pd.Series([shares.psi]), settings).iloc[0]
    if level == "none":
        held = f"segment shares held steady (PSI {shares.psi:.4f}, below {settings.psi_moderate})"
    else:
        held = f"segment shares shifted: {level} (PSI {shares.psi:.4f})"
    return (
        f"{text}. Meanwhile {held}: features describe the customers, shares the segments' "
        "sizes, and customers can change within their segment without leaving it."
    )


def _scoring_overview(summary: ScoreSummary) -> str:
    quarantined = summary.rows_quarantined
    excluded = sum(summary.excluded.values())
    parts = [
        f"model {summary.model.label or summary.model_name} ({summary.family})",
        f"{summary.rows_scored} customers scored from {summary.rows_read} rows read "
        f"({quarantined} quarantined, {excluded} excluded)",
        f"{summary.seconds:.1f} s, {summary.rows_per_second:,.0f} customers/s",
        f"novel {summary.novel} ({summary.novel / summary.rows_scored:.2%})",
    ]
    if summary.ignored_columns:
        parts.append(f"ignored columns: {', '.join(summary.ignored_columns)}")
    missing = {c: n for c, n in summary.missing.items() if n}
    if missing:
        parts.append("imputed: " + ", ".join(f"{c} {n}" for c, n in missing.items()))
    unseen = {c: n for c, n in summary.unseen.items() if n}
    if unseen:
        parts.append(
            "rare or unseen categories (pooled): "
            + ", ".join(f"{c} {n}" for c, n in unseen.items())
        )
    return "; ".join(parts)


def scoring_markdown(summary: ScoreSummary) -> str:
    """The scoring run as Markdown."""
    lines = [f"# Scoring: {summary.model.label or summary.model_name}"]
    for heading, body in _scoring_sections(summary):
        text = body if isinstance(body, str) else markdown_table(body)
        lines += ["", f"## {heading}", "", text]
    return "\n".join(lines) + "\n"


def scoring_html(summary: ScoreSummary) -> str:
    """The scoring run as one self-contained HTML page."""
    from html import escape

    sections = [
        (heading, f"<p>{escape(body)}</p>" if isinstance(body, str) else table_html(body))
        for heading, body in _scoring_sections(summary)
    ]
    return html_page(f"Scoring: {summary.model.label or summary.model_name}", sections)
