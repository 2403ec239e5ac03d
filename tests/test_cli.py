"""The CLI contract: JSON documents, references, logs, artifacts, secrets and environment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.conftest import Workspace, outputs

CONTRACT = """
from typing import Annotated, NamedTuple
import pandas as pd
from argosy import step, pipeline, serializer

class Split(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame

@step
def extract(rows: int) -> pd.DataFrame:
    print(f"extracting {rows} rows")
    return pd.DataFrame({"x": range(rows), "y": [i % 2 for i in range(rows)]})

@step(cpu=1, memory="1Gi")
def split(data: pd.DataFrame, seed: int = 0) -> Split:
    return Split(data.iloc[::2], data.iloc[1::2])

@step(cpu=1, memory="1Gi", pool="cpu", retries=2, retry_backoff=0.1, timeout=600,
      cache=True, cache_version="1", env={"OMP_NUM_THREADS": "2"})
def train(train: pd.DataFrame, c: float = 1.0) -> Annotated[object, serializer("joblib")]:
    import os
    assert os.environ["OMP_NUM_THREADS"] == "2"
    return {"weight": float(train.y.mean()) * c}

@step
def evaluate(model: object, test: pd.DataFrame) -> float:
    return round(model["weight"] + len(test), 3)

@pipeline
def demo(rows: int = 500, c: float = 1.0) -> float:
    parts = split(data=extract(rows=rows))
    model = train(train=parts.train, c=c)
    return evaluate(model=model, test=parts.test)
"""


def test_run_json_document_follows_the_contract(ws: Workspace) -> None:
    path = ws.write(CONTRACT)
    res = ws.argosy("run", f"{path}:demo", "-p", "rows=1000", "--output", "json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert doc["status"] == "succeeded"
    assert doc["pipeline"] == "demo"
    assert doc["digest"].startswith("sha256:") and len(doc["digest"]) == 71
    assert doc["id"] and len(doc["id"]) == 26
    assert doc["parameters"] == {"rows": 1000, "c": 1.0}
    assert outputs(doc) == {"output": 500.0}
    train = next(s for s in doc["tasks"] if s["node_path"] == "train")
    assert train["step"] == "train" and train["state"] == "succeeded"
    attempt = train["attempts"][0]
    assert attempt["number"] == 1 and attempt["state"] == "succeeded" and attempt["reason"] is None
    assert attempt["started_at"] and attempt["finished_at"]
    assert attempt["node_pool"] == "cpu"
    assert attempt["cpu_time"] > 0 and attempt["peak_memory"] > 0
    # progress went to stderr, not stdout
    assert "extract" in res.stderr


def test_runs_list_show_logs_and_artifacts(ws: Workspace, tmp_path: Path) -> None:
    path = ws.write(CONTRACT)
    run = ws.argosy("run", str(path), "-p", "rows=10", "--output", "json").json()
    run_id = run["id"]

    listed = ws.argosy("runs", "list", "--output", "json").json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    assert listed["runs"][0]["status"] == "succeeded"
    assert ws.argosy("runs", "list", "--status", "failed", "--output", "json").json() == {
        "runs": []
    }

    shown = ws.argosy("runs", "show", run_id[:8], "--output", "json").json()
    assert shown["id"] == run_id
    split = next(s for s in shown["tasks"] if s["node_path"] == "split")
    assert set(split["outputs"]) == {"train", "test"}
    assert split["inputs"]["seed"] == {"value": 0}
    text = ws.argosy("runs", "show", run_id)
    assert text.code == 0 and "evaluate" in text.stdout

    logs = ws.argosy("logs", run_id, "extract", "--output", "json")
    entries = logs.json()["lines"]
    assert any(e["line"] == "extracting 10 rows" and e["stream"] == "out" for e in entries)
    assert all(e["node_path"] == "extract" and e["attempt"] == 1 and e["time"] for e in entries)
    assert "extracting 10 rows" in ws.argosy("logs", run_id).stdout

    arts = ws.argosy("artifacts", "list", run_id, "--output", "json").json()["artifacts"]
    by_ref = {a["ref"]: a for a in arts}
    ref = f"{run_id}/split/train"
    assert by_ref[ref]["type"] == "pandas.DataFrame" and by_ref[ref]["format"] == "parquet"
    dest = tmp_path / "train.parquet"
    got = ws.argosy("artifacts", "get", ref, "--out", str(dest))
    assert got.code == 0, got.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == by_ref[ref]["sha256"]
    import pandas as pd

    assert list(pd.read_parquet(dest).x) == [0, 2, 4, 6, 8]
    by_id = tmp_path / "by-id.parquet"
    assert ws.argosy("artifacts", "get", by_ref[ref]["id"], "--out", str(by_id)).code == 0
    assert by_id.read_bytes() == dest.read_bytes()


def test_secrets_reach_the_step_but_not_the_logs(ws: Workspace) -> None:
    path = ws.write("""
        import os
        from argosy import step, pipeline

        @step(secrets=["WAREHOUSE_TOKEN", "FROM_FILE"])
        def connect() -> int:
            print("token is", os.environ["WAREHOUSE_TOKEN"])
            print("file secret is", os.environ["FROM_FILE"])
            assert "UNRELATED_VARIABLE" not in os.environ  # allow-listed environment only
            return len(os.environ["WAREHOUSE_TOKEN"])

        @pipeline
        def p() -> int:
            return connect()
    """)
    ws.home.mkdir(parents=True, exist_ok=True)
    (ws.home / "secrets.env").write_text("# local secrets\nFROM_FILE='s3cr3t-from-file'\n")
    env = {"WAREHOUSE_TOKEN": "hunter2-token", "UNRELATED_VARIABLE": "x"}
    res = ws.argosy("run", str(path), "--output", "json", env=env)
    assert res.code == 0, res.stderr
    assert outputs(res.json()) == {"output": len("hunter2-token")}
    logs = ws.argosy("logs", res.json()["id"]).stdout
    assert "token is ***" in logs and "file secret is ***" in logs
    assert "hunter2-token" not in logs and "s3cr3t-from-file" not in logs
    assert "hunter2-token" not in ws.argosy("runs", "show", res.json()["id"], "-o", "json").stdout


def test_gpu_steps_get_distinct_devices(ws: Workspace) -> None:
    path = ws.write("""
        import os, time
        from argosy import step, pipeline

        @step(gpu=1, cpu=0.5)
        def on_gpu(i: int) -> str:
            time.sleep(0.5)
            return os.environ["CUDA_VISIBLE_DEVICES"]

        @step(cpu=0.5)
        def no_gpu() -> str:
            return os.environ["CUDA_VISIBLE_DEVICES"]

        @pipeline
        def p() -> dict:
            return {"a": on_gpu(i=1), "b": on_gpu(i=2), "none": no_gpu()}
    """)
    # This machine has no GPU: --max-gpus declares two, to check how devices are assigned.
    res = ws.argosy("run", str(path), "--max-gpus", "2", "--output", "json")
    assert res.code == 0, res.stderr
    out = outputs(res.json())
    assert sorted([out["a"], out["b"]]) == ["0", "1"]
    assert out["none"] == ""


def test_help_lists_the_commands(ws: Workspace) -> None:
    """(What ``--help`` imports: test_spec.py::test_help_imports_no_heavy_library.)"""
    res = ws.argosy("--help")
    assert res.code == 0
    for command in ("run", "runs", "logs", "artifacts", "compile"):
        assert command in res.stdout
