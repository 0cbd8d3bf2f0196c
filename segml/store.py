"""The embedded MLflow store (SQLite): created whole or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

BUILDING = ".building"
"""The suffix of an embedded store being built beside its final name."""


def ensure_store(database: Path, artifacts: str | None) -> None:
    """Create the embedded store ``database`` whole if it is missing, first removing what
    killed processes left while building one."""
    _remove_abandoned(database)
    if not database.exists():
        create_store(database, artifacts)


def create_store(database: Path, artifacts: str | None) -> None:
    """Build a new embedded store in a temporary file beside ``database``, then link it in.

    MLflow creates its tables by schema migrations that SQLite does not run in one
    transaction, so a process killed among them would leave a store that every later command
    fails on (``table ... already exists``). Built aside, the store appears whole or not at
    all; of two processes creating it at once, the second keeps the first one's store
    (``os.link`` never replaces a file).
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with tempfile.NamedTemporaryFile(
        dir=database.parent, prefix=f".{database.name}.", suffix=BUILDING
    ) as building:
        fcntl.flock(building, fcntl.LOCK_EX)  # held while alive: see _remove_abandoned
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(building.fileno(), 0o666 & ~umask)  # as if SQLite had created it
        SqlAlchemyStore(f"sqlite:///{building.name}", artifacts).engine.dispose()
        with contextlib.suppress(FileExistsError):
            os.link(building.name, database)


def _remove_abandoned(database: Path) -> None:
    """Delete the stores that killed processes were building beside ``database`` (their
    ``flock`` died with them; a live builder's does not let go)."""
    for stale in database.parent.glob(f".{database.name}.*{BUILDING}"):
        with contextlib.suppress(OSError), stale.open("rb") as probe:
            if not os.fstat(probe.fileno()).st_size:
                continue  # a builder locks its file before it writes to it: this one may be new
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stale.unlink()
            Path(f"{stale}-journal").unlink(missing_ok=True)
