"""The Spark engine: the registered model as ``mlflow.pyfunc.spark_udf``, same results.

The Parquet input is checked batch by batch with the streaming engine's own cleaning (in a
``mapInArrow`` step), duplicate ids are found with a window over the whole input, the good rows
are scored by the pyfunc model's Spark UDF into a staging folder, and the monitoring reads the
staged scores: segment counts by aggregation, the hash-ordered sample by a top-k, the novel
customers in input order. The front then builds the report with the same functions as for
the streaming engine; the output folder of Parquet part files (with ``emerging_id`` joined in)
is written beside its target and renamed onto it when complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa

from segml import _rows
from segml._io import atomic_dir, atomic_path, is_parquet, open_parquet
from segml.data import REASON_COLUMN, ROW_COLUMN
from segml.errors import DataError, EngineError, SegmlError
from segml.model import CONFIDENCE, IS_NOVEL, NOVELTY_SCORE, SEGMENT_ID, SEGMENT_NAME, Segmenter
from segml.monitoring import EMERGING_ID, Emerging
from segml.registry import ModelRef, spark_udf
from segml.scoring._clean import Signature, clean_batch
from segml.scoring._collect import SAMPLE_ROWS, Collected, previous_assignment
from segml.scoring._engine import Job, Staged
from segml.scoring._ids import id_hashes
from segml.scoring._input import READ_ROWS, file_schema
from segml.scoring._output import (
    MODEL_NAME,
    MODEL_VERSION,
    QUARANTINE_SUFFIX,
    SOURCE_COLUMN,
    output_schema,
)

DEFAULT_MASTER = "local[*]"
FILE, ROW, KEY, REASON = "_segml_file", "_segml_row", "_segml_key", "_segml_reason"
CLEAN = "_segml_clean_"
"""Prefix of the cleaned copy of each input column (the raw one is kept for the quarantine)."""
_SIGN = np.uint64(1 << 63)


@dataclass(frozen=True, slots=True)
class _SparkStaging:
    """What ``SparkEngine.stage`` leaves for the later steps."""

    job: Job
    scored: Any
    bad_rows: pd.DataFrame
    rows_scored: int


class SparkEngine:
    """The Spark engine (see the module's description), as the front drives an engine."""

    def __init__(self, master: str = DEFAULT_MASTER) -> None:
        self.master = master
        self.spark: Any = None
        self.ignored: tuple[str, ...] = ()
        self.staging: _SparkStaging | None = None
        self.novel_ids = np.empty(0, dtype=object)
        self.members = pd.DataFrame()

    def check(self, job: Job) -> None:
        """Refuse a transaction model, CSV input or output and a wrong file signature; start
        Spark."""
        if job.segmenter.spec.data.kind == "transactions":
            raise DataError(
                f"{job.input_path}: the model scores a transaction log, which --engine spark "
                "does not aggregate; use --engine pandas"
            )
        for path in [job.output, *job.files]:
            if not is_parquet(path):
                raise DataError(
                    f"{path}: --engine spark reads and writes Parquet; use --engine pandas for CSV"
                )
        ignored: dict[str, None] = {}
        for path in job.files:
            ignored |= dict.fromkeys(job.signature.check(path, file_schema(path, ",")))
        self.ignored = tuple(ignored)
        self.spark = spark_session(self.master)

    def stage(self, job: Job, folder: Path) -> Staged:
        """Check every row, set the bad ones aside, score the good ones into ``folder``."""
        signature = job.signature
        with _worker_errors():
            checked = _checked_rows(self.spark, job.files, signature).persist()
            try:
                stats = _stats(checked, signature)
                bad_rows = _set_aside(checked, job.files, signature, job.spec.data.bad_rows)
                staged = str(folder / "scored")
                _predicted(checked, job.segmenter, job.model, signature).write.parquet(staged)
            finally:
                checked.unpersist()
            scored = self.spark.read.parquet(staged)
            rows_scored = scored.count()
        self.staging = _SparkStaging(job, scored, bad_rows, rows_scored)
        return Staged(
            rows_read=stats["rows"],
            rows_scored=rows_scored,
            rows_quarantined=stats["rows_quarantined"],
            quarantined=stats["quarantined"],
            excluded={},
            ignored_columns=self.ignored,
            missing=stats["missing"],
            unseen=stats["unseen"],
        )

    def collect(self) -> Collected:
        """What the monitoring needs, read from the staged scores."""
        staging = self._staged()
        job = staging.job
        with _worker_errors():
            found, self.novel_ids = _collect(
                staging.scored, job.segmenter, job.signature, job.previous, staging.rows_scored
            )
        return found

    def finish(self, emerging: Emerging) -> None:
        """The novel customers' emerging ids, joined into the output when it is written."""
        labels = emerging.labels
        self.members = pd.DataFrame(
            {
                self._staged().job.signature.id_column: self.novel_ids[labels > 0],
                EMERGING_ID: np.array(emerging.ids, dtype=object)[labels[labels > 0] - 1],
            }
        )

    def close(self) -> None:
        """Nothing to release: Spark keeps no staged state outside the staging folder."""

    def publish(self, output: Path) -> Path | None:
        """Write the quarantine file and the output folder beside their targets; rename them in."""
        staging = self._staged()
        with _worker_errors():
            quarantine = _write_quarantine(staging.bad_rows, output)
            _write_output(staging.scored, self.members, staging.job.signature.id_column, output)
        return quarantine

    def _staged(self) -> _SparkStaging:
        if self.staging is None:
            raise RuntimeError("SparkEngine.stage must run first")
        return self.staging


def spark_session(master: str = DEFAULT_MASTER) -> Any:
    """The Spark session (created on ``master`` unless one is running); EngineError if
    pyspark or Java is missing."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError("--engine spark needs pyspark: pip install 'segml[spark]'") from None
    # Python workers run this interpreter, so they import the same segml and its dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("segml score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(READ_ROWS))
    )
    if master.startswith("local"):
        # One shuffle partition per core, not Spark's cluster default of 200 tiny tasks.
        builder = builder.config("spark.sql.shuffle.partitions", str(_local_cores(master)))
    try:
        return builder.getOrCreate()
    except Exception as exc:  # pyspark raises a bare runtime error when Java cannot start
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(
            f"--engine spark cannot start Spark on {master} ({reason}); it needs Java 17 or "
            "later on PATH or in JAVA_HOME"
        ) from None


def _local_cores(master: str) -> int:
    """The threads of a ``local[N]`` master; the machine's cores for ``local[*]``."""
    threads = re.fullmatch(r"local\[(\d+)[^\]]*\]", master)
    return int(threads[1]) if threads else os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Checking


def _checked_rows(spark: Any, files: tuple[Path, ...], signature: Signature) -> Any:
    """Every input row with its file, row number, id hash, cleaned columns and first reason."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    raw = spark.read.parquet(*[str(p) for p in files]).select(
        *signature.columns,
        F.col("_metadata.file_path").alias(FILE),
        F.col("_metadata.row_index").alias(ROW),
    )
    by_path = {p.resolve(): (i, p) for i, p in enumerate(files)}
    schema = StructType([raw.schema[c] for c in signature.columns])
    schema = schema.add(FILE, "integer").add(ROW, "long")
    for name, kind in _clean_fields(signature):
        schema = schema.add(name, kind)
    schema = schema.add(KEY, "long").add(REASON, "string")

    def clean(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                yield _check_arrow_batch(batch, signature, by_path)

    checked = raw.mapInArrow(clean, schema)
    first = Window.partitionBy(CLEAN + signature.id_column).orderBy(FILE, ROW)
    again = F.row_number().over(first) > 1
    duplicate = _rows.duplicate_id(signature.id_column)
    # Only rows without another reason compete for an id, as in the pandas engine.
    return checked.withColumn(
        REASON,
        F.when(F.col(REASON).isNull() & again, F.lit(duplicate)).otherwise(F.col(REASON)),
    )


def _clean_fields(signature: Signature) -> list[tuple[str, str]]:
    return [
        (CLEAN + signature.id_column, "string"),
        *((CLEAN + c, "double") for c in signature.numeric),
        *((CLEAN + c, "string") for c in signature.categorical),
    ]


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)).resolve()


def _check_arrow_batch(
    batch: pa.RecordBatch,
    signature: Signature,
    by_path: dict[Path, tuple[int, Path]],
) -> pa.RecordBatch:
    """The pandas engine's cleaning of one batch (of one file): the raw columns, the file's
    number, the row number, the cleaned columns (missing cells null), the id hash (as a signed
    key in unsigned order) and each row's first reason."""
    table = pa.Table.from_batches([batch])
    number, path = by_path[_local(table[FILE][0].as_py())]
    first = table[ROW][0].as_py() == 0
    clean = clean_batch(signature, table.select(signature.columns), path, first)
    frame, ids, missing = clean.frame, clean.ids, clean.missing
    columns = [
        *table.select(signature.columns).columns,
        pa.repeat(pa.scalar(number, pa.int32()), table.num_rows),
        table[ROW],
        ids.cast(pa.string()),
        *(pa.array(frame[c].to_numpy(), pa.float64(), mask=missing[c]) for c in signature.numeric),
        *(pa.array(frame[c], pa.string()) for c in signature.categorical),
        pa.array((id_hashes(ids) ^ _SIGN).view(np.int64), pa.int64()),
        pa.array(clean.reasons.reason, pa.string()),
    ]
    names = [*signature.columns, FILE, ROW, *(n for n, _ in _clean_fields(signature)), KEY, REASON]
    return pa.Table.from_arrays(columns, names).combine_chunks().to_batches()[0]


def _stats(checked: Any, signature: Signature) -> dict[str, Any]:
    """Rows read and quarantined, rows per reason, missing (imputed) cells and unseen
    categories per column."""
    from pyspark.sql import functions as F

    features = [*signature.numeric, *signature.categorical]
    unseen = {
        c: F.count(
            F.when(~F.col(CLEAN + c).isin(signature.categories[c].to_pylist()), F.lit(1))
        ).alias(f"_unseen_{i}")
        for i, c in enumerate(signature.categorical)
    }
    counts = checked.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(REASON).alias("bad"),
        *(F.count(CLEAN + c).alias(c) for c in features),
        *unseen.values(),
    ).first()
    faults = _faults(checked).collect()
    return {
        "rows": int(counts["rows"]),
        "rows_quarantined": int(counts["bad"]),
        "missing": {c: int(counts["rows"] - counts[c]) for c in features},
        "unseen": {c: int(counts[f"_unseen_{i}"]) for i, c in enumerate(signature.categorical)},
        "quarantined": {r["reason"]: int(r["count"]) for r in faults},
    }


