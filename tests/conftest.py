"""Shared fixtures: an isolated state folder per test, and the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from argosy.client.local import Local, open_local
from argosy.config import load_settings

pytest_plugins = ["tests.pg_fixture", "tests.s3_fixture"]

# The core suite runs on both metadata backends; ARGOSY_TEST_BACKENDS=sqlite skips PostgreSQL.
BACKENDS = os.environ.get("ARGOSY_TEST_BACKENDS", "sqlite,postgresql").split(",")
BOTH_BACKENDS = {"tests.test_engine", "tests.test_cli", "tests.test_cache",
                 "tests.test_control_flow", "tests.test_failures", "tests.test_validation"}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: runs with the metadata in PostgreSQL")
    # the CLI's tables fit COLUMNS: a test sets the width it checks (pytest-xdist's workers
    # inherit COLUMNS=80 and LINES=24 from execnet)
    for inherited in ("COLUMNS", "LINES"):
        os.environ.pop(inherited, None)
    # commands run cold: a resident warm command line shared by tests would couple them
    # (tests/test_warm_cli.py starts its own, each in a private runtime folder)
    os.environ["ARGOSY_WARM_CLI"] = "false"


# -- no silent skips in CI ----------------------------------------------------------------------
# 'make test' installs every prerequisite of its tests (scripts/install-test-deps.sh), so under
# CI=true a skipped test means a prerequisite is missing and a claim went unchecked: it fails.
# A test that needs a system no test can start (a live Kubernetes cluster) is marked
# ``external`` (a live cluster: ``live_k8s``) instead, and 'make test' deselects those: never a skip inside.
NO_SKIP_HINT = (
    "skipped under CI=true: 'make test' installs the tests' prerequisites "
    "(scripts/install-test-deps.sh); install what is missing, or mark a test that needs a "
    "system no test can start with @pytest.mark.external (or live_k8s)"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{NO_SKIP_HINT}\n{reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if _in_ci() and report.skipped:
        _fail_skip(report)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the core modules that use ``ws`` run once per metadata backend."""
    if "ws" in metafunc.fixturenames and metafunc.module.__name__ in BOTH_BACKENDS:
        metafunc.parametrize(
            "metadata_backend",
            [
                pytest.param(b, marks=[pytest.mark.postgresql] if b == "postgresql" else [])
                for b in BACKENDS
            ],
            indirect=True,
        )


@pytest.fixture
def metadata_backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the state folder) or a fresh PostgreSQL database cloned from the template."""
    if getattr(request, "param", "sqlite") != "postgresql":
        yield None
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.clone(request.getfixturevalue("pg_template"))
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)  # WITH (FORCE): also ends connections the test left open


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def outputs(doc: dict[str, Any]) -> dict[str, Any]:
    """A run document's pipeline outputs as values (small JSON inline; else the artifact's
    reference ``RUN/NODE/OUTPUT``)."""
    return {
        name: ref["value"] if ref.get("value") is not None else ref["ref"]
        for name, ref in doc["outputs"].items()
    }


def tasks_by_node(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run document's tasks by node path."""
    return {t["node_path"]: t for t in doc["tasks"]}


@dataclass
class Workspace:
    """A project folder with its own ARGOSY_HOME; runs the real ``argosy`` CLI in it."""

    root: Path
    home: Path
    database_url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["ARGOSY_HOME"] = str(self.home)
        if self.database_url:
            env["ARGOSY_DATABASE_URL"] = self.database_url
        env.update(extra)
        return env

    def write(self, source: str, name: str | None = None) -> Path:
        """Write a pipeline module (unique name unless given) and return its path."""
        path = self.root / f"{name or 'pipe_' + uuid.uuid4().hex[:8]}.py"
        path.write_text(textwrap.dedent(source))
        return path

    def argosy(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "argosy.cli.main", *args],
            cwd=self.root,
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "argosy.cli.main", *args],
            cwd=self.root,
            env=self.env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def local(self) -> Local:
        return open_local(load_settings(home=self.home, database_url=self.database_url))


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(path: Path, timeout: float = 60) -> None:
    """Wait until a file a step writes (a "gate") appears."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``warm``: Python steps are forked from a warm parent (which every task waits for);
    ``fresh``: each starts a new interpreter. Use with
    ``@pytest.mark.parametrize("workers", ["warm", "fresh"], indirect=True)``."""
    if request.param == "warm":
        monkeypatch.setenv("ARGOSY_WARM_WORKERS", "true")
        monkeypatch.setenv("ARGOSY_WARM_WORKERS_WAIT", "60")
    else:
        monkeypatch.setenv("ARGOSY_WARM_WORKERS", "false")
    return str(request.param)


@pytest.fixture
def ws(tmp_path: Path, metadata_backend: str | None) -> Iterator[Workspace]:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    yield Workspace(root, tmp_path / "state", metadata_backend)
