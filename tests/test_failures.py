"""A failing step fails its task, never the engine: crash, exit code, exception, memory, timeout."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Workspace, alive, outputs

# every test here runs with warm workers (steps forked from a pre-imported parent) and without
pytestmark = [
    pytest.mark.usefixtures("workers"),
    pytest.mark.parametrize("workers", ["warm", "fresh"], indirect=True),
]

FAILING = """
import os, signal, sys
from argosy import step, pipeline

@step
def segfault() -> int:
    print("about to crash")
    os.kill(os.getpid(), signal.SIGSEGV)
    return 1

@step
def exit_three() -> int:
    print("exiting with 3")
    sys.exit(3)

@step
def raises() -> int:
    print("computing")
    raise ValueError("the data is wrong: column 'age' is missing")

@step(memory="100Mi")
def hog() -> int:
    import time
    print("allocating")
    chunks = []
    for _ in range(40):                     # up to 2 GiB, 50 MiB at a time, touched
        chunks.append(b"x" * (50 * 2**20))
        time.sleep(0.05)
    return len(chunks)

@step
def after(x: int) -> int:
    return x + 1

@step
def fine() -> int:
    print("independent branch works")
    return 42

@pipeline
def failures() -> int:
    after(x=segfault())
    after(x=exit_three())
    after(x=raises())
    after(x=hog())
    return fine()
"""


def test_each_failure_fails_its_task_with_reason_and_log_and_skips_downstream(
    ws: Workspace,
) -> None:
    path = ws.write(FAILING)
    res = ws.argosy("run", str(path), "--output", "json", "--max-cpus", "4")
    assert res.code == 1, res.stderr
    doc = res.json()
    assert doc["status"] == "failed"
    steps = {s["node_path"]: s for s in doc["tasks"]}

    def last_attempt(node: str) -> dict[str, object]:
        return steps[node]["attempts"][-1]

    assert steps["segfault"]["state"] == "failed"
    assert last_attempt("segfault")["reason"] == "signal"
    assert "SIGSEGV" in str(last_attempt("segfault")["error"])
    assert last_attempt("exit_three")["reason"] == "exit_code"
    assert last_attempt("exit_three")["exit_code"] == 3
    assert last_attempt("raises")["reason"] == "exception"
    assert "column 'age' is missing" in str(last_attempt("raises")["error"])
    assert last_attempt("hog")["reason"] == "memory_limit"

    for downstream in ("after", "after-2", "after-3", "after-4"):
        assert steps[downstream]["state"] == "skipped"
        assert steps[downstream]["reason"].startswith("upstream_failed")
        assert steps[downstream]["attempts"] == []
    assert steps["fine"]["state"] == "succeeded"
    assert outputs(doc) == {"output": 42}

    shown = ws.argosy("runs", "show", doc["id"], "--output", "json").json()
    tails = {s["node_path"]: s["log_tail"] for s in shown["tasks"]}
    assert "about to crash" in tails["segfault"]
    assert "exiting with 3" in tails["exit_three"]
    assert any("ValueError: the data is wrong" in line for line in tails["raises"])
    assert any("exceeds the request" in line for line in tails["hog"])
    # the human-readable summary names every failure on stderr
    text = ws.argosy("run", str(path), "--max-cpus", "4")
    assert text.code == 1
    assert "segfault: failed" in text.stderr


TIMEOUT = """
import subprocess, sys, time
from pathlib import Path
from argosy import step, pipeline

CHILD = "import time\\nwhile True: time.sleep(0.1)"

@step(timeout=2, retries=1, retry_backoff=1.5)
def hangs(marker_dir: str) -> int:
    plain = subprocess.Popen([sys.executable, "-c", CHILD])
    escaped = subprocess.Popen([sys.executable, "-c", CHILD], start_new_session=True)
    Path(marker_dir, f"pids-{time.time_ns()}").write_text(f"{plain.pid} {escaped.pid}")
    time.sleep(3600)
    return 0

@pipeline
def timeouts(marker_dir: str) -> int:
    return hangs(marker_dir=marker_dir)
"""


def test_timeout_kills_the_whole_tree_then_retries_after_backoff(
    ws: Workspace, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = ws.write(TIMEOUT)
    res = ws.argosy("run", str(path), "-p", f"marker_dir={markers}", "--output", "json")
    assert res.code == 1, res.stderr
    step = res.json()["tasks"][0]
    assert step["state"] == "failed"
    attempts = step["attempts"]
    assert [a["number"] for a in attempts] == [1, 2]
    assert all(a["reason"] == "timeout" for a in attempts)
    assert [a["cause"] for a in attempts] == ["first", "retry"]
    first_end = datetime.fromisoformat(attempts[0]["finished_at"])
    second_start = datetime.fromisoformat(attempts[1]["started_at"])
    assert (second_start - first_end).total_seconds() >= 1.5
    pid_files = sorted(markers.iterdir())
    assert len(pid_files) == 2
    time.sleep(0.2)
    for f in pid_files:
        for pid in map(int, f.read_text().split()):
            assert not alive(pid), f"process {pid} survived its attempt's timeout"


@pytest.mark.parametrize("flag", [[], ["--fail-fast"]])
def test_fail_fast_cancels_the_rest(ws: Workspace, flag: list[str]) -> None:
    path = ws.write("""
        import time
        from argosy import step, pipeline

        @step
        def boom() -> int:
            time.sleep(0.5)
            raise RuntimeError("boom")

        @step
        def slow(n: int) -> int:
            time.sleep(3)
            return n

        @pipeline
        def p() -> int:
            boom()
            first = slow(n=1)
            slow(n=2)  # queued: the capacity is 2 CPUs
            return slow(n=first)  # pending until the first slow one ends
    """)
    res = ws.argosy("run", str(path), "--output", "json", "--max-cpus", "2", *flag, timeout=60)
    doc = res.json()
    states = {s["node_path"]: s["state"] for s in doc["tasks"]}
    assert doc["status"] == "failed"
    assert states["boom"] == "failed"
    if flag:
        assert states == {"boom": "failed", "slow": "cancelled", "slow-2": "cancelled",
                          "slow-3": "cancelled"}  # fmt: skip
        never_started = [s for s in doc["tasks"] if s["node_path"] in ("slow-2", "slow-3")]
        assert all(s["reason"] == "fail-fast: boom failed" for s in never_started)
    else:
        assert states == {"boom": "failed", "slow": "succeeded", "slow-2": "succeeded",
                          "slow-3": "succeeded"}  # fmt: skip
