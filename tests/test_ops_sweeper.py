"""Guaranteed clean-up: the one periodic sweeper removes what attempts that are not live left
behind (processes, attempt folders with their scratch and temp files) through each executor's
``sweep`` hook and counts it in ``argosy_orphans_removed_total{kind}``; after a cancelled run,
and after a SIGKILL of a server with tasks running, nothing of the run remains once a server
has recovered it."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from argosy.client.client import Client
from argosy.executors.base import Capacity, Executor
from argosy.executors.local.executor import LocalExecutor
from argosy.ops import counters, sweeper
from argosy.runtime.processes import ATTEMPT_ENV
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.metadata.db import MetadataStore
from tests.conftest import alive
from tests.server_fixture import start_server

ORPHAN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
LIVE = "01BX5ZZKBKACTAV9WEVGEMMVRZ"


def _marked_sleeper(attempt_id: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{ATTEMPT_ENV: attempt_id})
    return subprocess.Popen(["sleep", "300"], env=env, cwd=cwd, start_new_session=True)


def _marked(attempt_id: str) -> list[int]:
    needle = f"{ATTEMPT_ENV}={attempt_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0") and alive(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_the_local_sweep_removes_orphans_and_spares_live_attempts(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    for attempt_id in (ORPHAN, LIVE):
        scratch = attempts / attempt_id / "scratch" / "tmp"
        scratch.mkdir(parents=True)
        (scratch / "big.tmp").write_bytes(b"t" * 1000)
    orphan = _marked_sleeper(ORPHAN, attempts / ORPHAN / "scratch")
    live = _marked_sleeper(LIVE, attempts / LIVE / "scratch")
    elsewhere = _marked_sleeper(ORPHAN, tmp_path)  # another home's task: never touched
    store = open_artifact_store(str(tmp_path / "blobs"), "default")
    stale = tmp_path / "blobs" / ".tmp" / "partial-upload"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    executor = LocalExecutor(store, attempts, Capacity(cpu=1, memory=2**30, gpu=0))
    try:
        time.sleep(0.05)
        # young processes and folders are left alone (an attempt being started now); the
        # hour-old temp file of the store is not
        assert executor.sweep(lambda attempt_id: False) == ["temp_file:partial-upload"]
        removed = executor.sweep(lambda attempt_id: attempt_id == LIVE, grace=0)
        assert f"process:{orphan.pid}" in removed
        assert f"scratch_folder:{ORPHAN}" in removed
        orphan.wait(timeout=10)
        assert not (attempts / ORPHAN).exists() and not stale.exists()
        assert live.poll() is None and (attempts / LIVE).exists()  # live: untouched
        assert _marked(LIVE) == [live.pid] and elsewhere.poll() is None
    finally:
        for p in (orphan, live, elsewhere):
            p.kill()
            p.wait()


class _Pods(Executor):
    """An executor whose sweep removed two Jobs (the Kubernetes executor's answer)."""

    capacity = Capacity(cpu=1, memory=1, gpu=0)  # type: ignore[assignment]

    def has_room(self, *a: Any) -> bool: ...  # type: ignore[empty-body]
    def start(self, *a: Any) -> Any: ...
    def poll(self, *a: Any) -> Any: ...
    def stop(self, *a: Any) -> None: ...
    def end_orphan(self, *a: Any) -> bool: ...  # type: ignore[empty-body]
    def adopt_log(self, *a: Any) -> Any: ...

    def sweep(self, is_live: Any) -> list[str]:
        assert is_live("01ARZ3NDEKTSV4RRFFQ69G5FAX") is False  # no such attempt: not live
        return ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAW"]


def test_the_sweeper_counts_what_each_executor_removed(tmp_path: Path) -> None:
    metadata = MetadataStore.open(f"sqlite:///{tmp_path / 'argosy.db'}")
    before = counters.snapshot("orphans_removed").get("job", 0)
    assert sweeper.sweep(metadata, [_Pods()]) == {"job": 2}
    assert counters.snapshot("orphans_removed")["job"] == before + 2
    metadata.close()


STUCK = """
import os, subprocess, tempfile, time
from pathlib import Path
from argosy import pipeline, step

@step
def stuck(gate: str) -> int:
    if gate == "quick":
        return 7
    subprocess.Popen(["sleep", "300"])  # a child of the task: must die with it
    fd, name = tempfile.mkstemp(prefix="argosy-sweep-")  # in the task's TMPDIR
    os.write(fd, b"scratch data")
    Path(gate).write_text(name)
    time.sleep(300)
    return 1

@pipeline
def hangs(gate: str) -> int:
    return stuck(gate)
"""


def test_nothing_of_a_run_remains_after_a_cancel_or_a_server_sigkill(
    tmp_path: Path, pg_migrated_url: str
) -> None:
    # PostgreSQL: on SQLite a server's recovery of a dead instance's run waits on its own
    # write lock (Engine._claim asks owner_alive in a second session) and fails after 30 s
    home = tmp_path / "server"
    clock = tmp_path / "clock"
    clock.write_text(datetime.now(UTC).isoformat())
    env = {"ARGOSY_DATABASE_URL": pg_migrated_url, "ARGOSY_LIFECYCLE_INTERVAL": "1",
           "ARGOSY_CLOCK_FILE": str(clock), "ARGOSY_LEASE_SECONDS": "3",
           "ARGOSY_HEARTBEAT_SECONDS": "1", "ARGOSY_POLL_INTERVAL": "0.2",
           "ARGOSY_SCHEDULER_INTERVAL": "0.2"}  # fmt: skip
    (tmp_path / "stuck_pipe.py").write_text(STUCK)
    compiled = compile_pipeline(load_pipeline(f"{tmp_path / 'stuck_pipe.py'}:hangs"))
    server = start_server(home, env)
    try:
        client = Client(server.url, tenant="default")
        client.push_pipeline(compiled)

        def tick() -> None:
            clock.write_text(datetime.now(UTC).isoformat())

        def started(gate: Path) -> tuple[str, str]:
            run = client.create_run("hangs", parameters={"gate": str(gate)})
            deadline = time.monotonic() + 90
            while not gate.exists():
                tick()
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            attempt = client.run_detail(run.id).tasks[0].attempts[-1].id  # type: ignore[attr-defined]
            return run.id, str(attempt)

        # a cancelled run: its processes, folder and temp file are gone when it has ended
        gate = tmp_path / "gate-1"
        run_id, attempt = started(gate)
        temp = Path(gate.read_text())
        assert _marked(attempt) and temp.exists()
        client.cancel_run(run_id)
        assert client.wait(run_id, poll=0.2, timeout=60).status == "cancelled"
        assert not _marked(attempt) and not temp.exists()
        assert not (home / "attempts" / attempt).exists()

        # a server killed with a task running: its processes outlive it ...
        gate = tmp_path / "gate-2"
        run_id, attempt = started(gate)
        temp = Path(gate.read_text())
        server.kill()
        assert _marked(attempt) and temp.exists()
        # ... until a server recovers the run (and the sweeper checks the rest)
        server = start_server(home, env)
        client = Client(server.url, tenant="default")
        deadline = time.monotonic() + 90
        while _marked(attempt) or temp.exists() or (home / "attempts" / attempt).exists():
            tick()  # simulated time goes on
            left = (_marked(attempt), temp.exists(), (home / "attempts" / attempt).exists())
            assert time.monotonic() < deadline, (left, server.log()[-3000:])
            time.sleep(0.2)
        client.cancel_run(run_id)
        client.wait(run_id, poll=0.2, timeout=60)
        text = httpx.get(f"{server.url}/metrics").text
        assert "argosy_orphans_removed_total" in text

        # the leader's lifecycle loop runs retention on the server's clock: 31 days on, a
        # quick run's output is archived
        quick = client.create_run("hangs", parameters={"gate": "quick"})
        assert client.wait(quick.id, poll=0.2, timeout=60).status == "succeeded"
        art = client.artifacts(quick.id)[0]
        content = f"{server.url}/api/v1/tenants/default/artifacts/{art.id}/content"
        assert httpx.get(content).status_code == 200
        deadline = time.monotonic() + 120
        while True:
            clock.write_text((datetime.now(UTC) + timedelta(days=31)).isoformat())
            read = httpx.get(content)
            if read.status_code != 200:
                break
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.5)
        assert read.status_code == 409 and read.json()["code"] == "archived", read.text
        report = httpx.get(f"{server.url}/metrics").text
        assert 'argosy_lifecycle_items_total{what="archived"}' in report
        assert "argosy retrievals request" in read.json()["detail"]
    finally:
        server.kill()
