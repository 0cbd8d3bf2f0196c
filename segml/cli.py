"""The ``segml`` command line: each command parses, calls one public function, prints a summary."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from segml import __version__
from segml._usage import OneLineUsage, one_line_warning
from segml.data import IntakeReport
from segml.errors import EXIT_FAILURE, SegmlError

app = typer.Typer(
    name="segml",
    cls=OneLineUsage,
    help="Customer segmentation experiments, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
F = TypeVar("F", bound=Callable[..., Any])


class Engine(str, enum.Enum):
    """Where ``segml score`` runs."""

    pandas = "pandas"
    spark = "spark"


_debug = {"on": False}

SpecArg = Annotated[Path, typer.Argument(help="Experiment spec (experiments/*.yaml).")]
ReferenceDate = Annotated[
    dt.datetime | None,
    typer.Option(formats=["%Y-%m-%d"], help="Compute features as of this day (YYYY-MM-DD)."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segml {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Customer segmentation experiments, tracked in MLflow."""
    _debug["on"] = debug
    warnings.formatwarning = one_line_warning


def command(fn: F) -> F:
    """Register ``fn`` as a command whose errors end in one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SegmlError as exc:
            if _debug["on"]:
                raise
            typer.echo(f"segml: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, typer.Exit):
            raise
        except Exception as exc:
            if _debug["on"]:
                raise
            typer.echo(
                f"segml: internal error: {type(exc).__name__}: {_first_line(exc)} "
                "(rerun with --debug for the traceback)",
                err=True,
            )
            raise typer.Exit(EXIT_FAILURE) from None

    app.command()(wrapper)
    return fn


@command
def validate(spec: SpecArg, reference_date: ReferenceDate = None) -> None:
    """Check a spec and its data without writing anything; exit 2 on the first problem.

    Beyond reading the data, the features are built and checked as ``tune`` checks them
    before its first trial (enough customers, not all alike).
    """
    from segml.experiment import search_matrix
    from segml.features import build_features
    from segml.spec import load_spec

    loaded = load_spec(spec)
    built = build_features(loaded, _day(reference_date))
    _print_intake(built.intake.reports)
    search_matrix(loaded, built)
    typer.echo(f"{spec}: valid")


@command
def features(
    spec: SpecArg,
    out: Annotated[Path, typer.Option("--out", help="Output table (.parquet or .csv).")],
    reference_date: ReferenceDate = None,
) -> None:
    """Build the customer feature table (one row per customer) and print a data-quality report.

    Rows set aside under ``data.bad_rows: drop`` go to OUT's folder as
    ``<out>.quarantine.csv`` with their row number and reason.
    """
    from segml._io import check_output, write_table
    from segml.features import build_features
    from segml.spec import load_spec

    check_output(out, "file")
    built = build_features(load_spec(spec), _day(reference_date))
    _print_intake(built.intake.reports)
    write_table(built.table, out)
    typer.echo(f"customers: {len(built.table):,}  features: {', '.join(built.features)}")
    typer.echo(f"wrote {out}")
    if not built.intake.quarantine.empty:
        quarantine = write_table(built.intake.quarantine, out.with_suffix(".quarantine.csv"))
        typer.echo(f"quarantined rows: {quarantine}")


TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
    ),
]


@command
def tune(
    spec: SpecArg,
    n_trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials",
            min=1,
            help="Study's total trial budget, its first trials included (the scan's best "
            "k of k-means and GMM, HDBSCAN at three sizes).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Stop starting trials after S seconds."),
    ] = None,
    families: Annotated[
        str | None, typer.Option("--families", help="Comma-separated subset, e.g. kmeans,gmm.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler and fit seed.")] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            envvar="SEGML_OPTUNA_STORAGE",
            help="Optuna storage: an RDB URL (postgresql://...) or journal:PATH; "
            "default in-memory. The same storage and study resume an interrupted search.",
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the spec's name).")
    ] = None,
    tracking_uri: TrackingUri = None,
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Log the model but do not register it.")
    ] = False,
) -> None:
    """Search k-means, GMM and HDBSCAN segmentations; track every trial in MLflow.

    The chosen segmentation is refitted, its segment ids aligned to the champion's, and
    registered as a new version of the spec's model with the alias ``challenger``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from segml import tracking as keys
    from segml.experiment import tune as run_tune
    from segml.report import catalog_hidden, choice_text, number, suppress_small
    from segml.spec import load_spec

    keys.check_store(tracking_uri)
    loaded = load_spec(spec)
    budget = n_trials or loaded.search.n_trials
    columns = (
        TextColumn("tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[best]}"),
    )
    with Progress(*columns, transient=False, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("tune", total=budget, best="")
        best: dict[str, float] = {}

        def advance(result: Any, total: int) -> None:
            if result.feasible:
                for key, value in zip(("sil", "stab", "value"), result.objectives, strict=False):
                    best[key] = max(best.get(key, value), value)
            shown = "  ".join(f"best {k} {v:.3f}" for k, v in best.items())
            progress.update(task, advance=1, best=shown)

        result = run_tune(
            loaded,
            n_trials=n_trials,
            timeout=timeout,
            families=families.split(",") if families else None,
            seed=seed,
            storage=storage,
            study_name=study,
            tracking_uri=tracking_uri,
            on_trial=advance,
            register=not no_register,
        )
    chosen, final = result.chosen, result.final_metrics
    value_r2 = final[keys.BUSINESS_VALUE_R2]
    separation = (
        f"{keys.BUSINESS_VALUE_R2} {value_r2:.3f}"
        if math.isfinite(value_r2)
        else "unknown: declare a CLV or revenue outcome"
    )
    n = len(result.segmenter.segmentation.labels)
    fitted = final.get(keys.STUDY_SAMPLE_SIZE, n)
    sampled = f" on a seeded sample of {fitted:,.0f} of {n:,} customers" if fitted < n else ""
    typer.echo(
        f"study {result.study_name}: {result.n_trials} trials{sampled}, "
        f"{result.n_feasible} feasible; chose trial {chosen.number} ({chosen.family}, "
        f"{final[keys.BUSINESS_N_SEGMENTS]:.0f} segments, value separation {separation})"
    )
    typer.echo(choice_text(result.choice, chosen.number))
    for key, value in sorted(result.final_metrics.items()):
        typer.echo(f"  {key:<28} {value:.4f}")
    shown = result.segments  # from the segment report: small segments already blanked
    if shown is None:
        catalog, k = result.segmenter.catalog, loaded.min_report_size
        shown = suppress_small(catalog, k, hidden=catalog_hidden(catalog, k))
    typer.echo(shown.to_string(index=False, float_format=number))
    typer.echo(f"parent run: {result.parent_run_id} (experiment {result.experiment_id})")
    typer.echo(f"model: {result.model_uri}")
    if result.model_version:
        typer.echo(f"registered: {loaded.model_name} v{result.model_version} (alias challenger)")


@command
def score(
    input_path: Annotated[
        Path,
        typer.Option(
            "--input", help="Customers (or a transaction log): CSV, Parquet, or a folder of them."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", help="Scores to write (.parquet or .csv), atomically.")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="models:/NAME@ALIAS, models:/NAME/V, an exported model folder, or with "
            "--spec a version or alias.",
        ),
    ] = "champion",
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="Spec: model name, monitoring thresholds and bad-row policy "
            "(default: the model's own).",
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option("--previous", help="An earlier score output: migration of its customers."),
    ] = None,
    reference_date: ReferenceDate = None,
    customers: Annotated[
        Path | None,
        typer.Option(
            "--customers",
            help="This batch's attribute table, for a transaction model trained with "
            "data.customers.",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Folder for scoring.md and scoring.html.")
    ] = None,
    fail_on_emerging: Annotated[
        bool,
        typer.Option(
            "--fail-on-emerging",
            help="Exit 4 when emerging segments or drift above the spec's thresholds appear.",
        ),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="pandas (streams on this machine) or spark (Parquet in and out, "
            "needs segml[spark] and Java 17+).",
        ),
    ] = Engine.pandas,
    spark_master: Annotated[
        str,
        typer.Option(
            "--spark-master", envvar="SEGML_SPARK_MASTER", help="Spark master of --engine spark."
        ),
    ] = "local[*]",
    tracking_uri: TrackingUri = None,
) -> None:
    """Assign every customer to a segment; flag emerging segments, drift and migration.

    Writes OUTPUT (customer id, segment_id, segment_name, confidence, novelty_score,
    is_novel, emerging_id, model_name, model_version; then expected_purchases, p_alive,
    expected_spend and clv for a model with features.clv) and logs a scoring run. Bad rows fail
    the run, or with data.bad_rows: drop go to <output>.quarantine.csv.
    """
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from segml._io import atomic_path, check_output
    from segml.errors import DriftAlert
    from segml.registry import is_folder_ref, resolve_ref
    from segml.scoring import run_scoring, summary_html, summary_markdown
    from segml.spec import load_spec
    from segml.tracking import connect

    check_output(output, "file")
    if report is not None:
        check_output(report, "folder")
    # a folder scores offline: its scoring run may start a new embedded store
    client = connect(tracking_uri, create=is_folder_ref(model))
    loaded = load_spec(spec) if spec else None
    ref = resolve_ref(model, loaded.model_name if loaded else None, client)
    columns = (
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.fields[rows]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("score", total=None, rows="")
        started = time.monotonic()

        def advance(rows: int, total: int | None) -> None:
            of = f" of {total:,}" if total else ""
            rate = rows / max(time.monotonic() - started, 1e-9)
            progress.update(
                task, total=total, completed=rows, rows=f"{rows:,}{of} rows, {rate:,.0f} rows/s"
            )

        summary, run_id = run_scoring(
            client,
            ref,
            input_path,
            output,
            spec=loaded,
            previous=previous,
            reference_date=_day(reference_date),
            on_progress=advance,
            spark_master=spark_master if engine is Engine.spark else None,
            customers=customers,
        )
    typer.echo(summary_markdown(summary))
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        for name, text in (("scoring.md", summary_markdown), ("scoring.html", summary_html)):
            with atomic_path(report / name) as tmp:
                tmp.write_text(text(summary), encoding="utf-8")
    typer.echo(f"wrote {summary.output}; scoring run: {run_id}")
    if summary.quarantine is not None:
        typer.echo(f"quarantined rows: {summary.quarantine}")
    if fail_on_emerging and summary.report.alerts:
        raise DriftAlert("; ".join(summary.report.alerts))


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]


