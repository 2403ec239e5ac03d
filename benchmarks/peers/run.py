"""The peer benchmark suite: the same workloads in Argosy, a bare-subprocess baseline and, each
in a virtualenv of its own made here, Kubeflow Pipelines' local runner, Metaflow, Prefect and
Dagster — in one run, whole-process wall times, medians and ratios.

    .venv/bin/python benchmarks/peers/run.py                       # every peer, 3 repeats
    .venv/bin/python benchmarks/peers/run.py --peers kfp,metaflow --workloads W1,W4 --repeats 5

Workloads (the same trivial logic in every tool, so orchestration dominates):
W1 a chain of 4 steps passing a dict; W2 produce -> 16 x work -> join; W3 a 100 MB float64
array between two steps; W4 a chain of 50 steps; W5 a cache-hit re-run of W1; W6 six steps
with pandas and scikit-learn (load, clean, scale, split, fit, evaluate). Each peer runs its
fastest configuration that still isolates each step in a process of its own, as its
documentation describes it (see each ``workloads/*_w.py``). Writes
``benchmarks/peers/RESULTS.md`` and ``results.json``; see benchmarks/peers/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "workloads"
PYTHON = sys.executable
ARGOSY = str(Path(PYTHON).parent / "argosy")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
TITLES = {
    "W1": "chain of 4 (dicts)",
    "W2": "1 -> 16 -> 1 fan-out",
    "W3": "100 MB array A -> B",
    "W4": "chain of 50",
    "W5": "cache-hit re-run of W1",
    "W6": "6 steps, pandas + scikit-learn",
}
DATA = ["numpy", "pandas", "pyarrow", "scikit-learn"]


@dataclass
class Peer:
    name: str
    label: str
    packages: list[str] = field(default_factory=list)  # its own virtualenv: what goes in it
    script: str | None = None
    supports: tuple[str, ...] = WORKLOADS
    note: str = ""
    python: str = PYTHON
    env: dict[str, str] = field(default_factory=dict)

    def command(self, workload: str, work: Path) -> list[str]:
        if self.name == "argosy":
            return [ARGOSY, "run", f"{WORK / 'argosy_pipelines.py'}:{workload.lower()}"]
        assert self.script is not None
        return [self.python, str(WORK / self.script), workload, str(work)]


PEERS = [
    Peer("bare", "bare subprocesses", script="bare.py",
         note="each step a fresh `python -c`, data through files; no orchestration"),
    Peer("argosy", "Argosy", note="`argosy run` (warm workers on, each step its own process)"),
    Peer("kfp", "kfp.local", ["kfp", *DATA], "kfp_w.py",
         note="`SubprocessRunner(use_venv=False)`, components with `install_kfp_package=False`"),
    Peer("metaflow", "Metaflow", ["metaflow", *DATA], "metaflow_w.py",
         note="local runtime; W5 is `resume end`"),
    Peer("prefect", "Prefect", ["prefect", *DATA], "prefect_w.py",
         note="`ProcessPoolTaskRunner(max_workers=2)` against a local `prefect server`"),
    Peer("dagster", "Dagster", ["dagster", *DATA], "dagster_w.py",
         ("W1", "W2", "W3", "W4", "W6"), note="`multiprocess_executor`; no step cache (no W5)"),
]  # fmt: skip


def log(message: str) -> None:
    sys.stderr.write(f"[peers {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# -- virtualenvs ---------------------------------------------------------------------------------
def _uv_env() -> dict[str, str]:
    """pip's configuration (extra indexes, find-links, constraints, certificates) for uv."""
    env = dict(os.environ)
    listed = subprocess.run([PYTHON, "-m", "pip", "config", "list"], capture_output=True,
                            text=True).stdout  # fmt: skip
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        value = value.strip().strip("'")
        name = key.split(".", 1)[-1]
        if name == "extra-index-url":
            env["UV_INDEX"] = value
            env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
        elif name == "find-links":
            env["UV_FIND_LINKS"] = value
        elif name == "constraint":
            env["UV_CONSTRAINT"] = value
        elif name == "cert":
            env["SSL_CERT_FILE"] = value
    return env


def make_venv(peer: Peer, root: Path) -> str | None:
    """The peer's interpreter in a virtualenv of its own (made once), or None if it cannot be
    installed here."""
    folder = root / peer.name
    python = folder / "bin" / "python"
    stamp = folder / ".argosy-peers"
    wanted = " ".join(peer.packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    log(f"{peer.name}: making its virtualenv in {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        subprocess.run([PYTHON, "-m", "uv", "venv", "-q", "--python", PYTHON, str(folder)],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([PYTHON, "-m", "uv", "pip", "install", "-q", "--python", str(python),
                        *peer.packages], check=True, capture_output=True, env=_uv_env(),
                       timeout=900)  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        log(f"{peer.name}: not installed ({stderr.decode(errors='replace')[-300:]})")
        return None
    stamp.write_text(wanted)
    return str(python)


