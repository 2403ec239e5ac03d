"""A throw-away PostgreSQL server for the test session, and fresh databases on it.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root the cluster lives in a temporary
folder owned by the ``postgres`` user and every server command runs through ``runuser``.
The server listens on 127.0.0.1 on a free port, with its socket in that folder (never in
``/var/run/postgresql``), and authenticates everyone (``trust``): it is reachable from
loopback only and removed at the end of the session.

Fixtures (``pytest_plugins = ["tests.pg_fixture"]`` in ``conftest.py`` or a test module):

- ``pg_cluster``: the session's :class:`PostgresCluster` (started once, removed at the end;
  ``stop()``/``start()``/``outage(seconds)`` for outage tests);
- ``pg_url``: a new, empty database on it per test (SQLAlchemy URL, psycopg 3);
- ``pg_template``: the name of a database migrated to head once per session;
- ``pg_migrated_url``: a per-test copy of it (``CREATE DATABASE ... TEMPLATE``, ~30 ms).

The server binaries come from Debian's ``postgresql`` package (``scripts/install-test-deps.sh``);
without them the fixtures fail, naming the package.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_USER = "postgres"  # the OS user that owns the cluster when the tests run as root
DB_USER = "argosy"  # the database superuser initdb creates (-U)


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl`` (Debian puts them outside PATH), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One PostgreSQL server in a temporary folder: start, stop (for outage tests), databases."""

    def __init__(self, bin_dir: Path, *, port: int | None = None) -> None:
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="argosy-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.as_root:
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o755)  # the tests (root) read the log; the socket is in this folder

    # -- server commands -----------------------------------------------------------------------
    def _cmd(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, cwd=self.root
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n"
                f"{self.log.read_text() if self.log.exists() else ''}"
            )
        return proc

    def init(self) -> None:
        self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", DB_USER, "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-instructions")  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# argosy tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
                "shared_buffers = 32MB\n"
                "log_min_messages = warning\n"
            )

    def start(self) -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` aborts open transactions and closes every connection."""
        self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self._cmd("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with autocommit (CREATE/DROP DATABASE, ALTER SYSTEM); its output."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=DB_USER, dbname=database, autocommit=True,
            connect_timeout=10,
        ) as conn:  # fmt: skip
            cur = conn.execute(statement)
            if cur.description is None:
                return ""
            return "\n".join("|".join(str(v) for v in row) for row in cur.fetchall())

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database (copied from ``template`` if given); returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        self.sql(f'CREATE DATABASE "{name}"{clause}')
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def clone(self, template: str) -> str:
        """A new database copied from ``template`` (which must have no open connections)."""
        return self.create_database(template=template)

    def outage(self, seconds: float) -> None:
        """Stop the server for ``seconds`` (fast: connections are cut), then start it again."""
        self.stop("fast")
        time.sleep(seconds)
        self.start()


def start_cluster() -> PostgresCluster:
    """A started cluster, or a failed test naming what to install."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL server binaries not found (initdb, pg_ctl); run "
            "scripts/install-test-deps.sh (Debian package 'postgresql')",
            pytrace=False,
        )
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """An empty database of its own for one test."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PostgresCluster) -> str:
    """The name of a database at the newest schema revision, to clone per test."""
    from argosy.stores.metadata.db import open_engine

    name = pg_cluster.create_database("argosy_template")
    engine = open_engine(pg_cluster.url(name))
    engine.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections
    return name


@pytest.fixture
def pg_migrated_url(pg_cluster: PostgresCluster, pg_template: str) -> Iterator[str]:
    """A database of its own for one test, already at head (a copy of the template)."""
    name = pg_cluster.clone(pg_template)
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)
