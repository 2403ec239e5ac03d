"""The prediction service and per-step environments.

    .venv/bin/python benchmarks/serving.py                 # the demo's best model
    .venv/bin/python benchmarks/serving.py --model tiny    # a 2-feature logistic regression (fast)
    .venv/bin/python benchmarks/serving.py --json

Prediction (``argosy models serve MODEL@production --insecure``, a real process on loopback,
its default single Uvicorn worker; the client keeps its connection alive and sends JSON records):

- latency p50/p99 of sequential requests of 1 row and of 1,000 rows (the service's own time plus
  HTTP and JSON on loopback, as a caller sees it);
- throughput with 4 concurrent clients for a few seconds: requests/s (1 row) and rows/s
  (1,000 rows).

Environment creation (``@step(packages=[...])``, ``server/environments.py`` with uv): the time to
make a step's environment with one package from a local wheel — cold with an empty uv cache,
cold with uv's cache warm (a second package set), and cached (the environment exists).

Prints a Markdown table, or with ``--json`` one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

TINY = textwrap.dedent(
    """
    from typing import Annotated
    import pandas as pd
    from argosy import pipeline, serializer, step

    @step
    def make() -> pd.DataFrame:
        import numpy as np
        rng = np.random.default_rng(0)
        x = rng.normal(size=(2000, 2))
        return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": (x.sum(axis=1) > 0).astype("int64")})

    @step
    def fit(train: pd.DataFrame) -> Annotated[object, serializer("joblib")]:
        from sklearn.linear_model import LogisticRegression
        return LogisticRegression().fit(train[["a", "b"]], train["label"])

    @pipeline
    def tiny():
        fit(train=make())
    """
)
LISTENING = re.compile(r"argosy models serve: \S+ version \d+ on (http://\S+)")


def _cli(
    home: Path, cwd: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARGOSY_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"argosy {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done


def prepare_model(work: Path, model: str) -> tuple[Path, list[dict[str, Any]]]:
    """Run the pipeline, register and promote its model; (state folder, 1,000 request rows)."""
    home = work / "state"
    if model == "demo":
        shutil.copy(ROOT / "examples" / "demo.py", work / "demo.py")
        run = json.loads(
            _cli(home, work, "run", "demo.py:breast_cancer", "-q", "-o", "json").stdout
        )
        artifact = f"{run['id']}/select_best/model"
        extra = ["--target", "malignant", "--exclude", "patient_id"]
        data_ref = f"{run['id']}/preprocess/test"
    else:
        (work / "tiny_bench.py").write_text(TINY)
        run = json.loads(_cli(home, work, "run", "tiny_bench.py:tiny", "-q", "-o", "json").stdout)
        artifact, extra, data_ref = f"{run['id']}/fit", ["--target", "label"], f"{run['id']}/make"
    _cli(home, work, "models", "register", "bench", artifact, *extra)
    _cli(home, work, "models", "promote", "bench", "1", "--alias", "production")
    import pandas as pd

    out = work / "rows.parquet"
    _cli(home, work, "artifacts", "get", data_ref, "--out", str(out))
    frame = pd.read_parquet(out)
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]  # fmt: skip
    while len(rows) < 1000:
        rows = rows + rows
    return home, rows[:1000]


def serve(home: Path, work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    log = work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "argosy.cli.main", "models", "serve", "bench@production",
             "--port", "0", "--insecure"],
            cwd=work, env={**os.environ, "ARGOSY_HOME": str(home)}, stdout=out, stderr=out,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (found := LISTENING.search(log.read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return found.group(1), proc


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency(url: str, body: bytes, n: int) -> dict[str, float]:
    headers = {"Content-Type": "application/json"}
    times = []
    with httpx.Client(timeout=60) as http:
        for _ in range(max(5, n // 10)):  # warm-up
            http.post(f"{url}/predict", content=body, headers=headers).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            http.post(f"{url}/predict", content=body, headers=headers).raise_for_status()
            times.append(time.perf_counter() - started)
    return {"p50_ms": _pct(times, 50) * 1000, "p99_ms": _pct(times, 99) * 1000,
            "mean_ms": statistics.fmean(times) * 1000, "requests": n}  # fmt: skip


def throughput(url: str, body: bytes, seconds: float, clients: int) -> float:
    """Requests per second with ``clients`` concurrent keep-alive clients."""
    headers = {"Content-Type": "application/json"}
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                http.post(f"{url}/predict", content=body, headers=headers).raise_for_status()
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def prediction(model: str, seconds: float, clients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="argosy-bench-serving-") as tmp:
        work = Path(tmp)
        home, rows = prepare_model(work, model)
        url, proc = serve(home, work)
        try:
            one = json.dumps({"records": rows[:1]}).encode()
            many = json.dumps({"records": rows}).encode()
            result = {
                "1 row": latency(url, one, 500),
                "1000 rows": latency(url, many, 60),
            }
            result["1 row"]["throughput_rps"] = throughput(url, one, seconds, clients)
            rps = throughput(url, many, seconds, clients)
            result["1000 rows"]["throughput_rps"] = rps
            result["1000 rows"]["throughput_rows_s"] = rps * 1000
            result["1 row"]["throughput_rows_s"] = result["1 row"]["throughput_rps"]
        finally:
            proc.terminate()
            proc.wait(30)
    return result


def _manifest(store: Any, base: dict[str, Any], version: str) -> str:
    """Store the manifest of a step needing ``argosy-benchpkg==version``; its digest."""
    import hashlib

    from argosy.spec.environment import manifest_bytes

    raw = manifest_bytes({**base, "requirements": [f"argosy-benchpkg=={version}"]})
    store.put_bytes(raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def environments(repeats: int) -> dict[str, float]:
    """Seconds to make a one-package step environment: cold (empty uv cache), cold with a
    warm uv cache (another package set), and cached."""
    from tests.test_step_environments import build_wheel

    from argosy.server.environments import Environments
    from argosy.spec.environment import environment_manifest
    from argosy.stores.artifacts.blobs import open_artifact_store

    cold, warm, cached = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="argosy-bench-env-") as tmp:
            work = Path(tmp)
            (work / "wheels").mkdir()
            build_wheel(work / "wheels", "argosy-benchpkg", "0.1", 1)
            build_wheel(work / "wheels", "argosy-benchpkg", "0.2", 2)
            os.environ.update(UV_FIND_LINKS=str(work / "wheels"), UV_OFFLINE="1",
                              UV_CACHE_DIR=str(work / "uv-cache"))  # fmt: skip
            store = open_artifact_store(str(work / "blobs"), "default", {})
            base = environment_manifest(work / "cache")
            envs = Environments(work / "environments", work / "cache")

            first, second = (_manifest(store, base, v) for v in ("0.1", "0.2"))
            started = time.perf_counter()
            envs.prepare(first, store)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            envs.prepare(second, store)
            warm.append(time.perf_counter() - started)
            started = time.perf_counter()
            envs.prepare(first, store)
            cached.append(time.perf_counter() - started)
    for key in ("UV_FIND_LINKS", "UV_OFFLINE", "UV_CACHE_DIR"):
        os.environ.pop(key, None)
    return {"cold_s": statistics.median(cold), "cold_warm_uv_cache_s": statistics.median(warm),
            "cached_s": statistics.median(cached), "repeats": repeats}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["demo", "tiny"], default="demo")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--env-repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    doc = {
        "model": args.model,
        "prediction": prediction(args.model, args.seconds, args.clients),
        "environments": environments(args.env_repeats),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"prediction service ({args.model} model, {args.clients} clients for throughput)\n")
    print("| request | p50 | p99 | throughput |")
    print("|---|---|---|---|")
    for name, r in doc["prediction"].items():
        print(f"| {name} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
              f"{r['throughput_rps']:.0f} req/s ({r['throughput_rows_s']:.0f} rows/s) |")  # fmt: skip
    e = doc["environments"]
    print("\nstep environment with one package (median of", e["repeats"], "runs)\n")
    print("| cold (empty uv cache) | cold (warm uv cache) | cached |")
    print("|---|---|---|")
    print(
        f"| {e['cold_s']:.2f} s | {e['cold_warm_uv_cache_s']:.2f} s | {e['cached_s'] * 1000:.2f} ms |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
