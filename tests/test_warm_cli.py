"""The warm command line (cli/warm.py): ``argosy run`` forked from a resident process that has
its imports done, doing exactly what a cold ``argosy run`` does.

These tests start the real ``argosy`` script (the warm path is the script's, not
``python -m argosy.cli.main``'s) with a private ``XDG_RUNTIME_DIR``, so each test has its own
warm command line and stops it at the end. The rest of the suite runs commands cold
(tests/conftest.py sets ``ARGOSY_WARM_CLI=false``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import argosy.units
from argosy.cli import warm
from tests.conftest import Result, Workspace, alive, outputs, tasks_by_node, wait_for

SCRIPT = Path(sys.executable).with_name("argosy")

PIPELINE = """
import os, time
from pathlib import Path
from argosy import pipeline, step


def _ancestors() -> list[bytes]:
    found, pid = [], os.getppid()
    while pid > 1:
        found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        pid = int(next(line.split()[1] for line in status if line.startswith("PPid:")))
    return found


@step(cache=False)
def where() -> bool:
    return any(b"argosy.cli.warm import serve" in c for c in _ancestors())


@step
def add(x: int, y: int) -> int:
    return x + y


@step(cache=False)
def wait(gate: str, started: str) -> int:
    Path(started).write_text(str(os.getpid()))
    while not Path(gate).exists():
        time.sleep(0.05)
    return 1


@pipeline
def probe(x: int = 1) -> dict:
    return {"warm": where(), "sum": add(x=x, y=2)}


@pipeline
def held(gate: str, started: str) -> int:
    return wait(gate=gate, started=started)
"""


@dataclass
class Warm:
    ws: Workspace
    runtime: Path
    pipeline: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = self.ws.env(XDG_RUNTIME_DIR=str(self.runtime))
        for unset in ("CI", warm.SWITCH_ENV):
            env.pop(unset, None)
        env.update(extra)
        return env

    def argosy(self, *args: str, **extra: str) -> Result:
        done = subprocess.run(
            [str(SCRIPT), *args], cwd=self.ws.root, env=self.env(**extra),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        return Result(done.returncode, done.stdout, done.stderr)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(SCRIPT), *args], cwd=self.ws.root, env=self.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    @property
    def socket(self) -> Path:
        return next(self.runtime.joinpath("argosy").glob("cli-*.sock"))

    def parent_pid(self) -> int:
        return int(next(self.runtime.joinpath("argosy").glob("cli-*.lock")).read_text())

    def started(self) -> None:
        """A first command starts the warm command line; wait until it listens."""
        first = self.argosy("run", f"{self.pipeline.name}:probe", "--output", "json")
        assert first.code == 0, first.stderr
        assert first.json()["outputs"]["warm"]["value"] is False  # the first ran cold
        deadline = time.monotonic() + 60
        while not list(self.runtime.joinpath("argosy").glob("cli-*.sock")):
            assert time.monotonic() < deadline, "no warm command line started"
            time.sleep(0.05)


@pytest.fixture
def w(ws: Workspace) -> Iterator[Warm]:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: 'make install' installs the argosy script")
    runtime = Path(tempfile.mkdtemp(prefix="argosy-w-"))  # short: a socket path has 107 bytes
    found = Warm(ws, runtime, ws.write(PIPELINE, "probe_pipeline"))
    yield found
    for lock in runtime.joinpath("argosy").glob("cli-*.lock"):
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(lock.read_text()), signal.SIGTERM)
    shutil.rmtree(runtime, ignore_errors=True)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_a_later_run_is_forked_from_the_warm_command_line_and_reports_the_same(w: Warm) -> None:
    w.started()
    target = f"{w.pipeline.name}:probe"
    hot = w.argosy("run", target, "-p", "x=5", "--output", "json")
    cold = w.argosy("run", target, "-p", "x=5", "--output", "json", ARGOSY_WARM_CLI="false")
    assert hot.code == cold.code == 0, (hot.stderr, cold.stderr)
    assert outputs(hot.json()) == {"warm": True, "sum": 7}
    assert outputs(cold.json()) == {"warm": False, "sum": 7}
    assert tasks_by_node(cold.json())["add"]["state"] == "cached"  # one state folder: env passed
    heads = [r.stderr.splitlines()[0].replace(r.json()["id"], "RUN") for r in (hot, cold)]
    assert heads[0] == heads[1] and heads[0].startswith("run RUN of pipeline probe")


def test_errors_and_exit_codes_are_the_cold_commands(w: Warm) -> None:
    w.started()
    for args in (
        ("run", f"{w.pipeline.name}:probe", "-p", "x=notanint"),  # usage: 2
        ("run", "missing_file.py"),  # 2
        ("runs", "show", "01NOSUCHRUN0000000000000000"),  # not found
        ("runs", "list", "--output", "json"),  # 0
    ):
        hot, cold = w.argosy(*args), w.argosy(*args, ARGOSY_WARM_CLI="false")
        assert (hot.code, hot.stdout, hot.stderr) == (cold.code, cold.stdout, cold.stderr), args
    assert w.argosy("run", "missing_file.py").code == 2


def test_changed_code_is_never_run_stale(w: Warm) -> None:
    """A file the warm command line imported changes: the next command runs cold, it exits,
    and the one after runs warm again from a fresh one with the new code."""
    w.started()
    parent = w.parent_pid()
    changed = Path(argosy.units.__file__)  # imported by the warm command line itself
    before = changed.stat()
    try:
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        target = f"{w.pipeline.name}:probe"
        after = w.argosy("run", target, "--output", "json")
        assert after.code == 0 and outputs(after.json())["warm"] is False
        deadline = time.monotonic() + 30
        while alive(parent):
            assert time.monotonic() < deadline, "the stale warm command line did not exit"
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while True:
            again = w.argosy("run", target, "--output", "json")
            if outputs(again.json())["warm"]:
                break
            assert time.monotonic() < deadline, "no fresh warm command line started"
            time.sleep(0.2)
        assert w.parent_pid() != parent
    finally:
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))


def _held(w: Warm, name: str, **extra: str) -> tuple[subprocess.Popen[str], Path]:
    gate, started = w.ws.root / f"gate-{name}", w.ws.root / f"started-{name}"
    proc = subprocess.Popen(
        [str(SCRIPT), "run", f"{w.pipeline.name}:held", "-p", f"gate={gate}",
         "-p", f"started={started}"],
        cwd=w.ws.root, env=w.env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for(started)
    return proc, gate


def test_ctrl_c_reaches_the_run_as_it_does_a_cold_one(w: Warm) -> None:
    w.started()
    ended = {}
    for name, extra in (("warm", {}), ("cold", {"ARGOSY_WARM_CLI": "false"})):
        proc, gate = _held(w, name, **extra)
        if name == "warm":
            engines = _children(w.parent_pid())
            assert len(engines) == 1  # the command runs in the warm command line's child
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        ended[name] = (proc.returncode, "cancelling the run" in stderr, "cancelled" in stderr)
        gate.write_text("")
    assert ended["warm"] == ended["cold"] == (1, True, True)
    assert not alive(engines[0])
    listed = w.argosy("runs", "list", "--output", "json").json()["runs"]
    assert [r["status"] for r in listed if r["pipeline"] == "held"] == ["cancelled"] * 2


def test_kill_9_of_the_command_ends_its_run_engine(w: Warm) -> None:
    """``kill -9`` of ``argosy run`` kills its engine, as it does a cold one (the run is left
    ``running`` for recovery), even though the engine is the warm command line's child."""
    w.started()
    proc, gate = _held(w, "killed")
    engines = _children(w.parent_pid())
    assert len(engines) == 1
    proc.kill()
    assert proc.wait(60) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while alive(engines[0]):
        assert time.monotonic() < deadline, "the run's engine outlived its command"
        time.sleep(0.05)
    while _children(w.parent_pid()):  # reaped by the warm command line
        assert time.monotonic() < deadline, "the killed engine was never reaped"
        time.sleep(0.05)
    gate.write_text("")
    listed = w.argosy("runs", "list", "--output", "json").json()["runs"]
    assert [r["status"] for r in listed if r["pipeline"] == "held"] == ["running"]


