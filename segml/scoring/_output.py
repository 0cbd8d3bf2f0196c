"""The score output: its columns, the writer thread, the staging folder and the atomic publish.

Scores are written into a hidden staging folder beside the output and renamed onto it only
when complete, so that an output in place is always a whole one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from segml._io import check_output, flush_to_disk, is_parquet
from segml.errors import DataError
from segml.model import CONFIDENCE, IS_NOVEL, NOVELTY_SCORE, SEGMENT_ID, SEGMENT_NAME
from segml.monitoring import EMERGING_ID
from segml.scoring._input import READ_ROWS

MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
SOURCE_COLUMN = "source"
REPEATED_COLUMNS = (SEGMENT_ID, SEGMENT_NAME, IS_NOVEL, EMERGING_ID, MODEL_NAME, MODEL_VERSION)
QUARANTINE_SUFFIX = ".quarantine.csv"


def check_paths(input_path: Path, output: Path, previous: Path | None) -> None:
    """Refuse an output that cannot be written (see :func:`check_output`) or that would
    overwrite an input."""
    check_output(output, "file")
    for other in (input_path, previous):
        if other is not None and output.resolve() == other.resolve():
            raise DataError(f"{output}: the output would overwrite an input; choose another path")


def output_schema(id_column: str, value_columns: tuple[str, ...] = ()) -> pa.Schema:
    """The columns of a score output, in order: the predicted ``value_columns`` last (those
    of ``features.clv``, when a model that has them scores a transaction log)."""
    return pa.schema(
        [
            (id_column, pa.string()),
            (SEGMENT_ID, pa.int64()),
            (SEGMENT_NAME, pa.string()),
            (CONFIDENCE, pa.float64()),
            (NOVELTY_SCORE, pa.float64()),
            (IS_NOVEL, pa.bool_()),
            (EMERGING_ID, pa.string()),
            (MODEL_NAME, pa.string()),
            (MODEL_VERSION, pa.string()),
            *((column, pa.float64()) for column in value_columns),
        ]
    )


NO_TEXT = pa.array([], pa.string())
"""No text: an emerging id not yet known, a model without a version."""


def coded(codes: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    """``values[codes]`` as a dictionary array (missing where a code is negative)."""
    missing = np.asarray(codes) < 0
    indices = pa.array(np.asarray(codes, np.int32), mask=missing if missing.any() else None)
    return pa.DictionaryArray.from_arrays(indices, values)


def repeated(values: pa.Array, n: int) -> pa.DictionaryArray:
    """``values[0]`` ``n`` times (missing if ``values`` is empty), as a dictionary array."""
    return coded(np.full(n, 0 if len(values) else -1), values)


def staged_schema(id_column: str, value_columns: tuple[str, ...] = ()) -> pa.Schema:
    """The output's columns as staged: large-string ids and dictionary-coded repeated text.

    The files are written without the Arrow schema, so readers see plain text columns.
    """
    fields = []
    for column in output_schema(id_column, value_columns):
        if column.name == id_column:
            column = column.with_type(pa.large_string())
        elif column.type == pa.string():
            column = column.with_type(pa.dictionary(pa.int32(), pa.string()))
        fields.append(column)
    return pa.schema(fields)


class BackgroundWriter:
    """A Parquet or CSV writer of ``path`` that writes on a background thread, up to
    ``QUEUED_WRITES`` batches behind its caller.

    pyarrow encodes and writes without the GIL, so batches are written while the next are
    scored; the queue evens out batches that take longer to write than to score. The writer is
    closed and the file flushed to disk on that thread too, before the file is renamed into
    place (a rename over an earlier output then has nothing left to flush).
    """

    def __init__(self, writer: pq.ParquetWriter | pv.CSVWriter, path: Path) -> None:
        self.writer = writer
        self.path = path
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="segml-write")
        self.pending: deque[Future[None]] = deque()
        self.failed = False
        self.ending = False

    def write(self, data: pa.RecordBatch | pa.Table, keep: np.ndarray | None = None) -> None:
        """Queue ``data`` (only the rows where the mask ``keep`` is true, if given: selected on
        the writing thread), once fewer than ``QUEUED_WRITES`` are waiting to be written."""
        while len(self.pending) >= QUEUED_WRITES:
            self._raise(self.pending.popleft().exception())
        self.pending.append(self.pool.submit(self._write, data, keep))

    def _write(self, data: pa.RecordBatch | pa.Table, keep: np.ndarray | None) -> None:
        if keep is not None:
            data = data.filter(keep)
        if data.num_rows:
            self.writer.write(data)

    def flush(self) -> None:
        """Queue the flush to disk of what is written so far (the writer may hold a tail)."""
        self.pending.append(self.pool.submit(flush_to_disk, self.path))

    def end(self, flush: bool) -> None:
        """Queue the closing of the writer behind the last batch, and with ``flush`` the
        file's flush to disk, and return: the caller goes on while they run (``close`` waits
        for them)."""
        if not self.ending:
            self.ending = True
            self.pending.append(self.pool.submit(self._close, flush))

    def close(self) -> None:
        """Write what is queued, then close the writer (unflushed unless ``end`` asked). Only
        the first failure is raised, and once: the writes queued after it, and the closing,
        fail because of it."""
        self.end(flush=False)
        errors = [pending.exception() for pending in self.pending]
        self.pending.clear()
        self.pool.shutdown(wait=False)  # all done: nothing to wait for in joining the thread
        for error in errors:
            self._raise(error)

    def _close(self, flush: bool) -> None:
        self.writer.close()
        if flush:
            flush_to_disk(self.path)

    def _raise(self, error: BaseException | None) -> None:
        if error is not None and not self.failed:
            self.failed = True
            raise error


QUEUED_WRITES = 3


def output_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter | pv.CSVWriter:
    """The writer of a Parquet or a CSV output ``path``."""
    return _parquet_writer(path, schema) if is_parquet(path) else pv.CSVWriter(str(path), schema)


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Dictionary encoding only where values repeat, and statistics only where a reader would
    filter (on unique ids both cost more time than they save space; the model's name and
    version are the same in every row). Values are encoded a whole batch at a time, not in
    pyarrow's default pages of 1,024, so that each column is encoded in a few long calls."""
    filtered = [SEGMENT_ID, SEGMENT_NAME, IS_NOVEL, EMERGING_ID]
    return pq.ParquetWriter(
        path,
        schema,
        use_dictionary=list(REPEATED_COLUMNS),
        write_statistics=filtered,
        write_batch_size=READ_ROWS,
        store_schema=False,
    )


