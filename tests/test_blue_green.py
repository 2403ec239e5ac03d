"""The blue/green drill (issue 15, "How we will know"), as docs/deploy-kubernetes.md runs it.

Blue is Argosy built as a wheel, in this test, from commit ``OLD_COMMIT`` and installed in a
throw-away virtualenv that sees this project's dependencies (as the server's task
environments do: ``environments.see_server_packages``); green is HEAD.

Why ``bececa3``: a server opens a database that a newer Argosy migrated since ``cf81f20``
(``stores/metadata/db.py``: a revision newer than its own is logged and left alone, never
downgraded; docs/operations.md, "The expand/contract rule"), and no migration since is a
contraction, so schema-wise every server back to the first one (``e14a569``) qualifies. But
blue runs on this project's dependencies, and commits before ``bececa3`` call SQLAlchemy's
``Result.tuples()``, which fails on SQLAlchemy 2.1 (tried: ``e14a569`` answers 500 to its first
run creation); ``bececa3`` is the first commit without it. It is at schema 0008, so green's
0009 (and later) migrations are a real expand under it.

The drill, on one PostgreSQL database and one artifact store:

1. blue serves alone (its own migrations), a pipeline is pushed with blue's CLI and a run
   finishes on blue;
2. expand: green's ``argosy db upgrade`` migrates the database while blue serves;
3. green starts beside blue; both serve the API and both finish runs — a run created through
   each, the version blue pushed run by both engines;
4. a client sends requests without pause (reads, and run creations) and switches its URL from
   blue to green mid-stream; blue is then drained (SIGTERM): no request fails;
5. rollback stays possible: blue, started again on the expanded database, serves.

Green runs with encryption at rest off: blue (this old) cannot read encrypted artifacts, so
a deployment turns on what the old version cannot read only after blue is retired.

Marked ``slow`` (building the wheel needs pip's isolated build, i.e. setuptools from the
package index or pip's cache; about a minute in all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from argosy.server.environments import see_server_packages
from tests.pg_fixture import PostgresCluster
from tests.server_fixture import ServerProcess, start_server

pytestmark = pytest.mark.slow

OLD_COMMIT = "bececa3"  # the oldest this drill can run: see the module docstring
ROOT = Path(__file__).resolve().parents[1]
TENANT_API = "/api/v1/tenants/default"

PIPELINE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def double(x: int) -> int:
        return 2 * x

    @step
    def add(a: int, b: int) -> int:
        return a + b

    @pipeline
    def drill(x: int = 3) -> int:
        return add(double(x), x)
    """
)


