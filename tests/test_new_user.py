"""What a new user hits first (issue 12): each defect found by trying Argosy as a new user
would, with the test that shows it fixed. Runs go through the in-process backend unless the
CLI itself is what is tested."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from argosy import api
from argosy.client.local import LocalBackend
from argosy.config import load_settings
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.spec.parameters import bind_parameters
from tests.conftest import Workspace

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_project(ws: Workspace) -> Iterator[Workspace]:
    """The test process works in the project folder, as the CLI would."""
    before = Path.cwd()
    os.chdir(ws.root)
    try:
        yield ws
    finally:
        os.chdir(before)


def run_here(
    ws: Workspace, target: str, *, settings: dict[str, Any] | None = None, **params: Any
) -> api.RunDetail:
    """Compile and run a pipeline in this process on the workspace's state folder."""
    found = load_settings(home=ws.home, database_url=ws.database_url, **(settings or {}))
    backend = LocalBackend(found)
    compiled = compile_pipeline(load_pipeline(target), cache_dir=found.home / "cache")
    bound = bind_parameters(compiled.spec, {}, params)
    run = backend.submit(compiled, bound)
    backend.follow(run.id)
    return backend.run_detail(run.id)


def _states(doc: api.RunDetail) -> dict[str, str]:
    return {t.node_path: t.state for t in doc.tasks}


# -- 1. a step after map() is cached ------------------------------------------------------------
def test_an_unchanged_rerun_of_the_control_flow_example_starts_no_process(
    in_project: Workspace,
) -> None:
    ws = in_project
    target = f"{REPO / 'examples' / 'control_flow.py'}:model_selection"
    first = run_here(ws, target, folds=2)
    assert first.status == "succeeded", first.error
    again = run_here(ws, target, folds=2)
    assert again.status == "succeeded", again.error
    started = {t.node_path: len(t.attempts) for t in again.tasks if t.attempts}
    assert started == {}, f"an unchanged re-run started processes: {started}"
    ran = {p: s for p, s in _states(again).items() if s not in ("cached", "skipped")}
    assert ran == {"fold": "succeeded"}, ran  # the map node itself only collects
    out = ws.root / "scores.json"
    res = ws.argosy("artifacts", "get", f"{again.id}/fold/output", "--out", str(out))
    assert res.code == 0, res.stderr
    scores = json.loads(out.read_text())
    assert isinstance(scores, list) and len(scores) == 2
    assert all(isinstance(s, float) and 0.5 < s <= 1 for s in scores), scores


# -- 12. exit handlers and map -------------------------------------------------------------------
EXIT_MAP = """
import json
from pathlib import Path
from argosy import step, pipeline, exit_handler

@step
def crunch(i: int) -> int:
    if i == 2:
        raise ValueError("two is bad")
    return i

@step
def inc(x: int) -> int:
    return x + 1

@pipeline
def twice(x: int) -> int:
    return inc(x=inc(x=x))

@step
def notify(status: dict, out: str) -> str:
    Path(out).write_text(json.dumps(status))
    return status["status"]

@pipeline
def guarded(out: str = "status.json") -> None:
    with exit_handler(notify, out=out):
        crunch.map([0, 1, 2])
        twice.map([5, 6], name="deep")
"""


def test_an_exit_handler_sees_each_iteration_of_a_map(in_project: Workspace) -> None:
    ws = in_project
    path = ws.write(EXIT_MAP)
    doc = run_here(ws, f"{path}:guarded", out=str(ws.root / "status.json"))
    assert doc.status == "failed"
    status = json.loads((ws.root / "status.json").read_text())
    assert status["status"] == "failed"
    assert list(status["tasks"]) == [
        "crunch[0]", "crunch[1]", "crunch[2]",
        "deep[0]/inc", "deep[0]/inc-2", "deep[1]/inc", "deep[1]/inc-2",
    ]  # fmt: skip
    assert status["tasks"]["crunch[2]"]["state"] == "failed"
    assert "two is bad" in status["tasks"]["crunch[2]"]["reason"]
    assert status["tasks"]["crunch[0]"] == {"state": "succeeded", "reason": None}


NO_STATUS = """
from argosy import step, pipeline, exit_handler

@step
def work() -> int:
    return 1

@step
def tidy(channel: str) -> None:
    print(channel)

@pipeline
def p() -> None:
    with exit_handler(tidy, channel="x"):
        work()
"""


