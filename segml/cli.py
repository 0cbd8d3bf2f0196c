"""The ``segml`` command line: each command parses, calls one public function, prints a summary."""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from segml import __version__
from segml.data import IntakeReport
from segml.errors import EXIT_FAILURE, SegmlError

app = typer.Typer(
    name="segml",
    help="Customer segmentation experiments, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
F = TypeVar("F", bound=Callable[..., Any])
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
    """Check a spec and its data without writing anything; exit 2 on the first problem."""
    from segml.data import read_customers
    from segml.spec import load_spec

    loaded = load_spec(spec)
    intake = read_customers(loaded, _day(reference_date))
    _print_intake(intake.reports)
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
    from segml._io import write_table
    from segml.features import build_features
    from segml.spec import load_spec

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
        int | None, typer.Option("--n-trials", min=1, help="Study's total trial budget.")
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
) -> None:
    """Search k-means, GMM and HDBSCAN segmentations; track every trial in MLflow."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from segml.experiment import tune as run_tune
    from segml.spec import load_spec

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
        )
    chosen = result.chosen
    typer.echo(
        f"study {result.study_name}: {result.n_trials} trials, {result.n_feasible} feasible; "
        f"chose trial {chosen.number} ({chosen.family})"
    )
    for key, value in sorted(result.final_metrics.items()):
        typer.echo(f"  {key:<28} {value:.4f}")
    typer.echo(result.segmenter.catalog.to_string(index=False))
    typer.echo(f"parent run: {result.parent_run_id} (experiment {result.experiment_id})")
    typer.echo(f"model: {result.model_uri}")


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]


def _day(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value else None


def _print_intake(reports: tuple[IntakeReport, ...]) -> None:
    for report in reports:
        typer.echo(
            f"{report.source}: rows read {report.rows_read:,}, used {report.rows_used:,}, "
            f"quarantined {sum(report.quarantined.values()):,}, "
            f"excluded {sum(report.excluded.values()):,}"
        )
        for reason, count in {**report.quarantined, **report.excluded}.items():
            typer.echo(f"  {count:>8,}  {reason}")
        missing = {c: s for c, s in report.missing_share.items() if s > 0}
        for column, share in missing.items():
            typer.echo(f"  missing {share:6.1%}  {column}")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
