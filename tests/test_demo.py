"""The demo pipeline end to end: its metrics are what the code computes, its model is stored."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import Workspace, outputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def demo_module() -> object:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import demo

        yield demo
    finally:
        sys.path.remove(str(EXAMPLES))


def test_demo_metrics_and_best_model(ws: Workspace, demo_module: object, tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "demo.py", ws.root / "demo.py")
    res = ws.argosy("run", "demo.py:breast_cancer", "--output", "json", timeout=300)
    assert res.code == 0, res.stderr
    doc = res.json()
    nodes = [s["node_path"] for s in doc["tasks"]]
    assert nodes == ["extract", "preprocess", "train_logistic", "train_boosting", "evaluate",
                     "evaluate-2", "select_best"]  # fmt: skip

    # The same steps called as plain functions (outside a pipeline) give the same numbers.
    d = demo_module
    data = d.extract()
    prepared = d.preprocess(data)
    logistic = d.train_logistic(prepared.train)
    boosting = d.train_boosting(prepared.train)
    expected = d.select_best(
        logistic, d.evaluate(logistic, prepared.test), boosting, d.evaluate(boosting, prepared.test)
    )
    found = outputs(doc)
    assert found["name"] == expected.name
    assert found["metrics"] == expected.metrics
    assert found["metrics"]["roc_auc"] > 0.95

    # The best model is an artifact that downloads, verifies and predicts like the original.
    model_ref = doc["outputs"]["model"]
    assert model_ref["type"].startswith("sklearn.")
    dest = tmp_path / "model.joblib"
    got = ws.argosy("artifacts", "get", f"{doc['id']}/select_best/model", "--out", str(dest))
    assert got.code == 0, got.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == model_ref["sha256"]
    import joblib

    model = joblib.load(dest)
    features = prepared.test[d.FEATURES]
    assert (model.predict(features) == expected.model.predict(features)).all()

    # train_logistic and train_boosting ran in parallel (overlapping attempt intervals).
    attempts = {s["node_path"]: s["attempts"][0] for s in doc["tasks"]}
    a, b = attempts["train_logistic"], attempts["train_boosting"]
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