def staging_folder(output: Path) -> tempfile.TemporaryDirectory[str]:
    """This run's hidden staging folder beside ``output`` (``.<name>.pid<PID>.*``), once the
    folders that killed runs scoring to ``output`` left behind are removed."""
    pattern = re.compile(re.escape(f".{output.name}.pid") + r"(\d+)\.")
    for folder in output.parent.glob(f".{glob.escape(output.name)}.pid*"):
        found = pattern.match(folder.name)
        if found and folder.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
    prefix = f".{output.name}.pid{os.getpid()}."
    return tempfile.TemporaryDirectory(dir=output.parent, prefix=prefix)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return True


def publish(staged: Path, quarantine_staged: Path, output: Path) -> Path | None:
    """Rename the staged output and quarantine file into place; return the quarantine file's
    path, if any.

    Each is flushed to disk first (the output on the writing thread), and the quarantine file
    goes first: an output in place means the run completed. Their folder is flushed last, so
    that a run which ended has its output in place after a crash too.
    """
    quarantine = output.with_suffix(QUARANTINE_SUFFIX)
    if quarantine_staged.exists():
        flush_to_disk(quarantine_staged)
        os.replace(quarantine_staged, quarantine)
    else:
        quarantine.unlink(missing_ok=True)
    os.replace(staged, output)
    flush_to_disk(output.parent)
    return quarantine if quarantine.exists() else None
