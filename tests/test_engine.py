"""The durable engine: capacity-aware parallelism, crash safety and resume, node identity."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Artifact, Attempt
from tests.conftest import Workspace, alive, outputs, wait_for

FAN_OUT = """
import time
from argosy import step, pipeline

@step(cpu=1)
def nap(i: int) -> int:
    time.sleep(1)
    return i

@pipeline
def fan_out() -> None:
    for i in range(16):
        nap(i=i)
"""


def _intervals(doc: dict[str, object]) -> list[tuple[float, float]]:
    spans = []
    for s in doc["tasks"]:  # type: ignore[attr-defined]
        for a in s["attempts"]:
            spans.append(
                (
                    datetime.fromisoformat(a["started_at"]).timestamp(),
                    datetime.fromisoformat(a["finished_at"]).timestamp(),
                )
            )
    return spans


def _concurrency(spans: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """(duration, number running) for each slice between consecutive start/end events."""
    events = sorted({t for span in spans for t in span})
    slices = []
    for a, b in itertools.pairwise(events):
        mid = (a + b) / 2
        slices.append((b - a, sum(1 for s, e in spans if s <= mid < e)))
    return slices


def test_capacity_limits_concurrency_and_keeps_it_full(ws: Workspace) -> None:
    path = ws.write(FAN_OUT)
    res = ws.argosy("run", str(path), "--max-cpus", "2", "--output", "json", timeout=180)
    assert res.code == 0, res.stderr
    doc = res.json()
    assert len(doc["tasks"]) == 16
    assert [s["node_path"] for s in doc["tasks"]][:3] == ["nap", "nap-2", "nap-3"]
    slices = _concurrency(_intervals(doc))
    assert max(n for _, n in slices) == 2, "more attempts ran at once than 2 CPUs allow"
    total = sum(d for d, _ in slices)
    both = sum(d for d, n in slices if n == 2)
    assert both / total > 0.8, f"2 attempts ran together only {both / total:.0%} of the run"


CRASHABLE = """
import os, time
from pathlib import Path
from argosy import step, pipeline

@step
def first(n: int) -> int:
    return n * 2

@step
def slow(x: int, gate: str) -> int:
    # holds until the test releases it, so the engine can be killed while it runs
    Path(gate, "slow-started.tmp").write_text(str(os.getpid()))
    os.replace(Path(gate, "slow-started.tmp"), Path(gate, "slow-started"))  # whole, at once
    while not Path(gate, "release").exists():
        time.sleep(0.05)
    return x + 1

@step
def quick(x: int, gate: str) -> int:
    Path(gate, "quick-started.tmp").write_text(str(os.getpid()))
    os.replace(Path(gate, "quick-started.tmp"), Path(gate, "quick-started"))  # whole, at once
    while not Path(gate, "release").exists():
        time.sleep(0.05)
    return x + 100

@step
def last(a: int, b: int) -> int:
    return a * b

@pipeline
def crashable(n: int = 5, gate: str = "/tmp") -> int:
    x = first(n=n)
    return last(a=slow(x=x, gate=gate), b=quick(x=x, gate=gate))
