"""CI/CD: the commands of docs/ci-cd.md's GitHub Actions workflow and Jenkinsfile, run as
written against a live server (OIDC, an editor API token); run names, tags, descriptions and
their filters; ``--param-file``; ``argosy runs wait`` exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Workspace
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import oidc_env, start_server

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"
VENV_BIN = Path(sys.executable).parent


def test_the_docs_show_the_ci_files_verbatim() -> None:
    doc = (ROOT / "docs" / "ci-cd.md").read_text()
    for name in ("github-workflow.yml", "Jenkinsfile", "params.yaml", "gate.py"):
        assert (CI / name).read_text() in doc, f"docs/ci-cd.md does not show {name} as it is"


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip


def _jenkins_blocks(text: str) -> list[tuple[str, str]]:
    """(stage, shell script) of each stage's ``sh '...'`` / ``sh '''...'''`` step."""
    found = []
    for stage, body in re.findall(r"stage\('([^']+)'\)\s*\{(.*?)\n    \}", text, flags=re.S):
        for block in re.findall(r"sh '''(.*?)'''", body, flags=re.S):
            found.append((stage, block))
        for line in re.findall(r"sh '([^']*)'", body):
            found.append((stage, line))
    return found


def test_the_ci_workflows_run_against_a_live_server(
    oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    from argosy.client.client import Client

    server = start_server(tmp_path / "server", oidc_env(oidc_issuer.issuer))
    try:
        admin = Client(
            server.url, token=oidc_issuer.token(sub="root", groups=["platform-admins"]),
            tenant="ml",
        )  # fmt: skip
        admin.create_tenant("ml")
        token = admin.create_token("ci", "editor", 1).token
        repo = tmp_path / "repo"
        (repo / "examples").mkdir(parents=True)
        shutil.copy(ROOT / "examples" / "demo.py", repo / "examples" / "demo.py")
        shutil.copytree(CI, repo / "examples" / "ci")
        (repo / ".venv").symlink_to(VENV_BIN.parent)  # the Jenkinsfile's '. .venv/bin/activate'
        base = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
        base.update(
            PATH=f"{VENV_BIN}:{os.environ['PATH']}", ARGOSY_HOME=str(tmp_path / "ci-state"),
            ARGOSY_SERVER=server.url, ARGOSY_TENANT="ml", ARGOSY_TOKEN=token,
        )  # fmt: skip
        viewer = Client(server.url, token=token, tenant="ml")

        # GitHub Actions: every run step of the deploy job (Argosy is installed already)
        workflow = yaml.safe_load((CI / "github-workflow.yml").read_text())
        env = {**base, "GITHUB_SHA": "1" * 40, "GITHUB_RUN_NUMBER": "7"}
        steps = [s for s in workflow["jobs"]["deploy"]["steps"] if "run" in s]
        assert steps[0]["name"] == "Install Argosy"
        for step in steps[1:]:
            done = _run(step["run"], repo, env)
            assert done.returncode == 0, f"{step['name']}:\n{done.stdout}\n{done.stderr}"
        run = json.loads((repo / "run.json").read_text())
        assert run["status"] == "succeeded" and run["name"] == "ci-7"
        assert run["tags"] == {"git_sha": "1" * 40, "trigger": "ci"}
        assert run["parameters"]["trees"] == 60  # from the parameter file
        assert [v.tags for v in viewer.list_versions("breast_cancer")] == [["1" * 40]]
        tagged = list(viewer.list_runs(tags={"git_sha": "1" * 40}))
        assert [r.id for r in tagged] == [run["id"]]
        assert list(viewer.list_runs(tags={"git_sha": "2" * 40})) == []
        staging = viewer.get_model_version("breast-cancer", "staging")
        assert staging.version == 1 and staging.artifact == f"{run['id']}/select_best/model"
        assert staging.description == f"commit {'1' * 40}"

        # Jenkins: every sh block after Install and Test, with Jenkins' variables
        env = {**base, "GIT_COMMIT": "2" * 40, "BUILD_NUMBER": "8"}
        blocks = _jenkins_blocks((CI / "Jenkinsfile").read_text())
        assert [s for s, _ in blocks][:2] == ["Install", "Test"]
        for stage, script in blocks[2:]:
            done = _run(script, repo, env)
            assert done.returncode == 0, f"{stage}:\n{done.stdout}\n{done.stderr}"
        again = json.loads((repo / "run.json").read_text())
        assert again["name"] == "ci-8" and again["tags"]["git_sha"] == "2" * 40
        history = viewer.model_history("breast-cancer", "staging")
        assert [(e.version, e.reason) for e in history] == [
            (2, f"CI build 8, commit {'2' * 40}"), (1, f"CI build 7, commit {'1' * 40}")
        ]  # fmt: skip

        # the gate fails the build below its threshold
        gate = _run("python examples/ci/gate.py run.json 1.01", repo, env)
        assert gate.returncode == 1 and "ROC AUC" in gate.stdout
    finally:
        server.stop(timeout=20)


QUICK = """
import time
from argosy import pipeline, step

@step
def add(x: int = 1, y: float = 0.5, word: str = "a") -> float:
    return x + y

@step
def slow(seconds: float) -> None:
    time.sleep(seconds)

@step
def boom() -> None:
    raise RuntimeError("boom")

@pipeline
def quick(x: int = 1, y: float = 0.5, word: str = "a") -> float:
    return add(x=x, y=y, word=word)

@pipeline
def sleepy(seconds: float = 30.0):
    slow(seconds=seconds)

@pipeline
def failing():
    boom()
"""


def _json(ws: Workspace, *args: str) -> Any:
    res = ws.argosy(*args, "--output", "json")
    assert res.code == 0, res.stderr
    return res.json()


def test_param_files_labels_and_filters_locally(ws: Workspace) -> None:
    ws.write(QUICK, "quick")
    (ws.root / "p.yaml").write_text("x: 3\ny: 1.5\nword: from-file\n")
    (ws.root / "p.json").write_text(json.dumps({"x": 10}))
    run = _json(ws, "run", "quick.py:quick", "-q", "--param-file", "p.yaml", "-p", "x=4",
                "--name", "nightly", "--tag", "team=ml", "--tag", "env=dev",
                "--description", "a labelled run")  # fmt: skip
    assert run["parameters"] == {"x": 4, "y": 1.5, "word": "from-file"}  # -p wins over the file
    assert (run["name"], run["tags"], run["description"]) == (
        "nightly", {"env": "dev", "team": "ml"}, "a labelled run"
    )  # fmt: skip
    other = _json(ws, "run", "quick.py:quick", "-q", "--param-file", "p.json", "--tag", "team=ml")
    assert other["parameters"]["x"] == 10 and other["name"] is None
    listed = _json(ws, "runs", "list", "--tag", "team=ml")["runs"]
    assert [r["id"] for r in listed] == [other["id"], run["id"]]
    both = _json(ws, "runs", "list", "--tag", "team=ml", "--tag", "env=dev")["runs"]
    assert [r["id"] for r in both] == [run["id"]]
    named = _json(ws, "runs", "list", "--name", "nightly")["runs"]
    assert [r["id"] for r in named] == [run["id"]]
    text = ws.argosy("runs", "list", "--tag", "env=dev", "--wide")
    assert "nightly" in text.stdout and "env=dev team=ml" in text.stdout

    # mistakes are usage errors (exit 2) that say what to write
    (ws.root / "list.json").write_text("[1, 2]")
    (ws.root / "typed.yaml").write_text("x: not-a-number\n")
    cases = {
        ("--param-file", "list.json"): "must hold a mapping of parameter names to values",
        ("--param-file", "missing.yaml"): "cannot read the parameter file",
        ("--param-file", "typed.yaml"): "'x'",
        ("--tag", "novalue"): "is not KEY=VALUE",
        ("--tag", "bad key=1"): "tag key 'bad key'",
    }
    for args, says in cases.items():
        res = ws.argosy("run", "quick.py:quick", "-q", *args)
        assert res.code == 2 and says in res.stderr, (args, res.stderr)


def test_runs_wait_exit_codes_on_a_server(ws: Workspace, tmp_path: Path) -> None:
    ws.write(QUICK, "quick")
    server = start_server(tmp_path / "server")
    try:
        at = ["--server", server.url]

        def started(target: str, *args: str) -> str:
            res = ws.argosy("run", target, "--detach", *at, *args)
            assert res.code == 0, res.stderr
            return res.stdout.strip()

        ok = started("quick.py:quick", "--tag", "k=v")
        res = ws.argosy("runs", "wait", ok, "--output", "json", *at)
        assert res.code == 0 and res.json()["status"] == "succeeded"
        assert res.json()["tags"] == {"k": "v"} and res.json()["outputs"]["output"]["value"] == 1.5
        failed = started("quick.py:failing")
        res = ws.argosy("runs", "wait", failed, *at)
        assert res.code == 1 and "failed" in res.stderr
        slow = started("quick.py:sleepy")
        res = ws.argosy("runs", "wait", slow, "--timeout", "1", *at)
        assert res.code == 124 and "still" in res.stderr
        assert ws.argosy("runs", "cancel", slow, *at).code == 0
        res = ws.argosy("runs", "wait", slow, *at)
        assert res.code == 1 and "cancelled" in res.stderr
        assert ws.argosy("runs", "wait", "ZZZZZZ", *at).code == 2
    finally:
        server.stop(timeout=20)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_schedules_take_param_files(ws: Workspace, tmp_path: Path, suffix: str) -> None:
    ws.write(QUICK, "quick")
    server = start_server(tmp_path / "server")
    try:
        at = ["--server", server.url]
        assert ws.argosy("pipelines", "push", "quick.py:quick", *at).code == 0
        path = ws.root / f"p{suffix}"
        path.write_text(
            json.dumps({"x": 5, "word": "w"}) if suffix == ".json" else "x: 5\nword: w\n"
        )
        made = _json(ws, "schedules", "create", "nightly", "--pipeline", "quick", "--cron",
                     "0 3 * * *", "--param-file", str(path), "-p", "word=z", "--paused", *at)  # fmt: skip
        assert made["parameters"] == {"x": 5, "word": "z"}
    finally:
        server.stop(timeout=20)
