"""Reading the input: its files, their columns, and batches of only the columns scored."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from segml._io import check_columns, csv_header, is_parquet, open_parquet
from segml.errors import DataError

READ_ROWS = 65_536
"""Rows per Parquet batch (CSV batches are blocks of ``CSV_BLOCK_BYTES``)."""
CSV_BLOCK_BYTES = 4 << 20
INPUT_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
T = TypeVar("T")


def input_files(path: Path) -> list[Path]:
    """The files to score: ``path`` itself, or the CSV/Parquet files of a folder, by name.

    Hidden files and files starting with ``_`` (such as Spark's ``_SUCCESS``) are skipped.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in INPUT_SUFFIXES
    )
    if not files:
        raise DataError(f"{path}: the folder holds no CSV or Parquet file")
    return files


def file_schema(path: Path, delimiter: str) -> pa.Schema:
    """The file's columns (CSV columns as text, names stripped as at training)."""
    try:
        if is_parquet(path):
            schema = pq.read_schema(path)
        else:
            sep = r"\s+" if delimiter == "whitespace" else delimiter
            schema = pa.schema([(c, pa.string()) for c in csv_header(path, sep)])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header and no rows)") from None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV or Parquet file ({_first(exc)})") from None
    check_columns(path, schema)
    return schema


def read_batches(
    path: Path, schema: pa.Schema, columns: list[str], delimiter: str
) -> Iterator[pa.Table]:
    """Batches of ``columns`` of one file, in order."""
    try:
        if is_parquet(path):
            for batch in open_parquet(path).iter_batches(READ_ROWS, columns=columns):
                yield pa.Table.from_batches([batch])
        elif delimiter == "whitespace":
            chunks = pd.read_csv(path, sep=r"\s+", dtype=str, usecols=columns, chunksize=READ_ROWS)
            for chunk in chunks:
                yield pa.Table.from_pandas(chunk[columns], preserve_index=False)
        else:
            yield from _read_csv(path, schema, columns, delimiter)
    except (pa.ArrowException, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV or Parquet file ({_first(exc)})") from None


def _read_csv(
    path: Path, schema: pa.Schema, columns: list[str], delimiter: str
) -> Iterator[pa.Table]:
    reader = pv.open_csv(
        path,
        read_options=pv.ReadOptions(
            column_names=schema.names, skip_rows=1, block_size=CSV_BLOCK_BYTES
        ),
        parse_options=pv.ParseOptions(delimiter=delimiter),
        convert_options=pv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
        ),
    )
    for batch in reader:
        yield pa.Table.from_batches([batch])


def _first(exc: BaseException) -> str:
    """The first line of an error; a CSV parse error loses the row text it quotes (PII)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ": ".join(line.split(": ")[:2]) if line.startswith("CSV parse error") else line


def total_rows(files: Sequence[Path]) -> int | None:
    """Input rows, when the files say so without being read (Parquet)."""
    if not all(is_parquet(f) for f in files):
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, each made on a background thread while the caller works on the previous:
    reading and checking a batch overlaps with scoring the one before."""
    with ThreadPoolExecutor(1, thread_name_prefix="segml-read") as pool:
        upcoming = pool.submit(next, items, None)
        while (item := upcoming.result()) is not None:
            upcoming = pool.submit(next, items, None)
            yield item