def _day(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value else None


def _print_intake(reports: tuple[IntakeReport, ...]) -> None:
    for report in reports:
        typer.echo(
            f"{report.source}: rows read {report.rows_read:,}, used {report.rows_used:,}, "
            f"quarantined {report.rows_quarantined:,}, "
            f"excluded {sum(report.excluded.values()):,}"
        )
        if report.netted:
            typer.echo(f"  {report.netted:>8,}  return or cancellation lines netted")
        for reason, count in {**report.quarantined, **report.excluded}.items():
            typer.echo(f"  {count:>8,}  {reason}")
        missing = {c: s for c, s in report.missing_share.items() if s > 0}
        for column, share in missing.items():
            typer.echo(f"  missing {share:6.1%}  {column}")


ModelName = Annotated[
    str | None,
    typer.Option("--model", help="Registered model name (default: from --spec or --data)."),
]
SpecOption = Annotated[
    Path | None, typer.Option("--spec", help="Experiment spec whose registry.model_name to use.")
]
Reason = Annotated[str | None, typer.Option("--reason", help="Why; recorded in version tags.")]


def _model_name(model: str | None, spec: Path | None) -> str:
    from segml.errors import SpecError
    from segml.spec import load_spec

    if model:
        return model
    if spec is not None:
        return load_spec(spec).model_name
    raise SpecError("name the registered model with --model NAME or --spec SPEC")


@command
def register(
    run_id: Annotated[str, typer.Argument(help="A segml tune (parent) run id.")],
    tracking_uri: TrackingUri = None,
) -> None:
    """Register a tuning run's model as a new version with the alias ``challenger``."""
    from segml.registry import register_run
    from segml.tracking import connect

    name, version = register_run(connect(tracking_uri, create=False), run_id)
    typer.echo(f"registered {name} v{version} (alias challenger)")


@command
def review(
    data: Annotated[
        Path, typer.Option("--data", help="Spec (its data) or a customer/transaction file.")
    ],
    challenger: Annotated[
        str, typer.Option("--challenger", help="Model reference to judge.")
    ] = "challenger",
    champion: Annotated[
        str, typer.Option("--champion", help="Reference to compare with; 'none' for no champion.")
    ] = "champion",
    model: ModelName = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for review.html and review.md.")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Compare a challenger with the champion on the same customers and apply the gates.

    Logs a review run, tags the challenger version with the verdict, prints the Markdown
    summary; exits 3 when a gate fails. Without a champion, only the challenger's own
    gates (stability, smallest share) apply.
    """
    import time

    from segml._io import atomic_path, check_output
    from segml.errors import GateFailed
    from segml.registry import CHAMPION, champion_version, resolve_ref
    from segml.reviewing import log_review, review_html, review_markdown
    from segml.reviewing import review as run_review
    from segml.segment_report import segment_html
    from segml.tracking import connect

    started = time.time()
    if out is not None:
        check_output(out, "folder")
    client = connect(tracking_uri, create=False)
    spec = data if data.suffix in {".yaml", ".yml"} else None
    named = model or (_model_name(model, spec) if spec else None)
    challenger_ref = resolve_ref(challenger, named, client)
    name = named or challenger_ref.name or _model_name(None, None)
    has_champion = champion != "none" and (
        champion != CHAMPION or champion_version(client, name) is not None
    )
    champion_ref = resolve_ref(champion, name, client) if has_champion else None
    result = run_review(client, challenger_ref, champion_ref, data)
    run_id = log_review(client, result, name, started)
    markdown = review_markdown(result)
    typer.echo(markdown)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        pages = {
            "review.md": markdown,
            "review.html": review_html(result),
            "segments.html": segment_html(result.segments),
        }
        for filename, text in pages.items():
            with atomic_path(out / filename) as tmp:
                tmp.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {', '.join(str(out / f) for f in pages)}")
    typer.echo(f"review run: {run_id}; {challenger_ref.label} tagged {result.verdict}")
    if not result.passed:
        failed = ", ".join(g.name for g in result.gates if not g.passed)
        raise GateFailed(f"{challenger_ref.label} failed review gates: {failed}")


@command
def promote(
    version: Annotated[
        str, typer.Argument(help="Version (or alias, e.g. challenger) to make champion.")
    ],
    model: ModelName = None,
    spec: SpecOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote despite a failed or missing review.")
    ] = False,
    reason: Reason = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Move the alias ``champion`` to VERSION if its latest review passed (exit 3 if not).

    The old champion keeps the alias ``previous``; re-running is safe.
    """
    from segml.errors import RegistryError
    from segml.registry import is_folder_ref, promotable
    from segml.registry import promote as run_promote
    from segml.tracking import connect

    if is_folder_ref(version):
        raise RegistryError(f"{version!r}: promote takes a registered version or alias")
    client = connect(tracking_uri, create=False)
    name = _model_name(model, spec)
    version = promotable(client, version, name)
    old = run_promote(client, name, version, force=force, reason=reason)
    typer.echo(f"{name}: champion v{version}" + (f" (previous v{old})" if old else ""))


@command
def rollback(
    model: ModelName = None,
    spec: SpecOption = None,
    reason: Reason = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Make the ``previous`` champion the champion again."""
    from segml.registry import rollback as run_rollback
    from segml.tracking import connect

    name = _model_name(model, spec)
    version = run_rollback(connect(tracking_uri, create=False), name, reason)
    typer.echo(f"{name}: champion v{version} (rolled back)")


@command
def export(
    ref: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/V, or V/ALIAS.")],
    target: Annotated[Path, typer.Argument(help="Folder to create, e.g. models/NAME.")],
    model: ModelName = None,
    spec: SpecOption = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Write a self-contained model folder that `segml score --model` accepts offline."""
    from segml._io import check_output
    from segml.registry import export as run_export
    from segml.registry import resolve_ref
    from segml.tracking import connect

    check_output(target, "folder")
    client = connect(tracking_uri, create=False)
    name = model or (_model_name(model, spec) if spec else None)
    resolved = resolve_ref(ref, name, client)
    typer.echo(f"exported {resolved.label} to {run_export(resolved, target)}")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