def build_old_argosy(target: Path) -> Path:
    """A virtualenv with Argosy from ``OLD_COMMIT`` (a wheel built here) that sees this
    project's site-packages after its own; returns its python."""
    source, wheels = target / "source", target / "wheels"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT],
                             capture_output=True, check=False)  # fmt: skip
    assert archive.returncode == 0, (
        f"commit {OLD_COMMIT} is not in this checkout (a shallow clone? fetch the history): "
        + archive.stderr.decode()
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("argosy-*.whl")
    venv = target / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    see_server_packages(python)
    where = subprocess.run([str(python), "-c", "import argosy; print(argosy.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), f"blue imports {where}, not its own wheel"
    return python


def cli(python: Path | str, *args: str, server: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env.update(ARGOSY_HOME=str(cwd / ".argosy-cli"), ARGOSY_SERVER=server)
    return subprocess.run([str(python), "-m", "argosy.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def create_run(url: str, x: int) -> str:
    response = httpx.post(f"{url}{TENANT_API}/runs", timeout=30,
                          json={"pipeline": "drill", "parameters": {"x": x}})  # fmt: skip
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def wait_run(url: str, run_id: str, timeout: float = 120) -> dict[str, object]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        doc: dict[str, object] = httpx.get(f"{url}{TENANT_API}/runs/{run_id}", timeout=30).json()
        if doc["status"] in ("succeeded", "failed", "cancelled"):
            return doc
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def outputs(url: str, run_id: str) -> dict[str, object]:
    found = httpx.get(f"{url}{TENANT_API}/runs/{run_id}/artifacts", timeout=30).json()
    items = found["items"] if isinstance(found, dict) else found
    return {a["node_path"]: a.get("value") for a in items if a["node_path"] == "add"}


class Traffic:
    """A client that sends requests back to back to ``url`` — which may be changed at any
    moment, as a load balancer's backend is switched — and records every failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: dict[str, int] = {}
        self.failures: list[str] = []
        self.created: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                url, n = self.url, n + 1
                try:
                    if n % 10 == 0:  # a write now and then: a run, created through this URL
                        r = http.post(f"{url}{TENANT_API}/runs", headers={
                            "Idempotency-Key": str(uuid.uuid4())},
                            json={"pipeline": "drill", "parameters": {"x": n}})  # fmt: skip
                        ok = r.status_code == 201
                        if ok:
                            self.created.append(r.json()["id"])
                    elif n % 3 == 0:
                        r = http.get(f"{url}/readyz")
                        ok = r.status_code == 200
                    else:
                        r = http.get(f"{url}{TENANT_API}/runs", params={"limit": 5})
                        ok = r.status_code == 200
                    if not ok:
                        self.failures.append(f"{r.request.method} {r.request.url}: "
                                             f"{r.status_code} {r.text[:200]}")  # fmt: skip
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                self.sent[url] = self.sent.get(url, 0) + 1


@pytest.fixture
def database(pg_cluster: PostgresCluster) -> Iterator[str]:
    """An empty database: blue migrates it to its own revision first."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


def test_blue_green_switch_on_one_database(database: str, tmp_path: Path) -> None:
    old_python = build_old_argosy(tmp_path / "blue-build")
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").write_text("[project]\nname = 'drill'\n")
    (work / "drill_pipeline.py").write_text(PIPELINE)
    shared = {
        "ARGOSY_DATABASE_URL": database,
        "ARGOSY_ARTIFACT_URL": str(tmp_path / "artifacts"),  # one store (a bucket in production)
        "ARGOSY_ENCRYPTION": "false",  # blue cannot read what it does not know: see the docstring
        "ARGOSY_LEASE_SECONDS": "3",
        "ARGOSY_HEARTBEAT_SECONDS": "0.5",
        "ARGOSY_SHUTDOWN_GRACE_SECONDS": "5",
    }
    servers: list[ServerProcess] = []
    try:
        # 1. blue alone, at its own schema revision
        blue = start_server(tmp_path / "blue", shared, python=str(old_python))
        servers.append(blue)
        pushed = cli(old_python, "pipelines", "push", "drill_pipeline.py:drill",
                     server=blue.url, cwd=work)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        first = create_run(blue.url, 3)
        assert wait_run(blue.url, first)["status"] == "succeeded"
        assert outputs(blue.url, first) == {"add": 9}

        # 2. expand: green's migrations, while blue serves
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
        upgraded = subprocess.run(
            [sys.executable, "-m", "argosy.cli.main", "db", "upgrade"],
            env={**env, **shared, "ARGOSY_HOME": str(tmp_path / "green-cli")},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stderr
        assert httpx.get(f"{blue.url}/readyz", timeout=10).status_code == 200
        assert httpx.get(f"{blue.url}{TENANT_API}/runs", timeout=10).status_code == 200

        # 3. green beside blue: both serve, both finish runs
        green = start_server(tmp_path / "green", shared)
        servers.append(green)
        on_blue, on_green = create_run(blue.url, 10), create_run(green.url, 20)
        for url in (blue.url, green.url):  # each serves both runs
            assert wait_run(url, on_blue)["status"] == "succeeded"
            assert wait_run(url, on_green)["status"] == "succeeded"
        assert outputs(green.url, on_blue) == {"add": 30}
        assert outputs(blue.url, on_green) == {"add": 60}
        executed = {run: httpx.get(f"{green.url}{TENANT_API}/runs/{run}/tasks", timeout=30)
                    for run in (first, on_blue, on_green)}  # fmt: skip
        assert all(r.status_code == 200 for r in executed.values())

        # 4. traffic moves from blue to green mid-stream; then blue drains
        with Traffic(blue.url) as traffic:
            time.sleep(3)
            traffic.url = green.url  # the switch (the Service's selector, the DNS record)
            time.sleep(1)
            assert blue.stop(timeout=60) == 0  # drained: its runs are handed over
            time.sleep(3)
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.sent.get(blue.url, 0) > 5 and traffic.sent.get(green.url, 0) > 5
        assert traffic.created  # runs were created through both during the switch
        for run in traffic.created:  # green finishes every one, those blue queued included
            assert wait_run(green.url, run, timeout=180)["status"] == "succeeded", run

        # 5. rollback stays possible: blue again, on the expanded database
        again = start_server(tmp_path / "blue-again", shared, python=str(old_python))
        servers.append(again)
        assert "newer than this Argosy" in again.log()
        assert httpx.get(f"{again.url}{TENANT_API}/runs/{on_green}", timeout=30).status_code == 200
        print(json.dumps({"old_commit": OLD_COMMIT, "requests": traffic.sent,
                          "runs_created_during_switch": len(traffic.created)}))  # fmt: skip
    finally:
        for server in servers:
            server.stop(timeout=30)


if __name__ == "__main__":  # build blue by hand: python -m tests.test_blue_green DIR
    print(build_old_argosy(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())))
