"""Real ``argosy server`` processes for tests, on PostgreSQL (``pg_fixture``) and S3 (moto,
``s3_fixture``), configured only through ``ARGOSY_*`` environment variables.

A :class:`ServerEnv` is one metadata database and one bucket; any number of server
instances can be started on it (each with its own state folder, as on separate hosts)::

    def test_two_instances(server_env: ServerEnv) -> None:
        a = server_env.start()
        b = server_env.start(ARGOSY_LEASE_SECONDS="3")
        httpx.get(a.url + "/readyz")
        b.kill()

Each process is ``python -m argosy.server.serve --port 0`` (a free port); its stderr goes to
a file (``ServerProcess.stderr_path``, ``.log()``) and its URL is read from the line the
server prints once it accepts connections. Servers still running at the end of the test
are stopped (SIGTERM, then SIGKILL).

For a module- or session-scoped environment use :func:`open_server_env` directly; to start
one process with an environment of your own, :func:`start_server`.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.pg_fixture import PostgresCluster
from tests.s3_fixture import TEST_REGION, S3Endpoint


def new_kek() -> str:
    """A key-encryption key (base64 of 32 random bytes) for ``ARGOSY_KEK``."""
    return base64.b64encode(os.urandom(32)).decode()


LISTENING = re.compile(r"argosy server listening on (http://\S+) \(instance (\w+)\)")
_counter = itertools.count(1)


@dataclass
class ServerProcess:
    """One running server: its ``url``, ``process``, ``env`` and stderr log."""

    url: str
    instance: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    home: Path
    stderr_path: Path

    @property
    def api(self) -> str:
        """The tenant-scoped API root of the ``default`` tenant."""
        return f"{self.url}/api/v1/tenants/default"

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 now."""
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (graceful: drain, hand runs over) and wait; SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL: a crash (no drain, no lease release)."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()


def start_server(
    home: Path,
    env: Mapping[str, str] | None = None,
    *args: str,
    timeout: float = 60,
    stderr_path: Path | None = None,
    python: str | None = None,
) -> ServerProcess:
    """Start ``python -m argosy.server.serve --port 0 ARGS`` with state folder ``home`` and
    ``env`` over this process's environment (its ``ARGOSY_*`` variables removed, and its
    ``AWS_*`` ones too when ``env`` brings AWS credentials), and wait
    until it accepts connections. Without ``ARGOSY_OIDC_ISSUER`` in ``env`` the server is
    started with ``ARGOSY_INSECURE_DEV=true`` (no authentication); :func:`oidc_env` gives the
    settings of a server that authenticates with a test issuer (``tests.oidc_issuer``). Without database or store settings in ``env`` it uses
    SQLite and a folder in ``home``. Its stderr goes to ``stderr_path`` (default:
    ``home/server.log``). The caller stops it (``stop()``/``kill()``)."""
    home.mkdir(parents=True, exist_ok=True)
    given = dict(env or {})
    drop = ("ARGOSY_", "AWS_") if "AWS_ACCESS_KEY_ID" in given else ("ARGOSY_",)
    full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full.update(ARGOSY_HOME=str(home), PYTHONUNBUFFERED="1")
    if "ARGOSY_OIDC_ISSUER" not in given:
        full["ARGOSY_INSECURE_DEV"] = "true"  # no identity provider: a development server
    full.update(given)
    stderr_path = stderr_path or home / "server.log"
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [python or sys.executable, "-m", "argosy.server.serve", "--port", "0", *args],
            env=full,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    deadline = time.monotonic() + timeout
    while True:
        text = stderr_path.read_text(errors="replace")
        found = LISTENING.search(text)
        if found:
            return ServerProcess(found.group(1), found.group(2), process, full, home, stderr_path)
        if process.poll() is not None:
            raise RuntimeError(f"argosy server exited ({process.returncode}):\n{text[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"argosy server did not start in {timeout} s:\n{text[-4000:]}")
        time.sleep(0.05)


def oidc_env(
    issuer: str,
    audience: str = "argosy",
    *,
    admin_groups: tuple[str, ...] = ("platform-admins",),
    **extra: str,
) -> dict[str, str]:
    """The ``ARGOSY_*`` settings of a server that authenticates tokens of ``issuer``."""
    import json

    env = {
        "ARGOSY_OIDC_ISSUER": issuer,
        "ARGOSY_OIDC_AUDIENCE": audience,
        "ARGOSY_PLATFORM_ADMIN_GROUPS": json.dumps(list(admin_groups)),
        "ARGOSY_INSECURE_DEV": "false",
    }
    env.update(extra)
    return env


@dataclass
class ServerEnv:
    """One database and one bucket that server instances share."""

    root: Path
    database_url: str
    artifact_url: str
    s3: S3Endpoint
    servers: list[ServerProcess] = field(default_factory=list)
    kek: str = field(default_factory=new_kek)  # instances of one deployment share the KEK

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """The environment of a server process (ARGOSY_* settings, AWS test credentials)."""
        env = dict(self.s3.argosy_env(self.artifact_url))
        env.update(
            ARGOSY_KEK=self.kek,
            ARGOSY_HOME=str(home),
            ARGOSY_DATABASE_URL=self.database_url,
            ARGOSY_S3_REGION=TEST_REGION,
            ARGOSY_LEASE_SECONDS="5",
            ARGOSY_HEARTBEAT_SECONDS="1",
            ARGOSY_SHUTDOWN_GRACE_SECONDS="5",
        )
        env.update(extra)
        return env

    def start(
        self, *args: str, home: Path | None = None, timeout: float = 60, **extra_env: str
    ) -> ServerProcess:
        """Start an instance (extra ``args`` go to ``argosy.server.serve``, e.g.
        ``--no-coordinator``) and wait until it accepts connections."""
        n = next(_counter)
        home = home or self.root / f"instance-{n}"
        server = start_server(
            home, self.env(home, **extra_env), *args, timeout=timeout,
            stderr_path=self.root / f"server-{n}.log",
        )  # fmt: skip
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop(timeout=30)


@contextmanager
def open_server_env(
    cluster: PostgresCluster, template: str, s3: S3Endpoint, root: Path | None = None
) -> Iterator[ServerEnv]:
    """A fresh database (cloned from the migrated template) and bucket; removed afterwards,
    after every server started on them has been stopped."""
    database = cluster.clone(template)
    bucket = s3.create_bucket()
    with tempfile.TemporaryDirectory(prefix="argosy-server-") as tmp:
        folder = Path(root or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        env = ServerEnv(folder, cluster.url(database), f"s3://{bucket}/argosy", s3)
        try:
            yield env
        finally:
            env.stop_all()
            cluster.drop_database(database)
            s3.remove_bucket(bucket)


@pytest.fixture
def server_env(
    pg_cluster: PostgresCluster, pg_template: str, s3_endpoint: S3Endpoint, tmp_path: Path
) -> Iterator[ServerEnv]:
    """A database and a bucket for this test's server instances (start them with ``.start()``)."""
    with open_server_env(pg_cluster, pg_template, s3_endpoint, tmp_path / "servers") as env:
        yield env
