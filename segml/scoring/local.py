"""The streaming engine: input batches through the model in this process, into one file.

The input (CSV or Parquet; a file or a folder of them) is read in pyarrow batches of only the
columns the model needs, so memory stays flat as the input grows (but for the novel customers,
kept until the candidates are known). Each batch is checked against the model's input
signature, bad rows are quarantined or fail the run (the spec's ``data.bad_rows``), and the
scores are appended to a staging file. What the monitoring finds (emerging candidates, drift,
migration) needs the whole batch, so the novel customers' rows, the only ones that can have an
``emerging_id``, are kept and written last, once it is known. A transaction log is aggregated
per customer first, as at training, so its memory grows with the log.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from segml import _rows
from segml._rows import Fault, Reasons
from segml.data import REASON_COLUMN, ROW_COLUMN, read_customers
from segml.features import customer_table, select_columns, with_value
from segml.migration import MigrationCounter
from segml.model import Assignment, Segmenter
from segml.monitoring import EMERGING_ID, Emerging
from segml.scoring._clean import CleanBatch, Signature, clean_batch
from segml.scoring._collect import SAMPLE_ROWS, Collected, Novel, Sample, previous_assignment
from segml.scoring._engine import Job, Staged
from segml.scoring._ids import SeenIds, id_hashes
from segml.scoring._input import (
    READ_ROWS,
    file_schema,
    prefetched,
    read_batches,
    total_rows,
)
from segml.scoring._output import (
    NO_TEXT,
    SOURCE_COLUMN,
    BackgroundWriter,
    coded,
    output_writer,
    publish,
    repeated,
    staged_schema,
)
from segml.spec import CLV_COLUMNS

ProgressFn = Callable[[int, int | None], None]
"""Called after each batch with the input rows read so far and the total (None if unknown)."""


class LocalEngine:
    """The streaming engine (see the module's description), as the front drives an engine."""

    def __init__(
        self, reference_date: dt.date | None = None, on_progress: ProgressFn | None = None
    ) -> None:
        self.reference_date = reference_date
        self.on_progress = on_progress
        self.run: _Run | None = None

    def check(self, job: Job) -> None:
        """Nothing to refuse up front: each file is checked as it is read."""

    def stage(self, job: Job, folder: Path) -> Staged:
        """Stream the input through the model into ``folder``."""
        self.run = run = _Run(
            job.segmenter,
            job.signature,
            job.spec.data.bad_rows,
            folder / f"scores{job.output.suffix}",
            folder / "quarantine.csv",
            job.model_name,
            job.model.version,
            previous_assignment(job.previous, job.signature.id_column),
            self.on_progress,
        )
        ignored, excluded = _feed(run, job, self.reference_date)
        if run.faults:  # found in input order: the first names the file the error leads with
            first = next(iter(run.faults.values()))
            raise _rows.bad_rows_error(first.path or job.input_path, run.faults)
        return Staged(
            rows_read=run.rows_read,
            rows_scored=run.rows_scored,
            rows_quarantined=run.rows_quarantined,
            quarantined=dict(run.quarantined),
            excluded=excluded,
            ignored_columns=ignored,
            missing=dict(run.missing),
            unseen=dict(run.unseen),
        )

    def collect(self) -> Collected:
        """What the monitoring needs; the output written so far is flushed meanwhile."""
        run = self._started()
        run.flush_written()
        return run.collected()

    def finish(self, emerging: Emerging) -> None:
        """Queue the novel customers' rows, with their emerging ids, and the output's end."""
        self._started().finish(emerging)

    def close(self) -> None:
        """Wait until the staged output is written and closed."""
        if self.run is not None:
            self.run.close()

    def publish(self, output: Path) -> Path | None:
        """Rename the staged output and quarantine file into place."""
        run = self._started()
        return publish(run.staging, run.quarantine_path, output)

    def _started(self) -> _Run:
        if self.run is None:
            raise RuntimeError("LocalEngine.stage must run first")
        return self.run


@dataclass(frozen=True, slots=True)
class _CheckedBatch:
    """A batch of input rows, checked: where it comes from, its cleaned rows and id hashes."""

    table: pa.Table
    path: Path
    first_row: int
    clean: CleanBatch
    hashes: np.ndarray


@dataclass
class _Run:
    """The state of one scoring pass over the input."""

    segmenter: Segmenter
    signature: Signature
    policy: str
    staging: Path
    quarantine_path: Path
    model_name: str
    model_version: str | None
    migration: MigrationCounter | None
    on_progress: ProgressFn | None
    total: int | None = None
    rows_read: int = 0
    rows_scored: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    rows_quarantined: int = 0
    faults: dict[str, Fault] = field(default_factory=dict)
    missing: Counter[str] = field(default_factory=Counter)
    unseen: Counter[str] = field(default_factory=Counter)
    counts: Counter[int] = field(default_factory=Counter)
    seen: SeenIds = field(default_factory=SeenIds)
    sample: Sample = field(default_factory=lambda: Sample(SAMPLE_ROWS))
    novel: Novel = field(default_factory=Novel)
    writer: BackgroundWriter | None = None
    constant_columns: list[pa.DictionaryArray] = field(default_factory=list)
    schema: pa.Schema = field(init=False)
    value_columns: tuple[str, ...] = field(init=False)
    names: pa.Array = field(init=False)
    model: pa.Array = field(init=False)
    version: pa.Array = field(init=False)

    def __post_init__(self) -> None:
        # A model with features.clv scores logs only: their customers' predicted value
        # goes into the output.
        self.value_columns = CLV_COLUMNS if self.segmenter.value is not None else ()
        self.schema = staged_schema(self.signature.id_column, self.value_columns)
        self.names = pa.array(self.segmenter.names_by_position(), pa.string())
        self.model = pa.array([self.model_name], pa.string())
        self.version = pa.array([self.model_version] if self.model_version else [], pa.string())

    def expect(self, total: int | None) -> None:
        """Announce the input's row count (None if unknown), before its first batch."""
        self.total = total
        self.seen = SeenIds(total or 0)

    def add(self, table: pa.Table, path: Path, first_row: int, first: bool) -> None:
        """Check, quarantine and score one batch of input rows."""
        self.take(self.check(table, path, first_row, first))

    def check(self, table: pa.Table, path: Path, first_row: int, first: bool) -> _CheckedBatch:
        """Check one batch of input rows, in input order (duplicates need the earlier ones)."""
        clean = clean_batch(self.signature, table, path, first)
        hashes = id_hashes(clean.ids)
        self._flag_duplicates(clean.ids, hashes, clean.reasons)
        return _CheckedBatch(table, path, first_row, clean, hashes)

    def take(self, checked: _CheckedBatch) -> None:
        """Quarantine and score a checked batch."""
        clean, table = checked.clean, checked.table
        reasons = clean.reasons
        self.missing.update({c: np.count_nonzero(cells) for c, cells in clean.missing.items()})
        self.unseen.update({c: np.count_nonzero(cells) for c, cells in clean.unseen.items()})
        if reasons.bad.any():
            self._set_aside(table, reasons, checked.path, checked.first_row)
        good = ~reasons.bad
        # Under bad_rows: fail a fault stops the scoring; later batches are only checked, so
        # that the error counts every fault.
        values = [table[column] for column in self.value_columns]
        if not self.faults and good.all():
            self._score(clean.frame, clean.numeric, clean.ids, checked.hashes, values)
        elif not self.faults and good.any():
            frame = clean.frame[good].reset_index(drop=True)
            kept = pa.array(good)
            ids, values = clean.ids.filter(kept), [v.filter(kept) for v in values]
            self._score(frame, clean.numeric[good], ids, checked.hashes[good], values)
        self.rows_read += table.num_rows
        if self.on_progress is not None:
            self.on_progress(self.rows_read, self.total)

    def _flag_duplicates(
        self, ids: pa.LargeStringArray, hashes: np.ndarray, reasons: Reasons
    ) -> None:
        candidates = np.flatnonzero(~reasons.bad)
        if candidates.size < len(ids):
            ids = ids.take(candidates)
        twice = self.seen.duplicated(ids, hashes[candidates])
        mask = np.zeros(reasons.bad.size, dtype=bool)
        mask[candidates[twice]] = True
        reasons.flag(mask, _rows.duplicate_id(self.signature.id_column))

    def _set_aside(self, table: pa.Table, reasons: Reasons, path: Path, first_row: int) -> None:
        """Quarantine a batch's bad rows, or under ``bad_rows: fail`` count their faults."""
        if self.policy != "drop":
            for reason, fault in reasons.faults(first_row).items():
                known, found = self.faults.get(reason), replace(fault, path=path)
                self.faults[reason] = found if known is None else known.plus(found)
            return
        bad = np.flatnonzero(reasons.bad)
        rows = table.take(pa.array(bad)).to_pandas()
        rows.insert(0, SOURCE_COLUMN, str(path))
        rows.insert(0, REASON_COLUMN, reasons.reason[bad])
        rows.insert(0, ROW_COLUMN, first_row + bad + 1)
        exists = self.quarantine_path.exists()
        rows.to_csv(self.quarantine_path, mode="a", header=not exists, index=False)
        self.quarantined.update({r: f.count for r, f in reasons.faults().items()})
        self.rows_quarantined += bad.size

    def _score(
        self,
        frame: pd.DataFrame,
        numeric: np.ndarray,
        ids: pa.Array,
        hashes: np.ndarray,
        values: list[pa.ChunkedArray],
    ) -> None:
        """Score a batch of good rows (``numeric``: its numeric columns, one row per customer;
        ``values``: their ``value_columns``, passed through to the output)."""
        found = self.segmenter.assign(frame)
        segments, novel = found.segment_ids, found.is_novel
        scores, keep = self._scores(ids, found, values), None
        if novel.any():  # their rows are written last, with their emerging ids (``finish``)
            rows = np.flatnonzero(novel)
            self.novel.add(found.X[rows], numeric[rows], hashes[rows], scores.take(rows))
            keep = ~novel
        self._write(scores, keep)
        wanted = self.sample.wanted(hashes)
        if wanted.size:
            features = select_columns(frame, self.segmenter.features)
            self.sample.add(wanted, hashes, features, segments, novel, found.X)
        per_segment = np.bincount(segments + 1)
        self.counts.update({int(i) - 1: int(n) for i, n in enumerate(per_segment) if n})
        if self.migration is not None:
            self.migration.add(hashes, segments)
        self.rows_scored += len(segments)

    def _scores(
        self, ids: pa.Array, found: Assignment, values: list[pa.ChunkedArray]
    ) -> pa.RecordBatch:
        """The output rows of a scored batch (no emerging ids yet)."""
        n = len(found.segment_ids)
        columns = [
            ids,
            pa.array(found.segment_ids, pa.int64()),
            coded(found.segment_ids + 1, self.names),
            pa.array(found.confidence, pa.float64()),
            pa.array(found.novelty, pa.float64()),
            pa.array(found.is_novel, pa.bool_()),
            *self._same_in_every_row(n),
            *(v.combine_chunks().cast(pa.float64()) for v in values),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _write(self, scores: pa.RecordBatch | pa.Table, keep: np.ndarray | None = None) -> None:
        """Queue ``scores`` (only the rows where the mask ``keep`` is true, if given)."""
        if self.writer is None:
            self.writer = BackgroundWriter(output_writer(self.staging, self.schema), self.staging)
        self.writer.write(scores, keep)

    def _same_in_every_row(self, n: int) -> list[pa.DictionaryArray]:
        """The emerging id (empty until the candidates are known), model name and version of
        ``n`` rows: one set of arrays for all batches of that size."""
        if not self.constant_columns or len(self.constant_columns[0]) != n:
            texts = (NO_TEXT, self.model, self.version)
            self.constant_columns = [repeated(text, n) for text in texts]
        return self.constant_columns

    def flush_written(self) -> None:
        """Queue the flush to disk of the output written so far: the writing thread does it
        while the candidates are searched, and ``finish`` has only the novel rows left."""
        if self.writer is not None:
            self.writer.flush()

    def finish(self, emerging: Emerging) -> None:
        """Queue the novel customers' rows, with their emerging ids, after all others, then the
        closing of the staged output and its flush to disk (the writing thread does them)."""
        if self.novel.output:
            column = self.schema.get_field_index(EMERGING_ID)
            ids = coded(emerging.labels - 1, pa.array(emerging.ids, pa.string()))
            novel = pa.Table.from_batches(self.novel.output, self.schema)
            self._write(novel.set_column(column, self.schema.field(column), ids))
            self.novel.output = []  # the writing thread holds them until written
        if self.writer is not None:
            self.writer.end(flush=True)

    def close(self) -> None:
        """Wait until the staged output is written and closed; raise a failure to write it."""
        if self.writer is not None:
            self.writer.close()

    def collected(self) -> Collected:
        """What the monitoring needs, from the batches scored."""
        (sample, sample_X), novel = self.sample.rows(), self.novel
        numeric = list(self.signature.numeric)
        return Collected(
            rows_scored=self.rows_scored,
            counts=pd.Series(self.counts).sort_index(),
            sample=sample,
            sample_X=sample_X,
            novel_X=np.concatenate(novel.X) if novel.X else np.empty((0, 0)),
            novel_numeric=pd.DataFrame(
                np.concatenate([np.empty((0, len(numeric))), *novel.numeric]), columns=numeric
            ),
            novel_hashes=np.concatenate([np.empty(0, np.uint64), *novel.hashes]),
            migration=self.migration.matrix() if self.migration is not None else None,
        )


def _feed(
    run: _Run, job: Job, reference_date: dt.date | None
) -> tuple[tuple[str, ...], dict[str, int]]:
    """Stream every input file through ``run``; return the ignored columns and exclusions.

    The model's spec says what the input is: a transaction model's input is a log.
    """
    spec = run.segmenter.spec
    if spec.data.kind == "transactions":
        return (), _feed_transactions(run, job, reference_date)
    # Every file's columns first: an unreadable file is refused before any row is read.
    schemas = {path: file_schema(path, spec.data.delimiter) for path in job.files}
    run.expect(total_rows(job.files))
    ignored: dict[str, None] = {}
    for path, schema in schemas.items():
        ignored |= dict.fromkeys(run.signature.check(path, schema))
        for checked in prefetched(_checked_batches(run, path, schema, spec.data.delimiter)):
            run.take(checked)
    return tuple(ignored), {}


def _checked_batches(
    run: _Run, path: Path, schema: pa.Schema, delimiter: str
) -> Iterator[_CheckedBatch]:
    """The batches of one file, read and checked (on ``prefetched``'s thread)."""
    offset = 0
    for table in read_batches(path, schema, run.signature.columns, delimiter):
        yield run.check(table, path, offset, first=offset == 0)
        offset += table.num_rows


def _feed_transactions(run: _Run, job: Job, reference_date: dt.date | None) -> dict[str, int]:
    """Aggregate a transaction log per customer (as at training), join the batch's attribute
    table, then score the customers."""
    spec = run.segmenter.spec
    input_path = job.input_path
    data = spec.data.model_copy(
        update={
            "source": input_path,
            "customers": job.customers,
            "bad_rows": run.policy,
            "reference_date": None,
        }
    )
    spec = spec.model_copy(update={"data": data})
    intake = read_customers(spec, reference_date)
    table = customer_table(spec, intake, reference_date)
    if run.segmenter.value is not None:  # the training fit, not one of this batch
        table = with_value(spec, intake, table, run.segmenter.value)
    if not intake.quarantine.empty:
        intake.quarantine.to_csv(run.quarantine_path, index=False)
    for report_ in intake.reports:
        run.quarantined.update(report_.quarantined)
        run.rows_quarantined += report_.rows_quarantined
    columns = list(dict.fromkeys([*run.signature.columns, *run.value_columns]))
    customers = pa.Table.from_pandas(table[columns], preserve_index=False)
    run.expect(customers.num_rows)
    for start in range(0, customers.num_rows, READ_ROWS):
        run.add(customers.slice(start, READ_ROWS), input_path, start, first=start == 0)
    run.rows_read = intake.reports[0].rows_read
    return dict(intake.reports[0].excluded)
