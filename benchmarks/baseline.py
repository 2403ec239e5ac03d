"""The plain-Python baseline: the benchmark workloads as bare ``python -c`` subprocesses.

No orchestration at all: each step is a fresh interpreter started with ``python -c``, its
input passed on the command line and its output read from stdout (or, for the array, a
``.npy`` file). ``benchmarks/run.py`` starts this script as its own process, exactly as it
starts ``argosy run``, so both are timed the same way from outside.

    python benchmarks/baseline.py chain N              # N steps one after another
    python benchmarks/baseline.py fanout WIDTH PAR     # 1 -> WIDTH (at most PAR at once) -> 1
    python benchmarks/baseline.py array BYTES FOLDER [--hash]

Prints one JSON document: every step's start/end (seconds since this script started, from
``time.perf_counter``), wall time and peak resident memory (``ru_maxrss``), and the result.
``--hash`` makes the array producer sha256 the file it wrote and the consumer verify it before
loading, which is what Argosy's content addressing does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

T0 = time.perf_counter()

# The same trivial step logic as benchmarks/pipelines/bench_trivial.py.
INC = "import sys; print(int(sys.argv[1]) + 1)"
JOIN = "import sys; print(sum(int(a) for a in sys.argv[1:]))"
_SHA = (
    "import hashlib\n"
    "def sha(p):\n"
    "    h = hashlib.sha256()\n"
    "    with open(p, 'rb') as f:\n"
    "        while b := f.read(4 << 20):\n"
    "            h.update(b)\n"
    "    return h.hexdigest()\n"
)
PRODUCE = (
    "import sys\nimport numpy as np\n"
    "np.save(sys.argv[2], np.ones(int(sys.argv[1]) // 8, dtype=np.float64), allow_pickle=False)\n"
)
PRODUCE_HASH = PRODUCE + _SHA + "print(sha(sys.argv[2]))\n"
CONSUME = (
    "import sys\nimport numpy as np\n"
    "print(float(np.load(sys.argv[1], mmap_mode='r', allow_pickle=False).sum()))\n"
)
CONSUME_HASH = (
    "import sys\nimport numpy as np\n" + _SHA + "assert sha(sys.argv[1]) == sys.argv[2]\n"
    "print(float(np.load(sys.argv[1], mmap_mode='r', allow_pickle=False).sum()))\n"
)


def _now() -> float:
    return time.perf_counter() - T0


class Step:
    """One ``python -c`` child: started now, finished by :func:`_reap`."""

    def __init__(self, name: str, code: str, *args: str) -> None:
        self.name = name
        self.start = _now()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self.end = 0.0
        self.maxrss = 0
        self.output = ""

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "wall": self.end - self.start,
            "maxrss": self.maxrss,
        }


def _reap(running: dict[int, Step], pid: int = -1) -> Step:
    """Wait for one child (``pid``, or any), read its output and resource use."""
    pid, status, usage = os.wait4(pid, 0)
    step = running.pop(pid)
    step.end = _now()
    step.proc.returncode = os.waitstatus_to_exitcode(status)
    assert step.proc.stdout is not None
    step.output = step.proc.stdout.read().decode().strip()
    step.proc.stdout.close()
    step.maxrss = usage.ru_maxrss * 1024
    if step.proc.returncode != 0:
        raise SystemExit(f"baseline step {step.name} failed with exit code {step.proc.returncode}")
    return step


def run_one(name: str, code: str, *args: str) -> Step:
    step = Step(name, code, *args)
    return _reap({step.proc.pid: step}, step.proc.pid)


def chain(n: int) -> tuple[list[Step], Any]:
    steps, x = [], 0
    for i in range(n):
        step = run_one(f"inc-{i + 1}", INC, str(x))
        x = int(step.output)
        steps.append(step)
    return steps, x


def fanout(width: int, parallel: int) -> tuple[list[Step], Any]:
    seed = run_one("inc", INC, "0")
    steps = [seed]
    todo = [f"branch-{i + 1}" for i in range(width)]
    running: dict[int, Step] = {}
    outputs: list[str] = []
    while todo or running:
        while todo and len(running) < parallel:
            step = Step(todo.pop(0), INC, seed.output)
            running[step.proc.pid] = step
        done = _reap(running)
        outputs.append(done.output)
        steps.append(done)
    join = run_one("join", JOIN, *outputs)
    steps.append(join)
    return steps, int(join.output)


def array(size: int, folder: str, hashed: bool) -> tuple[list[Step], Any]:
    path = os.path.join(folder, "array.npy")
    producer = run_one("produce", PRODUCE_HASH if hashed else PRODUCE, str(size), path)
    args = (path, producer.output) if hashed else (path,)
    consumer = run_one("consume", CONSUME_HASH if hashed else CONSUME, *args)
    os.unlink(path)
    return [producer, consumer], float(consumer.output)


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "chain":
        steps, result = chain(int(args[0]))
    elif kind == "fanout":
        steps, result = fanout(int(args[0]), int(args[1]))
    elif kind == "array":
        steps, result = array(int(args[0]), args[1], "--hash" in args[2:])
    else:
        raise SystemExit(f"unknown workload {kind!r}; use chain, fanout or array")
    doc = {"steps": [s.record() for s in steps], "result": result, "total": _now()}
    sys.stdout.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
