"""Warm workers (executors/local/warm.py): Python steps forked from a pre-imported parent, each
still a process of its own with a fresh interpreter's state; off by ARGOSY_WARM_WORKERS=false.

The crash, exit-code, exception, memory-limit, timeout/grandchild and fail-fast tests of
test_failures.py and the engine-crash tests of test_engine.py run with warm workers on and off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Workspace, alive, outputs

WARM = {"ARGOSY_WARM_WORKERS": "true", "ARGOSY_WARM_WORKERS_WAIT": "60"}
FRESH = {"ARGOSY_WARM_WORKERS": "false"}

PROBE = """
import os, random, signal, threading
from pathlib import Path
from argosy import pipeline, step

signal.signal(signal.SIGTERM, lambda *_: None)  # set at import: the parent has it, tasks must not
IMPORTED_IN = os.getpid()


def _parent_is_warm() -> bool:
    cmdline = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    return b"argosy.executors.local.warm" in cmdline


@step(cache=False)
def probe(n: int) -> dict:
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    return {
        "warm": _parent_is_warm(),
        "imported_here": IMPORTED_IN == os.getpid(),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "threads": threading.active_count(),
        "random": random.random(),
        "attempt_in_environ_block": os.environ["ARGOSY_ATTEMPT_ID"].encode()
        in Path("/proc/self/environ").read_bytes(),
        "argosy_vars": sorted(k for k in os.environ if k.startswith("ARGOSY_")),
        "fds": len(fds),
        "cwd_is_scratch": Path.cwd().name == "scratch",
        "n": n,
    }


@pipeline
def probes() -> dict:
    first = probe(n=1)
    probe(n=2).after(first)
    return probe(n=3).after(first)
"""


def _probes(ws: Workspace, env: dict[str, str]) -> list[dict[str, object]]:
    path = ws.write(PROBE)
    res = ws.argosy("run", f"{path}:probes", "--output", "json", env=env)
    assert res.code == 0, res.stderr
    doc = res.json()
    found = []
    for task in doc["tasks"]:
        art = task["outputs"]["output"]
        shown = ws.argosy("artifacts", "get", art["ref"], "--out", str(ws.root.parent / "o.json"))
        assert shown.code == 0, shown.stderr
        found.append(__import__("json").loads((ws.root.parent / "o.json").read_text()))
    return found


def test_warm_tasks_are_forked_with_a_fresh_interpreter_s_state(ws: Workspace) -> None:
    found = _probes(ws, WARM)
    assert all(p["warm"] and not p["imported_here"] for p in found), found
    for p in found:
        assert p["sigterm_default"], p  # handlers the module set at import are reset
        assert p["threads"] == 1
        assert p["attempt_in_environ_block"]  # orphan recovery and the sweeper find it
        assert p["cwd_is_scratch"]
        assert "ARGOSY_WARM_FIRST" not in p["argosy_vars"]  # nothing of the parent's own
    assert len({p["random"] for p in found}) == len(found)  # seeds differ per task
    fresh = _probes(ws, FRESH)
    assert not any(p["warm"] for p in fresh)
    # the same descriptors and ARGOSY_* variables as a fresh interpreter's
    assert {p["fds"] for p in found} == {p["fds"] for p in fresh}
    assert {tuple(p["argosy_vars"]) for p in found} == {tuple(p["argosy_vars"]) for p in fresh}


AT_IMPORT = """
import os, sys
from pathlib import Path
from argosy import pipeline, step

SEEN_AT_IMPORT = os.environ.get("GREETING")  # the first task's environment, as fresh


@step(cache=False, env={"GREETING": "hello"})
def first() -> dict:
    warm = b"argosy.executors.local.warm" in Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    return {"warm": warm, "seen_at_import": SEEN_AT_IMPORT, "hash": hash("argosy")}


@step(cache=False, env={"GREETING": "hello", "PYTHONHASHSEED": "7"})
def seeded(before: dict) -> dict:
    warm = b"argosy.executors.local.warm" in Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    return {"warm": warm, "hash": hash("argosy")}


@pipeline
def at_import() -> dict:
    return seeded(before=first())
