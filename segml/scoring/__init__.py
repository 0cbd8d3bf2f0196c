"""Batch scoring: stream customers through a segment model into an atomically written output.

This is the front: it settles the run's inputs, hands them to an engine (the streaming one in
:mod:`segml.scoring.local`, or Spark in :mod:`segml.scoring.spark`), runs the monitoring on
what the engine collected, builds the summary and logs the scoring run. Every engine stages
its output beside the target and renames it into place only when complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from segml import report, tracking
from segml._io import created_parents
from segml.errors import DataError
from segml.model import Segmenter
from segml.registry import ModelRef, load_segmenter
from segml.report import scoring_html as summary_html
from segml.report import scoring_markdown as summary_markdown
from segml.scoring._clean import Signature
from segml.scoring._collect import emerging_candidates, monitor
from segml.scoring._engine import Engine, Job
from segml.scoring._input import input_files
from segml.scoring._output import (
    MODEL_NAME,
    MODEL_VERSION,
    check_paths,
    output_schema,
    staging_folder,
)
from segml.scoring._summary import ScoreSummary
from segml.scoring.local import LocalEngine, ProgressFn
from segml.scoring.spark import DEFAULT_MASTER, SparkEngine
from segml.spec import Spec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "MODEL_NAME",
    "MODEL_VERSION",
    "Engine",
    "ProgressFn",
    "ScoreSummary",
    "output_schema",
    "run_scoring",
    "score",
    "score_spark",
    "summary_html",
    "summary_markdown",
]


def score(
    segmenter: Segmenter,
    input_path: Path,
    output: Path,
    *,
    model: ModelRef | None = None,
    spec: Spec | None = None,
    previous: Path | None = None,
    previous_candidates: pd.DataFrame | None = None,
    reference_date: dt.date | None = None,
    on_progress: ProgressFn | None = None,
    customers: Path | None = None,
) -> ScoreSummary:
    """Score every customer of ``input_path`` and write ``output`` (Parquet or CSV) atomically.

    Parameters
    ----------
    segmenter : Segmenter
        The fitted segment model.
    input_path : Path
        A customer table (or, for a transaction model, a transaction log): CSV or Parquet,
        a file or a folder of them.
    output : Path
        ``.parquet`` or ``.csv``; written beside, renamed when complete. Rows set aside go to
        ``<output stem>.quarantine.csv`` with their data row number, reason and file.
    model : ModelRef, optional
        What the output names as model and version.
    spec : Spec, optional
        Overrides the model's ``monitoring`` thresholds and ``data.bad_rows`` policy.
    previous : Path, optional
        An earlier score output: the migration of customers present in both.
    previous_candidates : DataFrame, optional
        The candidates of the previous scoring run of the same model.
    reference_date : date, optional
        For transactions: features as of this day (default: the last purchase).
    on_progress : callable, optional
        Called after each batch with the rows read so far and the total (if known).
    customers : Path, optional
        For a transaction model trained with an attribute table (``data.customers``): this
        batch's attribute table, joined by id (required then).

    Raises
    ------
    DataError
        Unreadable input, a missing or mistyped column, bad rows under ``bad_rows: fail``,
        a missing attribute table, or nothing left to score. No output is written then.
    """
    model = model or ModelRef("", segmenter.spec.model_name)
    engine = LocalEngine(reference_date, on_progress)
    return _score_with(
        engine,
        segmenter,
        input_path,
        output,
        model,
        spec,
        previous,
        previous_candidates,
        customers=customers,
    )


def score_spark(
    segmenter: Segmenter,
    input_path: Path,
    output: Path,
    *,
    model: ModelRef,
    spec: Spec | None = None,
    previous: Path | None = None,
    previous_candidates: pd.DataFrame | None = None,
    master: str = DEFAULT_MASTER,
) -> ScoreSummary:
    """Score a Parquet customer table on Spark; the output and report equal :func:`score`'s.

    Parameters
    ----------
    segmenter : Segmenter
        The segment model behind ``model`` (for the checks and the monitoring).
    input_path : Path
        A Parquet file or a folder of Parquet files (customer tables only).
    output : Path
        A folder ending in ``.parquet``: Parquet part files, renamed into place when complete.
    model : ModelRef
        The model the Spark UDF loads (``models:/NAME/VERSION``, an exported folder, ...).
    spec, previous, previous_candidates
        As for :func:`score`.
    master : str
        The Spark master (``local[*]``, ``local[2]``, ``spark://host:7077``, ...).

    Raises
    ------
    DataError
        As :func:`score`; also for CSV input or a CSV output.
    EngineError
        pyspark or Java is missing.
    """
    engine = SparkEngine(master)
    return _score_with(
        engine, segmenter, input_path, output, model, spec, previous, previous_candidates
    )


def _score_with(
    engine: Engine,
    segmenter: Segmenter,
    input_path: Path,
    output: Path,
    model: ModelRef,
    spec: Spec | None,
    previous: Path | None,
    previous_candidates: pd.DataFrame | None,
    *,
    customers: Path | None = None,
) -> ScoreSummary:
    """Drive ``engine`` through one scoring run (see :class:`Engine`) and sum it up."""
    started = time.perf_counter()
    check_paths(input_path, output, previous)
    in_effect = spec or segmenter.spec
    files = tuple(input_files(input_path))
    signature = Signature.of(segmenter)
    job = Job(
        segmenter, signature, in_effect, model, input_path, files, output, previous, customers
    )
    engine.check(job)
    _check_attribute_table(segmenter, input_path, customers)
    with created_parents(output), staging_folder(output) as folder:
        try:
            staged = engine.stage(job, Path(folder))
            if staged.rows_scored == 0:
                why = _why_nothing_scored(staged.rows_read)
                raise DataError(f"{input_path}: no customer to score ({why})")
            collected = engine.collect()
            emerging = emerging_candidates(segmenter, collected, in_effect, previous_candidates)
            engine.finish(emerging)  # the engine ends the output while the drift is measured
            found = monitor(segmenter, collected, in_effect, emerging)
        finally:
            engine.close()
        quarantine = engine.publish(output)
    return ScoreSummary(
        model=model,
        model_name=job.model_name,
        family=segmenter.segmentation.family,
        output=output,
        quarantine=quarantine,
        rows_read=staged.rows_read,
        rows_scored=staged.rows_scored,
        rows_quarantined=staged.rows_quarantined,
        quarantined=staged.quarantined,
        excluded=staged.excluded,
        ignored_columns=staged.ignored_columns,
        missing=staged.missing,
        unseen=staged.unseen,
        novel=len(collected.novel_hashes),
        seconds=time.perf_counter() - started,
        report=found,
        settings=in_effect.monitoring,
        min_report_size=in_effect.min_report_size,
        segment_names=segmenter.segment_names(),
        training_hidden=frozenset(
            report.catalog_hidden(segmenter.catalog, in_effect.min_report_size)
        ),
    )


def _check_attribute_table(segmenter: Segmenter, input_path: Path, customers: Path | None) -> None:
    """Refuse an attribute table a model has no use for, or scoring without one it needs:
    the model keeps which columns come from the table, never the training table's path."""
    needed = segmenter.spec.data.table_attributes
    if customers is not None and not needed:
        raise DataError(
            f"{customers}: this model takes no attribute table (--customers is for a model of a "
            "transaction log trained with data.customers)"
        )
    if customers is None and needed:
        raise DataError(
            f"{input_path}: the model needs this batch's attribute table (columns "
            f"{', '.join(needed)}, by {segmenter.id_column}); pass --customers PATH"
        )


def _why_nothing_scored(rows_read: int) -> str:
    if rows_read == 0:
        return "the input has no data rows"
    return f"all {rows_read} rows were quarantined"


def run_scoring(
    client: MlflowClient,
    ref: ModelRef,
    input_path: Path,
    output: Path,
    *,
    spec: Spec | None = None,
    previous: Path | None = None,
    reference_date: dt.date | None = None,
    on_progress: ProgressFn | None = None,
    spark_master: str | None = None,
    customers: Path | None = None,
) -> tuple[ScoreSummary, str]:
    """Load the model, score (see :func:`score`) and log the scoring run; return both.

    With ``spark_master`` the Spark engine scores (:func:`score_spark`).
    """
    begun = time.time()
    segmenter = load_segmenter(ref)
    experiment = segmenter.spec.name
    label = ref.label or segmenter.spec.model_name
    candidates = tracking.previous_candidates(client, experiment, label)
    if spark_master is None:
        engine: Engine = LocalEngine(reference_date, on_progress)
    else:
        engine = SparkEngine(spark_master)
    summary = _score_with(
        engine,
        segmenter,
        input_path,
        output,
        ref,
        spec,
        previous,
        candidates,
        customers=customers,
    )
    params = {
        "model": label,
        "input": str(input_path),
        "output": str(output),
        "reference_date": reference_date,
        "previous": previous,
        "customers": customers,
        "engine": "pandas" if spark_master is None else f"spark {spark_master}",
    }
    name = tracking.dataset_name(input_path, reference_date)
    signature = Signature.of(segmenter)  # the input's schema, without reading it again
    columns = pd.DataFrame(
        {c: pd.Series(dtype="float64") for c in signature.numeric}
        | {c: pd.Series(dtype="string") for c in (signature.id_column, *signature.categorical)}
    )
    dataset = (columns, name, str(input_path), _input_digest(input_files(input_path)))
    return summary, _log(client, summary, experiment, params, dataset, begun)


def _input_digest(files: list[Path]) -> str:
    """A digest of the input files that changes when any of them does (their names, sizes
    and modification times: reading every byte of a large batch twice would cost as much
    as scoring it)."""
    found = hashlib.sha256()
    for path in files:
        stat = path.stat()
        found.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return found.hexdigest()[:8]


def _log(
    client: MlflowClient,
    summary: ScoreSummary,
    experiment: str,
    params: Mapping[str, object],
    dataset: tuple[pd.DataFrame, str, str, str],
    started: float,
) -> str:
    """Log the scoring run: parameters, input, metrics, tables, the migration and the
    summaries."""
    texts = {}
    if summary.report.migration is not None:
        texts["migration.csv"] = report.published_migration(summary).to_csv(index=False)
    texts["summary.md"] = report.scoring_markdown(summary)
    texts["summary.html"] = report.scoring_html(summary)
    return tracking.log_scoring_run(
        client,
        experiment,
        label=summary.model.label or summary.model_name,
        family=summary.family,
        model=(summary.model.name, summary.model.version),
        metrics=summary.metrics(),
        tables=report.scoring_tables(summary),
        texts=texts,
        params=params,
        dataset=dataset,
        started=started,
    )
