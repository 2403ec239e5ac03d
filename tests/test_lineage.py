"""Lineage of the demo's best model, reproducing a run, and comparing two runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace, outputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, Any], str]:
    """The demo in a git repository, run once; returns the run document and the commit.

    Shared by the tests of this module (each leaves the project as it found it).
    """
    base = tmp_path_factory.mktemp("lineage")
    ws = Workspace(base / "project", base / "state")
    ws.root.mkdir()
    shutil.copy(EXAMPLES / "demo.py", ws.root / "demo.py")
    _git(ws.root, "init", "-q")
    _git(ws.root, "add", "-A")
    _git(ws.root, "commit", "-qm", "demo")
    res = ws.argosy("run", "demo.py:breast_cancer", "--output", "json", timeout=300)
    assert res.code == 0, res.stderr
    return ws, res.json(), _git(ws.root, "rev-parse", "HEAD")


def _find(tree: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found = []
    stack = [tree]
    while stack:
        doc = stack.pop()
        if doc.get("kind") == kind:
            found.append(doc)
        for value in doc.values():
            if isinstance(value, dict):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, dict))
    return found


def test_lineage_of_the_best_model(demo: tuple[Workspace, dict[str, Any], str]) -> None:
    ws, run, commit = demo
    ref = f"{run['id']}/select_best/model"
    res = ws.argosy("lineage", ref, "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["direction"] == "up" and doc["schema_version"] == 1
    tree = doc["artifact"]
    assert tree["sha256"] == run["outputs"]["model"]["sha256"]
    tasks = {t["node_path"]: t for t in _find(tree, "task")}
    assert {"extract", "preprocess", "train_logistic", "train_boosting", "select_best"} <= set(
        tasks
    )
    for task in tasks.values():
        assert task["git"]["commit"] == commit
        assert task["git"]["dirty"] is False
        assert task["digest"] == run["digest"]
        assert task["code"]["package"].startswith("sha256:")
        assert task["environment"]["packages"]["python"]
    assert tasks["train_boosting"]["environment"]["packages"]["scikit-learn"]
    artifacts = {a["ref"].split("/", 1)[1]: a for a in _find(tree, "artifact")}
    listed = ws.argosy("artifacts", "list", run["id"], "--output", "json").json()["artifacts"]
    extract_sha = next(a["sha256"] for a in listed if a["node_path"] == "extract")
    assert artifacts["extract/output"]["sha256"] == extract_sha
    values = {v["value"] for v in _find(tree, "value") if not isinstance(v["value"], dict | list)}
    assert {42, 0.25, 150, 1.0} <= values  # seed, test_fraction, trees, c
    assert tasks["select_best"]["run_parameters"] == run["parameters"]

    text = ws.argosy("lineage", ref)
    assert text.code == 0 and "train_boosting" in text.stdout and commit[:12] in text.stdout
    dot = ws.argosy("lineage", ref, "--output", "dot")
    assert dot.stdout.startswith("digraph lineage {") and "train_logistic" in dot.stdout

    down = ws.argosy("lineage", f"{run['id']}/extract/output", "--down", "--output", "json").json()[
        "artifact"
    ]
    consumers = {t["node_path"] for t in _find(down, "task")}
    assert {
        "preprocess",
        "train_logistic",
        "train_boosting",
        "evaluate",
        "select_best",
    } <= consumers


def test_reproduce_gives_identical_metrics_and_model(
    demo: tuple[Workspace, dict[str, Any], str],
) -> None:
    ws, run, _ = demo
    res = ws.argosy("runs", "reproduce", run["id"], "--output", "json", timeout=300)
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["reproduce_of"] == run["id"] and doc["drift"] == []
    assert doc["tasks"] and all(s["state"] == "succeeded" for s in doc["tasks"]), (
        "reproduce must really re-run"
    )
    assert outputs(doc)["metrics"] == outputs(run)["metrics"]
    assert doc["outputs"]["model"]["sha256"] == run["outputs"]["model"]["sha256"]
    same = doc["identical_outputs"]
    assert {"train_logistic.output", "train_boosting.output"} <= set(same), same
    assert all(same.values()), same
    assert doc["digest"] == run["digest"]


def test_reproduce_refuses_drift_unless_allowed(
    demo: tuple[Workspace, dict[str, Any], str],
) -> None:
    ws, run, _ = demo
    source = ws.root / "demo.py"
    original = source.read_text()
    source.write_text(original.replace("max_depth=2", "max_depth=3"))
    try:
        _check_drift(ws, run)
    finally:
        source.write_text(original)


def _check_drift(ws: Workspace, run: dict[str, Any]) -> None:
    res = ws.argosy("runs", "reproduce", run["id"])
    assert res.code == 2
    assert "drift: step train_boosting: code changed: demo.py::train_boosting" in res.stderr
    assert "--allow-drift" in res.stderr.strip().splitlines()[-1]
    allowed = ws.argosy(
        "runs", "reproduce", run["id"], "--allow-drift", "--output", "json", timeout=300
    )
    assert allowed.code == 0, allowed.stderr
    # what runs is the recorded pipeline version, so the outputs are still identical
    assert allowed.json()["outputs"]["model"]["sha256"] == run["outputs"]["model"]["sha256"]


def test_diff_shows_parameters_and_metrics(demo: tuple[Workspace, dict[str, Any], str]) -> None:
    ws, run, _ = demo
    other = ws.argosy(
        "run", "demo.py:breast_cancer", "-p", "trees=20", "--output", "json", timeout=300
    )
    assert other.code == 0, other.stderr
    res = ws.argosy("runs", "diff", run["id"], other.json()["id"], "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    params = {r["key"]: r for r in doc["parameters"]}
    assert (
        params["trees"]["a"] == 150 and params["trees"]["b"] == 20 and not params["trees"]["same"]
    )
    assert params["seed"]["same"]
    metrics = {r["key"]: r for r in doc["metrics"]}
    assert "evaluate-2.output.roc_auc" in metrics
    assert metrics["evaluate.output.roc_auc"]["same"]  # the logistic model did not change
    rows = {r["key"]: r for r in doc["outputs"]}
    assert not rows["train_boosting.output"]["same"]
    assert rows["train_logistic.output"]["same"]
    text = ws.argosy("runs", "diff", run["id"], other.json()["id"])
    assert "trees" in text.stdout and "roc_auc" in text.stdout


def test_demo_twice_is_fully_cached(demo: tuple[Workspace, dict[str, Any], str]) -> None:
    ws, _, _ = demo
    again = ws.argosy("run", "demo.py:breast_cancer", "--output", "json", timeout=300).json()
    assert {s["state"] for s in again["tasks"]} == {"cached"}
    assert all(s["attempts"] == [] for s in again["tasks"])