def _faults(checked: Any) -> Any:
    """Per reason (a row's reasons split apart), its rows and its first row in input order."""
    from pyspark.sql import functions as F

    reasons = F.explode(F.split(F.col(REASON), re.escape(_rows.SEPARATOR))).alias("reason")
    return (
        checked.where(F.col(REASON).isNotNull())
        .select(FILE, ROW, reasons)
        .groupBy("reason")
        .agg(F.count(F.lit(1)).alias("count"), F.min(F.struct(FILE, ROW)).alias("first"))
    )


def _set_aside(
    checked: Any, files: tuple[Path, ...], signature: Signature, policy: str
) -> pd.DataFrame:
    """Fail with every reason, or return the bad rows as the quarantine table: data row
    number, reasons, source file and the row's input columns."""
    from pyspark.sql import functions as F

    if policy != "drop":
        found = sorted(_faults(checked).collect(), key=lambda r: tuple(r["first"]))
        if found:
            raise _rows.bad_rows_error(
                files[found[0]["first"][FILE]],
                {
                    r["reason"]: _rows.Fault(
                        int(r["count"]), r["first"][ROW] + 1, files[r["first"][FILE]]
                    )
                    for r in found
                },
            )
    bad = checked.where(F.col(REASON).isNotNull()).orderBy(FILE, ROW)
    rows = bad.select(FILE, ROW, REASON, *signature.columns).toPandas()
    rows.insert(0, SOURCE_COLUMN, [str(files[i]) for i in rows.pop(FILE)])
    rows.insert(0, REASON_COLUMN, rows.pop(REASON))
    rows.insert(0, ROW_COLUMN, rows.pop(ROW) + 1)
    return rows