def test_a_folder_others_can_open_is_not_used(w: Warm) -> None:
    os.chmod(w.runtime, 0o755)
    folder = w.runtime / "argosy"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # umask-proof
    done = w.argosy("run", f"{w.pipeline.name}:probe", "--output", "json")
    assert done.code == 0 and outputs(done.json())["warm"] is False
    time.sleep(1)
    assert list(folder.iterdir()) == []  # nothing started, no socket made


def test_a_request_from_another_environment_is_refused(w: Warm) -> None:
    """The socket's name is a digest; the environment key itself must match before a fork."""
    w.started()
    assert warm._run_warm(str(w.socket), ["argosy", "runs", "list"], "another interpreter") is None
    assert _children(w.parent_pid()) == []


def test_ci_runs_cold_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm.SWITCH_ENV, raising=False)
    monkeypatch.delenv("ARGOSY_ATTEMPT_ID", raising=False)
    monkeypatch.setenv("CI", "true")
    assert not warm._eligible(["argosy", "run", "p.py"])
    monkeypatch.setenv(warm.SWITCH_ENV, "true")
    assert warm._eligible(["argosy", "run", "p.py"])
    assert not warm._eligible(["argosy", "server"])  # serves: never forked
    monkeypatch.setenv("ARGOSY_ATTEMPT_ID", "x" * 26)
    assert not warm._eligible(["argosy", "run", "p.py"])  # inside a task


def test_the_client_imports_only_the_standard_library() -> None:
    code = "import sys, argosy.cli.warm; print(sorted(m for m in sys.modules if '.' not in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert not loaded & {"typing", "json", "hashlib", "sqlalchemy", "pydantic", "typer", "rich"}


def test_only_the_dropped_modules_size_themselves_to_the_terminal_at_import() -> None:
    """The warm command line keeps every argosy.cli module imported except
    ``TERMINAL_MODULES``, which each command imports afresh; a kept module that made a console
    (or imported commands.py's by name) at import would print to another terminal's size,
    without colours."""
    import ast

    folder = Path(warm.__file__).parent
    found = []
    for path in sorted(folder.glob("*.py")):
        name = f"argosy.cli.{path.stem}"
        if name in warm.TERMINAL_MODULES or path.stem == "warm":
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module in warm.TERMINAL_MODULES:
                found.append(f"{name}: imports from {node.module}")
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                for call in ast.walk(node.value):
                    if isinstance(call, ast.Call) and ast.unparse(call.func) in (
                        "Console", "render.console_for", "render.layout_for", "console_for",
                        "layout_for",
                    ):  # fmt: skip
                        found.append(f"{name}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert found == []
    commands = (folder / "commands.py").read_text()
    assert "err = Console(" in commands  # the check above looks for what is really there
