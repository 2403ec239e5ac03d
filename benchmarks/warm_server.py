"""Warm workers on a server: task start cost with sealed warm parents vs a fresh interpreter.

    sudo .venv/bin/python benchmarks/warm_server.py [--runs 5] [--steps 10]

Starts a real ``argosy server`` (SQLite, local store, encryption at rest, tasks as the
``argosy-task`` user with per-tenant uids: the production isolation) twice, with
``ARGOSY_WARM_WORKERS=true`` and ``false``, and runs two pipelines ``--runs`` times on each: a
chain of ``--steps`` trivial steps, and a chain of ``--steps`` steps whose module imports
pandas and scikit-learn. Prints, per pipeline and mode, the median attempt wall time (the
executor's, from start to exit: what a trivial step costs) over the second and later runs
(the first run warms the server's parent; later runs reuse it), and the median whole-run wall
time (submission to succeeded). Needs root and the task user (scripts/install-test-deps.sh).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.server_fixture import start_server  # noqa: E402
from tests.test_task_isolation import TASK_USER, _reachable_venv, _reaches  # noqa: E402

from argosy.client.client import Client  # noqa: E402
from argosy.spec.compile import compile_pipeline  # noqa: E402
from argosy.spec.loader import load_pipeline  # noqa: E402

TRIVIAL = """
from argosy import pipeline, step

@step(cache=False)
def inc(x: int) -> int:
    return x + 1

@pipeline
def chain(n: int = 0) -> int:
    x = inc(x=n)
    for _ in range(__STEPS__ - 1):
        x = inc(x=x)
    return x
"""

HEAVY = """
import pandas
import sklearn.linear_model
from argosy import pipeline, step

@step(cache=False)
def inc(x: int) -> int:
    return int(pandas.Series([x]).sum()) + 1

@pipeline
def chain(n: int = 0) -> int:
    x = inc(x=n)
    for _ in range(__STEPS__ - 1):
        x = inc(x=x)
    return x
"""


def _measure(url: str, runs: int) -> tuple[list[float], list[float]]:
    walls: list[float] = []
    attempts: list[float] = []
    with Client(url, tenant="bench") as client:
        for i in range(runs):
            began = time.monotonic()
            run = client.wait(client.create_run("chain").id, poll=0.02, timeout=600)
            took = time.monotonic() - began
            assert run.status == "succeeded", run.error
            if i == 0:
                continue  # the first run starts the server's warm parent
            walls.append(took)
            for task in client.tasks(run.id):
                attempts.extend(a.wall_time for a in task.attempts if a.wall_time is not None)
    return walls, attempts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the server switches tasks to the task user")
    user = pwd.getpwnam(TASK_USER)
    python = sys.executable if _reaches(sys.executable, user) else _reachable_venv(user)
    if python is None:
        sys.exit(f"{TASK_USER} cannot run this Python: see tests/test_task_isolation.py")
    base = Path(tempfile.mkdtemp(prefix="argosy-warm-bench-"))
    os.chmod(base, 0o711)
    rows = []
    try:
        compiled = {}
        for name, text in (("trivial", TRIVIAL), ("pandas+sklearn", HEAVY)):
            folder = base / f"project_{len(compiled)}"
            folder.mkdir()
            module = f"warm_bench_{len(compiled)}"
            (folder / f"{module}.py").write_text(
                textwrap.dedent(text).replace("__STEPS__", str(args.steps))
            )
            compiled[name] = compile_pipeline(load_pipeline(f"{folder / module}.py:chain"))
        for mode in ("true", "false"):
            home = base / f"server-{mode}"
            env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_TASK_UID_BASE": "700000",
                   "ARGOSY_WARM_WORKERS": mode, "ARGOSY_ENCRYPTION": "true"}  # fmt: skip
            server = start_server(home, env, python=python)
            try:
                with Client(server.url) as admin:
                    admin.create_tenant("bench")
                for name, spec in compiled.items():
                    with Client(server.url, tenant="bench") as client:
                        client.push_pipeline(spec)
                    walls, attempts = _measure(server.url, args.runs)
                    rows.append((name, "warm" if mode == "true" else "fresh",
                                 statistics.median(attempts), statistics.median(walls)))  # fmt: skip
                    print(f"{rows[-1]}", file=sys.stderr, flush=True)
            finally:
                server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"\n{args.steps}-step chains, {args.runs - 1} measured runs each, load {load:.1f}\n")
    print("| pipeline | workers | median attempt wall (ms) | median run wall (s) |")
    print("|---|---|---|---|")
    for name, mode, attempt, wall in rows:
        print(f"| {name} | {mode} | {attempt * 1000:.1f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