def _write_quarantine(rows: pd.DataFrame, output: Path) -> Path | None:
    """``<output>.quarantine.csv`` with the bad rows (removed when there are none)."""
    quarantine = output.with_suffix(QUARANTINE_SUFFIX)
    if rows.empty:
        quarantine.unlink(missing_ok=True)
        return None
    with atomic_path(quarantine) as tmp:
        rows.to_csv(tmp, index=False)
    return quarantine


# ---------------------------------------------------------------------------------------------
# Scoring and collecting


def _predicted(checked: Any, segmenter: Segmenter, model: ModelRef, signature: Signature) -> Any:
    """The good rows scored by the model's Spark UDF, with what the monitoring reads."""
    from pyspark.sql import functions as F

    schema = output_schema(signature.id_column)
    predicted = [SEGMENT_ID, SEGMENT_NAME, CONFIDENCE, NOVELTY_SCORE, IS_NOVEL]
    result = ", ".join(f"{n} {_spark_type(schema.field(n).type)}" for n in predicted)
    predict = spark_udf(checked.sparkSession, model, f"struct<{result}>")
    inputs = [F.col(CLEAN + c).alias(c) for c in signature.columns]
    name = model.name or segmenter.spec.model_name
    return (
        checked.where(F.col(REASON).isNull())
        .withColumn("_segml_out", predict(F.struct(*inputs)))
        .select(
            F.col(CLEAN + signature.id_column).alias(signature.id_column),
            *(F.col(f"_segml_out.{n}").alias(n) for n in predicted),
            F.lit(None).cast("string").alias(EMERGING_ID),
            F.lit(name).alias(MODEL_NAME),
            F.lit(model.version).cast("string").alias(MODEL_VERSION),
            *(F.col(CLEAN + c).alias(c) for c in segmenter.features),
            KEY,
            FILE,
            ROW,
        )
    )