"""


@pytest.mark.usefixtures("workers")
@pytest.mark.parametrize("workers", ["warm", "fresh"], indirect=True)
def test_sigkill_then_resume_adopts_attempts_that_finished_meanwhile(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(CRASHABLE)
    engine = ws.spawn("run", str(path), "-p", f"gate={gate}", "--max-cpus", "2")
    wait_for(gate / "slow-started")
    wait_for(gate / "quick-started")
    pids = [int((gate / f).read_text()) for f in ("slow-started", "quick-started")]
    engine.send_signal(signal.SIGKILL)
    engine.wait(timeout=30)
    local = ws.local()
    with local.metadata.session() as s:
        run = q.list_runs(s, "default")[0][0]
        before = {a.id: (a.number, a.state, a.finished_at) for a in q.attempts_of(s, run.id)}
    assert run.status == "running"

    # While no engine runs, both attempts finish: their result records land in the store.
    (gate / "release").write_text("go")
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    res = ws.argosy("runs", "resume", run.id[:10], "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["status"] == "succeeded"
    assert outputs(doc) == {"output": (10 + 1) * (10 + 100)}
    steps = {s["node_path"]: s for s in doc["tasks"]}
    for node in ("first", "slow", "quick", "last"):
        assert len(steps[node]["attempts"]) == 1, f"{node} was re-run"
        assert steps[node]["attempts"][0]["state"] == "succeeded"
    with local.metadata.session() as s:
        after = {a.id: (a.number, a.state, a.finished_at) for a in q.attempts_of(s, run.id)}
    for attempt_id, row in before.items():
        if row[1] == "succeeded":
            assert after[attempt_id] == row, "a finished attempt changed on resume"
    # an uninterrupted run gives the same outputs
    straight = ws.argosy("run", str(path), "-p", f"gate={gate}", "--output", "json").json()
    assert outputs(straight) == outputs(doc)


@pytest.mark.usefixtures("workers")
@pytest.mark.parametrize("workers", ["warm", "fresh"], indirect=True)
def test_resume_ends_a_still_running_orphan_and_reruns_it_as_engine_lost(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(CRASHABLE)
    engine = ws.spawn("run", str(path), "-p", f"gate={gate}", "--max-cpus", "2")
    wait_for(gate / "slow-started")
    wait_for(gate / "quick-started")
    orphans = [int((gate / f).read_text()) for f in ("slow-started", "quick-started")]
    engine.send_signal(signal.SIGKILL)
    engine.wait(timeout=30)
    assert all(alive(p) for p in orphans), "attempts must outlive their engine"
    for f in ("slow-started", "quick-started"):
        (gate / f).unlink()

    resumer = ws.spawn("runs", "resume", "-o", "json", _latest_run(ws))
    wait_for(gate / "slow-started")  # the re-run attempt has started...
    for pid in orphans:
        assert not alive(pid), "an orphan attempt survived resume"  # ...after the orphan died
    (gate / "release").write_text("go")
    out, err = resumer.communicate(timeout=120)
    assert resumer.returncode == 0, err
    import json

    doc = json.loads(out)
    assert outputs(doc) == {"output": (10 + 1) * (10 + 100)}
    steps = {s["node_path"]: s for s in doc["tasks"]}
    slow = steps["slow"]["attempts"]
    assert [a["number"] for a in slow] == [1, 2]
    assert slow[0]["reason"] == "engine_lost"
    assert slow[1]["cause"] == "engine_lost"
    assert slow[1]["state"] == "succeeded"
    # the engine_lost retry did not use up a retry (the step has retries=0)
    assert steps["slow"]["state"] == "succeeded"
    # no two live attempts of one task: the second started after the first ended
    assert datetime.fromisoformat(slow[1]["started_at"]) >= datetime.fromisoformat(
        slow[0]["finished_at"]
    )


def _latest_run(ws: Workspace) -> str:
    with ws.local().metadata.session() as s:
        return q.list_runs(s, "default")[0][0].id


def test_a_step_called_twice_gets_two_node_paths_and_two_artifact_rows(ws: Workspace) -> None:
    path = ws.write("""
        from argosy import step, pipeline

        @step
        def constant() -> dict:
            return {"same": "bytes"}

        @step
        def named(x: dict) -> int:
            return len(x)

        @pipeline
        def twice() -> int:
            a = constant()
            b = constant()
            c = named.options(name="custom")(x=a)
            return named(x=b)
    """)
    # no cache: a constant-2 that starts after constant ended would reuse its output (a
    # loaded machine's order), leaving three attempts
    res = ws.argosy("run", str(path), "--no-cache", "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert [s["node_path"] for s in doc["tasks"]] == ["constant", "constant-2", "custom", "named"]
    with ws.local().metadata.session() as s:
        arts = s.scalars(select(Artifact).where(Artifact.run_id == doc["id"])).all()
        produced = [a for a in arts if a.node_path.startswith("constant")]
        assert len(produced) == 2
        assert produced[0].id != produced[1].id
        assert produced[0].task_id != produced[1].task_id
        assert produced[0].sha256 == produced[1].sha256  # one blob, two artifact rows
        attempts = s.scalars(select(Attempt).where(Attempt.run_id == doc["id"])).all()
        assert len(attempts) == 4


@pytest.mark.usefixtures("workers")
@pytest.mark.parametrize("workers", ["warm", "fresh"], indirect=True)
def test_cancel_from_another_process_kills_running_attempts(ws: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(CRASHABLE)
    engine = ws.spawn("run", str(path), "-p", f"gate={gate}", "--output", "json")
    wait_for(gate / "slow-started")
    pid = int((gate / "slow-started").read_text())
    res = ws.argosy("runs", "cancel", _latest_run(ws))
    assert res.code == 0, res.stderr
    out, _ = engine.communicate(timeout=60)
    assert engine.returncode == 1
    import json

    doc = json.loads(out)
    assert doc["status"] == "cancelled"
    states = {s["node_path"]: s["state"] for s in doc["tasks"]}
    assert states["first"] == "succeeded"
    assert states["slow"] == "cancelled"
    assert states["last"] == "cancelled"
    assert not alive(pid)
