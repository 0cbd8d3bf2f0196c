"""Locks that die with their holder: ``flock`` on files, PostgreSQL advisory locks, and the
per-model lock every registry action runs under.

A killed process cannot leave one of these held: the kernel drops its ``flock`` locks and the
database server its session's advisory locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

SQLITE_PREFIX = "sqlite:///"


def digest(text: str) -> str:
    """A short stable digest of ``text`` for lock file names."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def advisory_key(text: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for ``text``."""
    return int.from_bytes(bytes.fromhex(digest(text)), "big", signed=True)


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for any other URL)."""
    if not url.startswith(SQLITE_PREFIX) or len(url) == len(SQLITE_PREFIX):
        return None
    return Path(url.removeprefix(SQLITE_PREFIX).partition("?")[0])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, folders too, if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextlib.contextmanager
def advisory_lock(url: str | sa.URL, key: int) -> Iterator[None]:
    """Hold PostgreSQL's session-level advisory lock ``key`` on the database at ``url``."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            yield  # closing the session releases the lock
    finally:
        engine.dispose()


def model_lock(tracking_uri: str, name: str) -> contextlib.AbstractContextManager[None]:
    """The lock that serialises registry actions (register, promote, rollback) on model
    ``name``, so that two of them at once cannot both read the same champion and lose an
    update.

    A lock, not compare-and-set: MLflow's registry has no conditional write (setting an
    alias always overwrites it), so a check before a write can always be overtaken. Beside
    an embedded store the lock is a file next to the database (``mlflow.db.locks/``); on a
    PostgreSQL store, an advisory lock in that database. A tracking server (``http://``)
    exposes neither its database nor a lock, so there registry actions are not serialised.
    """
    database = sqlite_file(tracking_uri)
    if database is not None:
        return file_lock(Path(f"{database}.locks") / f"model-{digest(name)}.lock")
    if tracking_uri.startswith(("postgresql:", "postgresql+")):
        return advisory_lock(tracking_uri, advisory_key(f"segml.model:{name}"))
    return contextlib.nullcontext()
