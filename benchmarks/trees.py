"""Compare source trees by CPU time, which a busy machine moves far less than wall time: for
bisecting a regression.

    git worktree add /tmp/wt-OLD OLD
    .venv/bin/python benchmarks/trees.py /tmp/wt-OLD/src src --repeats 3

For each tree (its ``src`` first on PYTHONPATH), alternating: a 3-step run's fixed CPU (the
``argosy`` process tree's CPU less its attempts' CPU) and the 100 MB array run's producer and
consumer CPU (each attempt's ``cpu_time``). Older trees' run documents (``steps`` instead of
``tasks``) are read too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUN = "from argosy.cli.main import app; app()"


def measure(src: str, home: str, target: str, *options: str) -> tuple[float, dict[str, float]]:
    """(CPU seconds of the whole process tree, each attempt's CPU by node path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env.update(PYTHONPATH=src, ARGOSY_HOME=home)
    proc = subprocess.Popen([sys.executable, "-c", RUN, "run", target, "--output", "json",
                             *options], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{src}: argosy run {target} failed")
    doc = json.loads(out)
    attempts = {}
    for task in doc.get("tasks") or doc.get("steps") or []:
        for a in task["attempts"]:
            attempts[task.get("node_path") or task.get("node")] = a.get("cpu_time") or 0.0
    return usage.ru_utime + usage.ru_stime, attempts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="src folders (e.g. /tmp/wt-REV/src)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    homes = {t: tempfile.mkdtemp(prefix="argosy-trees-") for t in args.trees}
    got: dict[str, list[tuple[float, float, float]]] = {t: [] for t in args.trees}
    try:
        for i in range(args.repeats + 1):
            for tree in args.trees:
                total, attempts = measure(tree, homes[tree], "benchmarks/pipelines/"
                                          "bench_trivial.py:chain3")  # fmt: skip
                _, arrays = measure(tree, homes[tree], "benchmarks/pipelines/bench_array.py",
                                    "-p", f"value={i + 2}")  # fmt: skip
                if i:  # the first round warms caches
                    fixed = total - sum(attempts.values())
                    got[tree].append((fixed, arrays.get("produce", 0), arrays.get("consume", 0)))
    finally:
        for home in homes.values():
            shutil.rmtree(home, ignore_errors=True)
    print(f"load average: {os.getloadavg()[0]:.2f}; medians of {args.repeats}, CPU seconds")
    print(f"{'tree':40s} {'3-step fixed':>12s} {'produce':>9s} {'consume':>9s}")
    for tree, rows in got.items():
        fixed, produce, consume = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"{tree:40s} {fixed:12.3f} {produce:9.3f} {consume:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