def test_an_exit_handler_without_status_is_located_in_the_pipeline_file(ws: Workspace) -> None:
    path = ws.write(NO_STATUS)
    with pytest.raises(Exception) as caught:
        compile_pipeline(load_pipeline(str(path)))
    line = NO_STATUS.splitlines().index('    with exit_handler(tidy, channel="x"):') + 1
    assert f"{path}:{line}" in str(caught.value), str(caught.value)
    assert "contextlib" not in str(caught.value)


# -- 5. pipeline-file mistakes: exit 2, one line naming the file and line -----------------------
BODY_RAISES = """
from argosy import step, pipeline

@step
def a(x: int) -> int:
    return x

@pipeline
def p(x: int = 1) -> int:
    table = {}
    return a(x=table["missing"])
"""

FILE_MISTAKES = {
    "body raises": (BODY_RAISES, 11, "KeyError: 'missing'"),
    "syntax error": ("from argosy import step\n\ndef f(:\n    pass\n", 3, "SyntaxError"),
    "sys.exit(0)": ("import sys\n\nsys.exit(0)\n", 3, "sys.exit(0)"),
    "sys.exit(3)": ("import sys\n\nsys.exit(3)\n", 3, "sys.exit(3)"),
    "KeyboardInterrupt": ("import os\n\nraise KeyboardInterrupt\n", 3, "KeyboardInterrupt"),
}


@pytest.mark.parametrize("command", ["run", "compile"])
@pytest.mark.parametrize("case", list(FILE_MISTAKES))
def test_a_pipeline_file_mistake_is_one_line_and_exit_2(
    ws: Workspace, case: str, command: str
) -> None:
    source, line, what = FILE_MISTAKES[case]
    path = ws.write(source)
    res = ws.argosy(command, str(path))
    assert res.code == 2, (res.code, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert f"{path}:{line}]" in lines[0], lines[0]
    assert what in lines[0]
    assert res.stdout == ""


# -- 13. files published by rename have names of their own ---------------------------------------
def _at_once(threads: int, rounds: int, act: Any) -> list[BaseException]:
    """Call ``act(round)`` from ``threads`` threads released together, ``rounds`` times."""
    import threading

    errors: list[BaseException] = []
    for r in range(rounds):
        gate = threading.Barrier(threads)

        def go(r: int = r, gate: threading.Barrier = gate) -> None:
            gate.wait()
            try:
                act(r)
            except BaseException as exc:  # every failure counts
                errors.append(exc)

        started = [threading.Thread(target=go) for _ in range(threads)]
        for t in started:
            t.start()
        for t in started:
            t.join()
    return errors


def test_concurrent_first_runs_publish_the_environment_manifest_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from argosy.spec.environment import environment_manifest

    # no distributions to list: each call is little more than the publish being raced
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [])
    errors = _at_once(8, 300, lambda r: environment_manifest(tmp_path / str(r)))
    assert errors == []
    assert all(len(list((tmp_path / str(r)).iterdir())) == 1 for r in range(300))  # no leftovers


def test_concurrent_reads_of_one_blob_share_the_download_cache_safely(tmp_path: Path) -> None:
    from argosy.stores.artifacts.blobs import ArtifactStore
    from argosy.stores.artifacts.local import LocalByteStore
    from argosy.stores.encryption import ObjectCipher, StaticDataKeys

    cipher = ObjectCipher(StaticDataKeys("t", "k1", {"k1": os.urandom(32)}))
    store = ArtifactStore(LocalByteStore(tmp_path / "store"), "t", cipher)  # not read in place
    data = os.urandom(256 * 1024)
    sha = store.put_bytes(data).sha256
    paths: list[Path] = []

    def read(r: int) -> None:
        path = store.blob_path(sha, cache_dir=tmp_path / f"cache{r}")
        paths.append(path)
        assert path.read_bytes() == data

    errors = _at_once(8, 60, read)
    assert errors == []
    assert {p.parent for p in paths} == {tmp_path / f"cache{r}" for r in range(60)}
    assert all(os.listdir(tmp_path / f"cache{r}") == [sha] for r in range(60))  # no leftovers
    out = tmp_path / "out"
    out.mkdir()
    _at_once(4, 1, lambda r: store.copy_blob_to(sha, out / "blob"))
    assert os.listdir(out) == ["blob"] and (out / "blob").read_bytes() == data


