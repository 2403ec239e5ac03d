"""The model registry: register a run's model with its schema (from the training data), metrics
and lineage; promote and demote aliases with a queryable history; the same documents from the
CLI locally, through a server (with its audit log), and from the Python API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Workspace
from tests.server_fixture import start_server

TINY = """
from typing import Annotated

import pandas as pd

from argosy import Metrics, pipeline, serializer, step


@step
def make(n: int = 60, seed: int = 0) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    label = (x[:, 0] + x[:, 1] > 0).astype("int64")
    return pd.DataFrame({"row_id": range(n), "a": x[:, 0], "b": x[:, 1], "label": label})


@step
def fit(train: pd.DataFrame, c: float = 1.0) -> Annotated[object, serializer("joblib")]:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c).fit(train[["a", "b"]], train["label"])


@step
def score(model: Annotated[object, serializer("joblib")], data: pd.DataFrame) -> Metrics:
    return Metrics(accuracy=float(model.score(data[["a", "b"]], data["label"])))


@pipeline
def tiny(c: float = 1.0, seed: int = 0) -> Metrics:
    data = make(seed=seed)
    model = fit(train=data, c=c)
    return score(model=model, data=data)
"""


def _run(ws: Workspace, *args: str) -> str:
    res = ws.argosy("run", "tiny.py:tiny", "-q", "--output", "json", *args, timeout=180)
    assert res.code == 0, res.stderr
    run_id: str = res.json()["id"]
    return run_id


def _ok(ws: Workspace, *args: str) -> Any:
    res = ws.argosy(*args, "--output", "json")
    assert res.code == 0, res.stderr
    return res.json()


def _flow(ws: Workspace, server: list[str]) -> dict[str, Any]:
    """Register two versions, move aliases, read the history: the documents, by step."""
    ws.write(TINY, "tiny")
    first = _run(ws, *server)
    docs: dict[str, Any] = {}
    reg = _ok(ws, "models", "register", "tiny", f"{first}/fit", "--target", "label",
              "--exclude", "row_id", "--description", "first try", *server)  # fmt: skip
    docs["registered"] = reg
    v1 = reg["version"]
    assert reg["created"] is True and v1["version"] == 1
    assert v1["artifact"] == f"{first}/fit/output" and v1["format"] == "joblib"
    assert v1["training_data"] == f"{first}/make/output"
    assert v1["input_schema"]["columns"] == [
        {"name": "a", "type": "float64", "nullable": False},
        {"name": "b", "type": "float64", "nullable": False},
    ]
    assert v1["output_schema"]["columns"] == [{"name": "label", "type": "int64", "nullable": False}]
    assert v1["metrics"]["score.output"]["accuracy"] > 0.9
    assert v1["signature"].startswith("sha256:") and v1["pipeline"] == "tiny"
    again = _ok(ws, "models", "register", "tiny", f"{first}/fit/output", *server)
    assert again["created"] is False and again["version"]["id"] == v1["id"]

    # a column that is not there: exit 2, naming the columns there are
    bad = ws.argosy("models", "register", "other", f"{first}/fit", "--target", "nope", *server)
    assert bad.code == 2 and "no column 'nope'; its columns are: row_id, a, b, label" in bad.stderr

    before = datetime.now(UTC)
    time.sleep(0.2)
    docs["promoted"] = _ok(ws, "models", "promote", "tiny", "1", "--alias", "production",
                           "--reason", "first model", *server)  # fmt: skip
    time.sleep(0.2)
    between = datetime.now(UTC)
    time.sleep(0.2)
    second = _run(ws, "-p", "c=0.05", "-p", "seed=3", *server)
    v2 = _ok(ws, "models", "register", "tiny", f"{second}/fit", "--target", "label",
             "--exclude", "row_id", *server)["version"]  # fmt: skip
    assert v2["version"] == 2 and v2["signature"] == v1["signature"]
    moved = _ok(ws, "models", "promote", "tiny", "2", "--alias", "production", "-m", "better",
                *server)  # fmt: skip
    assert (moved["version"], moved["previous_version"], moved["reason"]) == (2, 1, "better")
    _ok(ws, "models", "promote", "tiny", "1", "--alias", "staging", *server)
    demoted = _ok(ws, "models", "demote", "tiny", "--alias", "staging", "-m", "retired", *server)
    assert (demoted["action"], demoted["version"], demoted["previous_version"]) == (
        "demote", None, 1
    )  # fmt: skip

    history = _ok(ws, "models", "history", "tiny", *server)["events"]
    assert [(e["alias"], e["action"], e["version"]) for e in history] == [
        ("staging", "demote", None), ("staging", "promote", 1), ("production", "promote", 2),
        ("production", "promote", 1),
    ]  # fmt: skip
    assert all(e["by"] and e["at"] for e in history)
    assert history[-1]["reason"] == "first model"
    # "what was in production then?"
    at = {
        "before": before, "between": between, "now": datetime.now(UTC),
    }  # fmt: skip
    states = {
        k: _ok(ws, "models", "history", "tiny", "--alias", "production", "--at", t.isoformat(),
               *server)["version"]
        for k, t in at.items()
    }  # fmt: skip
    assert states == {"before": None, "between": 1, "now": 2}
    text = ws.argosy("models", "history", "tiny", "--alias", "production", "--at",
                     between.isoformat(), *server)  # fmt: skip
    assert "version 1" in text.stdout and "first model" in text.stdout

    model = _ok(ws, "models", "show", "tiny", *server)
    assert model["aliases"] == {"production": 2} and model["latest_version"] == 2
    assert [v["version"] for v in model["versions"]] == [2, 1]
    assert _ok(ws, "models", "show", "tiny@production", *server)["id"] == v2["id"]
    assert _ok(ws, "models", "show", "tiny@1", *server)["description"] == "first try"
    missing = ws.argosy("models", "show", "tiny@staging", *server)
    assert missing.code == 2 and "has no alias 'staging'; its aliases are: production" in (
        missing.stderr
    )
    docs["model"] = model
    docs["history"] = history
    return docs


def _shape(doc: Any) -> Any:
    """A document's structure (keys and value types), not its values."""
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_shape(doc[0])] if doc else []
    return type(doc).__name__