def _spark_type(kind: pa.DataType) -> str:
    return {pa.int64(): "long", pa.float64(): "double", pa.bool_(): "boolean"}.get(kind, "string")


def _collect(
    scored: Any,
    segmenter: Segmenter,
    signature: Signature,
    previous: Path | None,
    rows_scored: int,
) -> tuple[Collected, np.ndarray]:
    """What the monitoring needs, from the staged scores; and the novel customers' ids."""
    from pyspark.sql import functions as F

    features, numeric = segmenter.features, list(signature.numeric)
    counts = scored.groupBy(SEGMENT_ID).count().toPandas()
    sample = _typed(
        scored.orderBy(KEY).limit(SAMPLE_ROWS).select(*features, SEGMENT_ID, IS_NOVEL).toPandas(),
        signature,
    )
    novel = (
        scored.where(F.col(IS_NOVEL))
        .orderBy(FILE, ROW)
        .select(signature.id_column, KEY, *features)
        .toPandas()
    )
    found = Collected(
        rows_scored=rows_scored,
        counts=counts.set_index(SEGMENT_ID)["count"].sort_index(),
        sample=sample,
        sample_X=segmenter.preprocess(sample),
        novel_X=segmenter.preprocess(_typed(novel, signature)) if len(novel) else np.empty((0, 0)),
        novel_numeric=novel[numeric],
        novel_hashes=novel[KEY].to_numpy(np.int64).view(np.uint64) ^ _SIGN,
        migration=_migration_matrix(scored, previous, signature.id_column),
    )
    return found, novel[signature.id_column].to_numpy()


def _typed(frame: pd.DataFrame, signature: Signature) -> pd.DataFrame:
    """Categorical columns as pandas strings, as the pandas engine hands them to the model."""
    return frame.astype({c: "string" for c in signature.categorical})


def _migration_matrix(scored: Any, previous: Path | None, id_column: str) -> pd.DataFrame | None:
    """With ``--previous``: the migration, counted over the staged ids and segments."""
    counter = previous_assignment(previous, id_column)
    if counter is None:
        return None
    for path in sorted(Path(_local(f)) for f in scored.inputFiles()):
        for batch in open_parquet(path).iter_batches(READ_ROWS, columns=[KEY, SEGMENT_ID]):
            keys = batch.column(KEY).to_numpy().view(np.uint64) ^ _SIGN
            counter.add(keys, batch.column(SEGMENT_ID).to_numpy())
    return counter.matrix()


def _write_output(scored: Any, emerging: pd.DataFrame, id_column: str, output: Path) -> None:
    """Write the output folder (``emerging_id`` filled in) beside ``output``; rename it in."""
    from pyspark.sql import functions as F

    columns = output_schema(id_column).names
    if len(emerging):
        ids = scored.sparkSession.createDataFrame(
            emerging.rename(columns={EMERGING_ID: "_segml_emerging"})
        )
        scored = scored.join(F.broadcast(ids), on=id_column, how="left").withColumn(
            EMERGING_ID, F.col("_segml_emerging")
        )
    with atomic_dir(output) as tmp:
        scored.select(*columns).write.parquet(str(tmp))


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """Re-raise a DataError of a Spark Python worker (it reaches the driver as text) as one."""
    try:
        yield
    except SegmlError:
        raise
    except Exception as exc:
        found = re.search(r"segml\.errors\.DataError: (.+)", str(exc))
        if found is None:
            raise
        raise DataError(found[1].strip()) from None