# -- 14. make demo installs what the demo needs ----------------------------------------------------
def test_make_demo_installs_the_demo_extra_not_the_test_toolchain(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import tomllib

    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    planned = subprocess.run(
        ["make", "-n", "demo"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in planned.splitlines() if "pip install" in line and "-e" in line]
    assert installs == ['.venv/bin/python -m pip install --quiet -e ".[demo]"'], planned
    assert "argosy run examples/demo.py:breast_cancer" in planned
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def closure(extra: str) -> set[str]:
        found: set[str] = set()
        for req in extras[extra]:
            if req.startswith("argosy["):
                found |= closure(req[len("argosy[") : -1])
            else:
                found.add(req.split(">")[0].split("[")[0].split("=")[0].lower())
        return found

    demo = closure("demo")
    assert not demo & {"mypy", "moto", "schemathesis", "polars", "pytest", "mutmut"}, demo
    assert {"scikit-learn", "pandas", "joblib"} <= demo


# -- 9. where the state lives ------------------------------------------------------------------------
def test_the_state_folder_is_made_at_the_project_root(tmp_path: Path) -> None:
    from argosy.config import find_home

    (tmp_path / ".argosy").mkdir()  # a stray state folder above the project is not used
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    assert find_home(project / "src" / "deep") == project / ".argosy"
    assert find_home(project) == project / ".argosy"
    (project / "argosy.toml").write_text("")  # argosy.toml marks a root too
    nested = project / "src" / "deep"
    (nested / "argosy.toml").write_text("")
    assert find_home(nested) == nested / ".argosy"
    (nested / "argosy.toml").unlink()
    (project / "src" / ".argosy").mkdir()  # an existing one below the root is kept
    assert find_home(nested) == project / "src" / ".argosy"
    outside = tmp_path / "elsewhere" / "x"
    outside.mkdir(parents=True)
    assert find_home(outside) == tmp_path / ".argosy"  # no project: the nearest .argosy


def test_runs_list_names_the_state_folder_when_it_is_not_here(ws: Workspace) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in ws.env().items() if k != "ARGOSY_HOME"}
    sub = ws.root / "notebooks"
    sub.mkdir()

    def runs_list(cwd: Path) -> str:
        return subprocess.run(
            [sys.executable, "-m", "argosy.cli.main", "runs", "list"], cwd=cwd, env=env,
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    shown = runs_list(sub)
    assert shown.splitlines()[0] == f"runs in the state folder {ws.root.resolve() / '.argosy'}"
    assert not (sub / ".argosy").exists()
    assert "state folder" not in runs_list(ws.root)


PATH_PARAM = """
from pathlib import Path
from argosy import step, pipeline

@step
def size(data: Path) -> int:
    return len(data.read_bytes())

@pipeline
def measure(data: str) -> int:
    return size(data=data)
"""


def test_a_missing_path_parameter_is_refused_before_the_run_exists(in_project: Workspace) -> None:
    ws = in_project
    path = ws.write(PATH_PARAM)
    (ws.root / "sub").mkdir()
    (ws.root / "sub" / "rows.csv").write_text("a\n1\n")
    with pytest.raises(Exception) as caught:
        run_here(ws, str(path), data="rows.csv")
    assert getattr(caught.value, "exit_code", None) == 2, caught.value
    assert "'rows.csv', which does not exist" in str(caught.value)
    assert str(ws.root) in str(caught.value)
    settings = load_settings(home=ws.home, database_url=ws.database_url)
    assert LocalBackend(settings).list_runs() == []  # no run was created
    doc = run_here(ws, str(path), data="sub/rows.csv")  # relative to the current folder
    assert doc.status == "succeeded" and doc.outputs["output"].value == 4


# -- 10. parameters are bounded ---------------------------------------------------------------------
BIG_PARAM = """
from argosy import step, pipeline

@step
def count(items: list) -> int:
    return len(items)

@pipeline
def big(items: list) -> int:
    return count(items=items)
"""


def test_a_parameter_over_the_limit_is_refused_before_the_run_exists(
    in_project: Workspace,
) -> None:
    ws = in_project
    path = ws.write(BIG_PARAM)
    items = ["x" * 1000] * 1100  # about 1.1 MB: more than the default 1 MiB
    with pytest.raises(Exception) as caught:
        run_here(ws, str(path), items=items)
    assert getattr(caught.value, "exit_code", None) == 2, caught.value
    assert "ARGOSY_MAX_PARAMETER_BYTES" in str(caught.value)
    assert "\n" not in str(caught.value)
    settings = load_settings(home=ws.home, database_url=ws.database_url)
    assert LocalBackend(settings).list_runs() == []  # nothing stored
    doc = run_here(ws, str(path), settings={"max_parameter_bytes": 2_000_000}, items=items)
    assert doc.status == "succeeded" and doc.outputs["output"].value == 1100