def version_of(peer: Peer) -> str:
    if peer.name == "bare":
        return f"Python {platform.python_version()}"
    dist = "argosy" if peer.name == "argosy" else peer.name
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([peer.python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "?"


# -- Prefect's server ----------------------------------------------------------------------------
def start_prefect(peer: Peer, work: Path) -> subprocess.Popen[bytes] | None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-server"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false"}  # fmt: skip
    prefect = str(Path(peer.python).parent / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{url}/health", timeout=2):
                peer.env.update(PREFECT_API_URL=url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    log("prefect: its server did not start; Prefect is left out")
    return None


# -- measuring -----------------------------------------------------------------------------------
def run_once(peer: Peer, workload: str, work: Path, home: Path, timeout: float) -> float | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env.update(peer.env, ARGOSY_HOME=str(home), USERNAME="bench")
    t0 = time.perf_counter()
    try:
        done = subprocess.run(peer.command(workload, work), cwd=work, env=env,
                              capture_output=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        log(f"{peer.name} {workload}: over {timeout:.0f} s")
        return None
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        log(f"{peer.name} {workload}: exited {done.returncode}: {' | '.join(tail)}")
        return None
    return wall


def measure(peers: list[Peer], workloads: list[str], repeats: int, scratch: Path,
            timeout: float) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """walls[workload][peer]: one warm-up (and priming, for W5) run, then ``repeats`` rounds,
    the peers in turn within each round (so they share the machine's load)."""
    walls: dict[str, dict[str, list[float]]] = {}
    for workload in workloads:
        here = [p for p in peers if workload in p.supports]
        walls[workload] = {p.name: [] for p in here}
        failed: set[str] = set()
        for p in here:
            work, home = scratch / p.name / "work", scratch / p.name / "home"
            work.mkdir(parents=True, exist_ok=True)
            if workload == "W5":  # prime the cache (Metaflow: the run that resume clones)
                prime = "W1" if p.name in ("bare", "metaflow") else "W5"
                run_once(p, prime, work, home, timeout)
            if run_once(p, workload, work, home, timeout) is None:
                failed.add(p.name)
        for r in range(repeats):
            log(f"{workload} ({TITLES[workload]}): round {r + 1} of {repeats}")
            for p in here:
                if p.name in failed:
                    continue
                wall = run_once(p, workload, scratch / p.name / "work",
                                scratch / p.name / "home", timeout)  # fmt: skip
                if wall is None:
                    failed.add(p.name)
                else:
                    walls[workload][p.name].append(wall)
    return walls


# -- report --------------------------------------------------------------------------------------
def report(out: Path, json_out: Path, peers: list[Peer], walls: dict[str, dict[str, list[float]]],
           command: str, repeats: int, load: tuple[float, float]) -> None:  # fmt: skip
    med = {w: {p: statistics.median(v) for p, v in by.items() if v} for w, by in walls.items()}
    shown = [p for p in peers if p.name != "bare"]
    lines = [
        "# Argosy beside its peers",
        "",
        "Generated by `benchmarks/peers/run.py`; do not edit by hand. Whole-process wall time, "
        f"median of {repeats} after a warm-up, every tool and the bare baseline measured in turn "
        "in each round (they share the machine's load). *ratio* = the tool's time / Argosy's "
        "(above 1: Argosy is faster). See benchmarks/peers/README.md.",
        "",
        f"Command: `{command}`; {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; "
        f"{os.cpu_count()} CPUs; load average (1 min) before / after: {load[0]:.2f} / "
        f"{load[1]:.2f}; commit {_commit()}.",
        "",
        "| workload | bare | " + " | ".join(f"{p.label} {version_of(p)}" for p in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for w in walls:
        argosy = med[w].get("argosy")
        cells = [f"{med[w]['bare']:.3f} s" if "bare" in med[w] else "—"]
        for p in shown:
            value = med[w].get(p.name)
            if w not in p.supports:
                cells.append("not supported")
            elif value is None:
                cells.append("failed")
            elif p.name == "argosy" or argosy is None:
                cells.append(f"{value:.3f} s")
            else:
                cells.append(f"{value:.3f} s ({value / argosy:.2f}x)")
        lines.append(f"| {w} {TITLES[w]} | " + " | ".join(cells) + " |")
    lines += ["", "How each tool runs:", ""]
    lines += [f"- **{p.label}**: {p.note}" for p in peers]
    behind = [f"{w} vs {p.label}" for w in walls for p in shown
              if p.name != "argosy" and "argosy" in med[w] and p.name in med[w]
              and med[w][p.name] < med[w]["argosy"]]  # fmt: skip
    lines += ["", "Argosy is behind on: " + (", ".join(behind) if behind else "none") + "."]
    out.write_text("\n".join(lines) + "\n")
    json_out.write_text(json.dumps({"command": command, "repeats": repeats, "load": load,
                                    "walls": walls, "medians": med}, indent=2) + "\n")  # fmt: skip


def _commit() -> str:
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return found or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="kfp,metaflow,prefect,dagster",
                        help="which peers beside Argosy and the baseline (comma-separated)")  # fmt: skip
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "argosy-peers",
                        help="where the peers' virtualenvs are made (once)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json-out", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    wanted = {"bare", "argosy", *filter(None, args.peers.split(","))}
    peers = [p for p in PEERS if p.name in wanted]
    for p in peers:
        if p.packages:
            python = make_venv(p, args.venvs)
            if python is None:
                wanted.discard(p.name)
            else:
                p.python = python
    peers = [p for p in peers if p.name in wanted]
    given = sys.argv[1:] if argv is None else argv
    command = " ".join([".venv/bin/python benchmarks/peers/run.py", *given])
    scratch = Path(tempfile.mkdtemp(prefix="argosy-peers-"))
    server = None
    load_before = os.getloadavg()[0]
    try:
        prefect = next((p for p in peers if p.name == "prefect"), None)
        if prefect is not None:
            server = start_prefect(prefect, scratch)
            if server is None:
                peers.remove(prefect)
        workloads = [w for w in args.workloads.split(",") if w in WORKLOADS]
        walls = measure(peers, workloads, max(1, args.repeats), scratch, args.timeout)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)
    report(args.out, args.json_out, peers, walls, command, max(1, args.repeats),
           (load_before, os.getloadavg()[0]))  # fmt: skip
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