"""


def test_the_first_task_is_forked_from_a_parent_started_ahead(ws: Workspace) -> None:
    """Without waiting for a parent (the default), a run's first step is forked too: `argosy
    run` starts a parent before compiling, and the first task gives it its environment before
    its module is imported; a task whose interpreter variables differ (PYTHONHASHSEED) is not
    handed that parent, whose interpreter did not start with them."""
    path = ws.write(AT_IMPORT)
    res = ws.argosy("run", f"{path}:at_import", "--output", "json",
                    env={"ARGOSY_WARM_WORKERS": "true"})  # fmt: skip
    assert res.code == 0, res.stderr
    docs = {}
    for task in res.json()["tasks"]:
        got = ws.argosy("artifacts", "get", task["outputs"]["output"]["ref"], "--out",
                        str(ws.root.parent / "o.json"))  # fmt: skip
        assert got.code == 0, got.stderr
        docs[task["step"]] = __import__("json").loads((ws.root.parent / "o.json").read_text())
    assert docs["first"]["warm"], docs
    assert docs["first"]["seen_at_import"] == "hello"
    expected = subprocess.run(
        [sys.executable, "-c", "print(hash('argosy'))"], env={"PYTHONHASHSEED": "7"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert str(docs["seeded"]["hash"]) == expected  # its own interpreter's seed, not the parent's


def test_a_changed_module_is_picked_up_on_the_next_run(ws: Workspace) -> None:
    (ws.root / "warm_helper.py").write_text("VALUE = 1\n")
    path = ws.write("""
        from argosy import pipeline, step
        import warm_helper

        @step(cache=False)
        def read(n: int) -> int:
            return warm_helper.VALUE * n

        @pipeline
        def helper_value() -> int:
            return read(n=read(n=1))
    """)
    first = ws.argosy("run", f"{path}:helper_value", "--output", "json", env=WARM)
    assert first.code == 0, first.stderr
    assert outputs(first.json()) == {"output": 1}
    time.sleep(0.01)
    (ws.root / "warm_helper.py").write_text("VALUE = 7\n")
    second = ws.argosy("run", f"{path}:helper_value", "--output", "json", env=WARM)
    assert second.code == 0, second.stderr
    assert outputs(second.json()) == {"output": 49}


def test_a_parent_holding_threads_is_never_forked(ws: Workspace) -> None:
    path = ws.write("""
        import os, threading, time
        from pathlib import Path
        from argosy import pipeline, step

        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

        @step(cache=False)
        def where(n: int) -> int:
            warm = b"argosy.executors.local.warm" in Path(
                f"/proc/{os.getppid()}/cmdline").read_bytes()
            return n + (100 if warm else 1)

        @pipeline
        def threaded() -> int:
            return where(n=where(n=1))
    """)
    res = ws.argosy("run", f"{path}:threaded", "--output", "json", env=WARM)
    assert res.code == 0, res.stderr
    assert outputs(res.json()) == {"output": 3}  # a fresh interpreter ran each


ORPHAN = """
import os, signal, time
from pathlib import Path
from argosy import pipeline, step


@step(cache=False)
def warmup() -> int:
    return 1


@step(cache=False)
def dies(marker_dir: str, x: int) -> int:
    child = os.fork()  # a forked (not exec'd) grandchild in a session of its own
    if child == 0:
        os.setsid()
        Path(marker_dir, "grandchild").write_text(str(os.getpid()))
        while True:
            time.sleep(0.1)
    while not Path(marker_dir, "grandchild").exists():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)  # the launcher dies: the grandchild is orphaned
    return 0


@pipeline
def orphaned(marker_dir: str) -> int:
    return dies(marker_dir=marker_dir, x=warmup())
"""


@pytest.mark.parametrize("env", [WARM, FRESH], ids=["warm", "fresh"])
def test_a_task_killed_while_its_fork_lives_leaves_no_orphan(
    ws: Workspace, tmp_path: Path, env: dict[str, str]
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = ws.write(ORPHAN)
    res = ws.argosy("run", f"{path}:orphaned", "-p", f"marker_dir={markers}", "--output",
                    "json", env=env)  # fmt: skip
    assert res.code == 1, res.stderr
    pid = int((markers / "grandchild").read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the orphaned grandchild of a killed task survived"


def test_warm_parents_end_with_the_run(ws: Workspace) -> None:
    path = ws.write(PROBE)
    res = ws.argosy("run", f"{path}:probes", "--output", "json", env=WARM)
    assert res.code == 0, res.stderr
    time.sleep(0.2)
    parents = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if b"argosy.executors.local.warm" in cmd and cwd.startswith(str(ws.home)):
                parents.append(int(entry.name))
    assert [p for p in parents if alive(p)] == []
    assert list((ws.home / "warm").glob("*.log")) == []  # their output goes with them


def test_a_module_that_imports_pandas_is_forked(ws: Workspace) -> None:
    # pyarrow's allocator would start a thread at import; the parent is started without it
    path = ws.write("""
        import os
        from pathlib import Path
        import pandas
        from argosy import pipeline, step

        @step(cache=False)
        def where(n: int) -> int:
            warm = b"argosy.executors.local.warm" in Path(
                f"/proc/{os.getppid()}/cmdline").read_bytes()
            return n + (100 if warm else 1)

        @pipeline
        def with_pandas() -> int:
            return where(n=where(n=0))
    """)
    res = ws.argosy("run", f"{path}:with_pandas", "--output", "json", env=WARM)
    assert res.code == 0, res.stderr
    assert outputs(res.json()) == {"output": 200}


def test_an_encrypted_store_s_tasks_are_forked_and_read_their_code_and_inputs(
    ws: Workspace,
) -> None:
    # the parent reads the encrypted code package with the tenant's data keys, as a launcher
    # does (it once read it as plaintext, found it "corrupted" and quarantined good blobs)
    path = ws.write("""
        import os
        from pathlib import Path
        from argosy import pipeline, step

        @step(cache=False)
        def where(n: int) -> int:
            warm = b"argosy.executors.local.warm" in Path(
                f"/proc/{os.getppid()}/cmdline").read_bytes()
            return n + (100 if warm else 1)

        @pipeline
        def sealed() -> int:
            return where(n=where(n=0))
    """)
    env = {**WARM, "ARGOSY_ENCRYPTION": "true"}
    for _ in range(2):
        res = ws.argosy("run", f"{path}:sealed", "--output", "json", env=env)
        assert res.code == 0, res.stderr
        assert outputs(res.json()) == {"output": 200}
    assert not list(ws.home.rglob("quarantine"))
    time.sleep(0.2)  # the parents have ended with their runs: no plaintext code is left
    assert not list(ws.home.rglob("private-*"))