def test_registry_locally_and_on_a_server_give_the_same_documents(
    ws: Workspace, tmp_path: Path
) -> None:
    local = _flow(ws, [])
    server = start_server(tmp_path / "server")
    try:
        remote_ws = Workspace(tmp_path / "remote", tmp_path / "remote-state")
        remote_ws.root.mkdir()
        remote = _flow(remote_ws, ["--server", server.url])
        assert _shape(remote) == _shape(local)
        # every change is in the server's audit log, with its action
        audit = httpx.get(f"{server.api}/audit", params={"limit": 200}, timeout=30).json()
        actions = [e["action"] for e in audit["items"]]
        assert actions.count("model.write") >= 3 and actions.count("model.promote") == 4
    finally:
        server.stop(timeout=20)


def test_python_api(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import argosy

    ws.write(TINY, "tiny")
    run_id = _run(ws)
    monkeypatch.setenv("ARGOSY_HOME", str(ws.home))
    backend = argosy.connect()
    try:
        run = argosy.Run(run_id)
        version = argosy.register_model(
            "tiny", run["fit"].outputs["output"], target="label", exclude=["row_id"]
        )
        assert version.version == 1 and version.input_schema is not None
        model = argosy.Model("tiny")
        event = model.promote(1, "production", reason="api")
        assert event.by and event.reason == "api"
        assert model.aliases == {"production": 1}
        assert [m.name for m in argosy.models()] == ["tiny"]
        estimator = model.load("production")
        assert list(estimator.feature_names_in_) == ["a", "b"]
        assert model.alias_at("production").version == 1
        assert [e.action for e in model.history()] == ["promote"]
    finally:
        backend.close()
