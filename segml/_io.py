"""File plumbing shared by every stage: reading tables and writing outputs atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from segml.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")

_flush = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def is_parquet(path: Path) -> bool:
    """True for a Parquet file or a folder of Parquet files."""
    return path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES


def open_parquet(path: Path, **options: Any) -> pq.ParquetFile:
    """A Parquet file for reading batch by batch, without pyarrow's pre-buffering (which holds
    every row group's columns until the file is closed: memory that grows with the file).

    Each column is read through a buffer of ``READ_BUFFER_BYTES``: unbuffered, pyarrow reads a
    row group's whole column before its first batch, which delays the first scores.
    """
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES, **options)


READ_BUFFER_BYTES = 1 << 20


def read_table(path: Path, delimiter: str = ",") -> pd.DataFrame:
    """Read a CSV file, a Parquet file or a folder of Parquet files.

    CSV cells are read as strings (``delimiter="whitespace"`` splits on runs of blanks) so that
    validation, not the reader, decides what a bad value is.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if is_parquet(path):
        return _read_parquet(path)
    sep = r"\s+" if delimiter == "whitespace" else delimiter
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header and no rows)") from None
    except ValueError as exc:  # a parser error, bad UTF-8, a delimiter pandas refuses
        reason = str(exc).strip().splitlines()[-1]
        raise DataError(f"{path}: not a readable CSV file ({reason})") from None
    check_columns(path, pa.schema([(name, pa.string()) for name in csv_header(path, sep)]))
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def csv_header(path: Path, sep: str) -> list[str]:
    """A CSV file's column names as written (pandas renames a repeated one ``name.1``)."""
    first = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, encoding="utf-8-sig")
    return [str(c).strip() for c in first.iloc[0].fillna("")] if len(first) else []


def check_columns(path: Path, schema: pa.Schema) -> None:
    """Refuse columns segml would misread: a name given twice (one would be renamed or
    shadowed), or a nested Parquet column (lists, structs, maps would be taken as text)."""
    names = pd.Series(schema.names, dtype=object)
    twice = names[names.duplicated()]
    if len(twice):
        name = twice.iloc[0]
        raise DataError(
            f"{path}: column {name!r} appears {int((names == name).sum())} times; "
            "rename or drop the copies"
        )
    for column in schema:
        if pa.types.is_nested(column.type):
            kind = "lists" if pa.types.is_list(column.type) else "nested values"
            raise DataError(
                f"{path}: column {column.name!r} holds {kind} ({column.type}); segml reads "
                "flat columns: flatten or drop it"
            )


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        check_columns(path, pq.ParquetDataset(path).schema)
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise DataError(f"{path}: not a readable Parquet file or folder ({reason})") from None


TABLE_SUFFIXES = (*PARQUET_SUFFIXES, ".csv")


def check_output(path: Path, kind: Literal["file", "folder"]) -> None:
    """Refuse, before a command does any work, an output it could not write: a folder where
    a file is wanted (or the reverse), a table of an unknown kind, a file where a folder
    must be, or a folder nobody may write in. Nothing is created: missing parent folders are
    made when the output is written (see :func:`created_parents`).
    """
    if kind == "file" and path.is_dir():
        raise DataError(f"{path}: is a folder; name a file")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file; name a folder")
    if kind == "file" and path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"{path}: the output must end in .parquet or .csv")
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise DataError(f"{existing}: is a file, not a folder")
    try:  # the only sure test (permissions, read-only mounts, /proc): write a file there
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise DataError(f"{existing}: cannot write here ({exc.strerror})") from None


@contextlib.contextmanager
def created_parents(path: Path) -> Iterator[None]:
    """Create ``path``'s missing parent folders for the block; remove them again if it fails,
    so that a refused command leaves no empty folders behind."""
    missing = [p for p in path.absolute().parents if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in missing:
            with contextlib.suppress(OSError):  # not empty: something else wrote there
                folder.rmdir()
        raise


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; only on success, flush it to disk, rename it
    onto ``target`` and flush ``target``'s parent, so that the rename survives a crash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        flush_to_disk(tmp_path)
        os.replace(tmp_path, target)
        flush_to_disk(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, target: Path) -> Path:
    """Write ``frame`` to CSV or Parquet (by suffix) atomically; return the target."""
    with atomic_path(target) as tmp:
        if is_parquet(target):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return target


def flush_to_disk(path: Path) -> None:
    """Flush ``path`` to disk: a file's data before it is renamed into place, or a folder's
    entries after (so that the rename survives a crash)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        _flush(descriptor)
    finally:
        os.close(descriptor)


def flush_tree(folder: Path) -> None:
    """Flush every file under ``folder``, then each folder, deepest first, to disk."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            flush_to_disk(Path(root, name))
        flush_to_disk(Path(root))


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a path (not yet created) beside ``target`` for a folder; on success it is flushed
    to disk and replaces ``target`` (a previous folder or file is moved aside first, then
    deleted), and ``target``'s parent is flushed, so that the rename survives a crash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield staging / "new"
        flush_tree(staging / "new")
        if target.exists():
            os.replace(target, staging / "old")
        os.replace(staging / "new", target)
        flush_to_disk(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
