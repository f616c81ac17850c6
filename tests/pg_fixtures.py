"""A throw-away PostgreSQL cluster for the store tests: Debian's real server, never a mock.

Loaded by tests/conftest.py through ``pytest_plugins``. One cluster per test session (initdb takes about a
second), one fresh database per test. The server refuses to run as root, so the cluster belongs to the
``postgres`` system user the Debian package creates (else ``nobody``) and is started with ``runuser``. It
listens on a free loopback port and on a socket in its own folder, trusts local connections (nothing else can
reach it), and is stopped by its PID at the end. Skips on a developer machine without PostgreSQL; fails
under CI, where scripts/system-deps installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _owner() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (postgres, nobody) to own the test cluster")


@dataclass
class PgCluster:
    """A running cluster: ``url(db)`` names a database on it; ``restart()`` simulates a database restart."""

    bin: Path
    folder: Path
    port: int
    user: str
    settings: str = "-c fsync=off"  # a test cluster need not survive a power cut; bench_store.py sets its own

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def _as_owner(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if os.geteuid() == 0 else list(argv)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 {self.settings}"
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.folder / "log"), "-w"]
        subprocess.run(self._as_owner(*cmd, "start"), check=True, capture_output=True, timeout=60)

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT: roll back open transactions, close every connection)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_db(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def init_cluster(folder: Path, settings: str = "-c fsync=off") -> PgCluster:
    """initdb and start a cluster in ``folder`` (which its unprivileged owner is given)."""
    user = _owner()
    pw = pwd.getpwnam(user)
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(pg_bin(), folder, _free_port(), user, settings)
    initdb = [str(cluster.bin / "initdb"), "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    subprocess.run(cluster._as_owner(*initdb), check=True, capture_output=True, timeout=120)
    cluster.start()
    return cluster


@contextlib.contextmanager
def throwaway_cluster(settings: str = "-c fsync=off") -> Iterator[PgCluster]:
    """A cluster in a folder of its own under /tmp that its unprivileged owner can enter; stopped by PID and
    removed at the end (the test session's cluster, and the benches' and measurement scripts' own)."""
    folder = Path(tempfile.mkdtemp(prefix="farm-pg-"))
    try:
        cluster = init_cluster(folder, settings)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's cluster."""
    require_tool(pg_bin() / "initdb", "postgresql")
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A new empty database on the session's cluster, as a postgresql:// URL."""
    return pg_cluster.create_db()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store test keeps its store, once per backend: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "r.db")
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_db()
