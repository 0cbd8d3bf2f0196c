"""Coordination of tuning workers that share one Optuna study: a study lock and worker liveness.

PostgreSQL storages use session-level advisory locks; journal and SQLite files use ``flock`` on
files beside them; the in-memory storage has a single worker. Every lock dies with its process
(or its database session), so a killed worker neither blocks the others nor looks alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa

from segml.errors import SpecError
from segml.locks import advisory_key, digest
from segml.studies import journal_path


class Coordinator(Protocol):
    """What a tuning worker needs from its peers: mutual exclusion and who is still alive."""

    worker: str

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the study's lock (blocking) for the ``with`` block."""
        ...

    def alive(self, worker: str) -> bool:
        """True while ``worker`` (another worker's id) is running."""
        ...

    def close(self) -> None:
        """Release every lock this worker holds."""
        ...


def new_worker_id() -> str:
    """A worker id unique across hosts and time: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def coordinator(storage: str | None, study: str) -> Coordinator:
    """The coordinator that suits an Optuna storage URL (None: the in-memory storage)."""
    if storage is None:
        return SingleProcess()
    journal = journal_path(storage)
    if journal is not None:
        return FileLocks(Path(f"{journal}.locks"), study)
    try:
        url = sa.engine.make_url(storage)
    except sa.exc.ArgumentError as exc:
        raise SpecError(f"--storage {storage!r}: not a storage URL ({exc})") from exc
    if url.get_backend_name() == "postgresql":
        try:
            return PostgresLocks(url, study)
        except ModuleNotFoundError as exc:
            raise SpecError(
                f"--storage {url.render_as_string()!r}: {exc}; pip install 'segml[postgres]'"
            ) from exc
    if url.get_backend_name() == "sqlite" and url.database:
        return FileLocks(Path(f"{url.database}.locks"), study)
    raise SpecError(
        f"--storage {url.render_as_string()!r}: use postgresql://..., sqlite:///PATH or "
        "journal:PATH (the storages whose workers segml can coordinate)"
    )


class SingleProcess:
    """The in-memory storage: this process is the study's only worker."""

    def __init__(self) -> None:
        self.worker = new_worker_id()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def alive(self, worker: str) -> bool:
        return True

    def close(self) -> None:
        pass


class FileLocks:
    """``flock`` locks in a folder beside the storage file (local or a shared filesystem
    with POSIX locks, such as NFSv4): one file for the study, one held by each live worker."""

    def __init__(self, folder: Path, study: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.worker = new_worker_id()
        self._folder = folder
        self._study = (folder / f"study-{digest(study)}.lock").open("a")
        self._own = self._path(self.worker).open("a")
        fcntl.flock(self._own, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        fcntl.flock(self._study, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._study, fcntl.LOCK_UN)

    def alive(self, worker: str) -> bool:
        path = self._path(worker)
        try:
            probe: IO[str] = path.open("r")
        except FileNotFoundError:
            return False
        with probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            path.unlink(missing_ok=True)
            return False

    def close(self) -> None:
        self._path(self.worker).unlink(missing_ok=True)
        self._own.close()
        self._study.close()

    def _path(self, worker: str) -> Path:
        return self._folder / f"worker-{digest(worker)}.lock"


class PostgresLocks:
    """Session-level advisory locks on the PostgreSQL database that holds the study."""

    def __init__(self, url: sa.URL, study: str) -> None:
        self.worker = new_worker_id()
        self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._study_key = advisory_key(f"segml.study:{study}")
        self._select("pg_advisory_lock", _worker_key(self.worker))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self._select("pg_advisory_lock", self._study_key)
        try:
            yield
        finally:
            self._select("pg_advisory_unlock", self._study_key)

    def alive(self, worker: str) -> bool:
        key = _worker_key(worker)
        if not self._select("pg_try_advisory_lock", key):
            return True
        self._select("pg_advisory_unlock", key)
        return False

    def close(self) -> None:
        """Release this worker's locks, then disconnect: the server releases a closed
        connection's locks only once its backend has exited, so other workers could still
        find this one alive for a moment. A broken connection's locks go with it."""
        try:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._connection.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        finally:
            self._connection.close()
            self._engine.dispose()

    def _select(self, function: str, key: int) -> bool:
        query = sa.text(f"SELECT {function}(:key)")
        return bool(self._connection.execute(query, {"key": key}).scalar())


def _worker_key(worker: str) -> int:
    return advisory_key(f"segml.worker:{worker}")
