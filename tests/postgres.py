"""A throwaway PostgreSQL server on loopback for tests (Debian's postgresql package).

The server runs from a fresh data directory with trust authentication on 127.0.0.1 and is
removed afterwards. PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
system user. Tests are skipped, with the reason, when it cannot start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from docs.screenshots import free_port

SERVER_USER = "postgres"
"""The system user that runs the server when the tests run as root."""
DB_USER = "segml"


@dataclass(frozen=True, slots=True)
class Postgres:
    """A running server: its binaries, folder and port, and how to reach its databases."""

    bin_dir: Path
    folder: Path
    port: int
    as_user: tuple[str, ...]

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for ``database`` (psycopg 3, SQLAlchemy 2.1's default driver)."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        self.run("createdb", f"-h 127.0.0.1 -p {self.port} -U {DB_USER} {name}")
        return self.url(name)

    def run(self, program: str, arguments: str) -> None:
        """Run one of the server's programs (as the server's user) with space-free arguments."""
        command = [*self.as_user, str(self.bin_dir / program), *arguments.split()]
        subprocess.run(command, capture_output=True, text=True, check=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a server in a temporary directory, yield it, then stop it and remove the directory."""
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'segml[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="segml-pg-"))
    try:
        server = _start(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        server.run("pg_ctl", f"-D {folder / 'data'} -m immediate stop")
        shutil.rmtree(folder, ignore_errors=True)


def _start(folder: Path) -> Postgres:
    """initdb and start a server in ``folder``; skip the tests if either fails."""
    server = Postgres(_bin_dir(), folder, free_port(), _as_server_user(folder))
    data, log = folder / "data", folder / "server.log"
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} "
        f"-c unix_socket_directories={folder} -c fsync=off"
    )
    pg_ctl = [*server.as_user, str(server.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log)]
    try:
        server.run("initdb", f"-D {data} -U {DB_USER} --auth=trust -E UTF8 --no-locale --no-sync")
        start = [*pg_ctl, "-w", "-t", "60", "-o", options, "start"]
        subprocess.run(start, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as exc:
        detail = log.read_text() if log.exists() else exc.stderr
        pytest.skip(f"PostgreSQL could not start: {detail.strip()[-500:]}")
    return server


def _bin_dir() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/VERSION/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    pg_ctl = str(found[-1]) if found else shutil.which("pg_ctl")
    if pg_ctl is None:
        pytest.skip("PostgreSQL is not installed: apt-get install -y postgresql (see .ci/run)")
    return Path(pg_ctl).parent


def _as_server_user(folder: Path) -> tuple[str, ...]:
    """The prefix that runs the server's programs: as root, ``runuser -u postgres --``."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    try:
        shutil.chown(folder, user=SERVER_USER)
    except LookupError:
        pytest.skip(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL")
    return ("runuser", "-u", SERVER_USER, "--")
