"""What a new user hits first (issue 12): each defect found by trying Argosy as a new user
would, with the test that shows it fixed. Runs go through the in-process backend unless the
CLI itself is what is tested."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


# -- 3 and 11: views that fit, and the smaller edges ------------------------------------------------
SWEEP = """
import time
from argosy import Metrics, pipeline, step

@step
def train(config: dict, rows: int) -> Metrics:
    time.sleep(0.3 * (5 - config["depth"]))  # later items finish first
    print(f"training depth {config['depth']}")
    return Metrics({"auc": round(0.5 + config["depth"] / 10 + rows / 1e6, 4)})

@step
def pick(metrics: list) -> float:
    return max(m["auc"] for m in metrics)

@pipeline
def sweep(configs: list, rows: int = 100) -> float:
    return pick(metrics=train.map(configs, rows=rows))
"""

CONFIGS = [
    {"depth": d, "learning_rate_schedule": "cosine-with-warm-restarts", "regularisation": "l2"}
    for d in range(1, 5)
]


@pytest.fixture
def sweep_runs(in_project: Workspace) -> tuple[Workspace, str, str]:
    """Two runs of a 4-configuration sweep whose parameter differs (``rows``)."""
    ws = in_project
    target = f"{ws.write(SWEEP)}:sweep"
    a = run_here(ws, target, configs=CONFIGS, rows=100)
    b = run_here(ws, target, configs=CONFIGS, rows=200)
    assert a.status == b.status == "succeeded", (a.error, b.error)
    return ws, a.id, b.id


def test_run_documents_list_iterations_in_item_order_after_their_map(
    sweep_runs: tuple[Workspace, str, str],
) -> None:
    ws, run_a, _ = sweep_runs
    backend = LocalBackend(load_settings(home=ws.home, database_url=ws.database_url))
    doc = backend.run_detail(run_a)
    order = [t.node_path for t in doc.tasks]
    assert order == ["train", "train[0]", "train[1]", "train[2]", "train[3]", "pick"]
    assert list(doc.metrics) == [f"train[{i}].output" for i in range(4)]  # not finish order
    lines = backend.logs(run_a, node="train")  # a mapped node: every iteration's lines
    shown = {(line.node_path, line.line) for line in lines}
    assert {(f"train[{i}]", f"training depth {i + 1}") for i in range(4)} <= shown


def _fits(text: str, width: int) -> None:
    assert "\x1b[" not in text, "styles in a pipe"
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"{len(long)} lines wider than {width}: {long[:2]}"


def test_every_view_fits_columns_and_wide_shows_it_all(
    sweep_runs: tuple[Workspace, str, str],
) -> None:
    ws, run_a, run_b = sweep_runs
    narrow = {"COLUMNS": "100"}
    views = {
        "runs list": ["runs", "list"],
        "runs show": ["runs", "show", run_a],
        "runs diff": ["runs", "diff", run_a, run_b, "--all"],
        "lineage": ["lineage", f"{run_a}/pick/output"],
        "artifacts list": ["artifacts", "list", run_a],
    }
    for name, args in views.items():
        res = ws.argosy(*args, env=narrow)
        assert res.code == 0, (name, res.stderr)
        _fits(res.stdout, 100)
        if name == "runs list":
            lines = res.stdout.splitlines()  # the state folder (not ./.argosy), header, runs
            where = f"runs in the state folder {ws.home}"  # cut if the tmp path is long
            assert lines[0] == (where if len(where) <= 100 else where[:99] + "…")
            assert len(lines) == 4
            assert "…" in res.stdout  # the long parameters are cut, with the mark
        if name == "runs show":
            rows = [line for line in res.stdout.splitlines() if line.startswith("train[")]
            assert len(rows) == 4 and all("  succeeded  " in r for r in rows), res.stdout
    full = json.dumps(CONFIGS)
    wide = ws.argosy("runs", "list", "--wide", env=narrow).stdout
    assert full in wide and f"runs in the state folder {ws.home}\n" in wide
    assert full in ws.argosy("runs", "show", run_a, "--wide", env=narrow).stdout
    piped = ws.argosy("runs", "show", run_a)  # a pipe without COLUMNS: nothing is cut
    assert full in piped.stdout and "…" not in piped.stdout


def test_runs_diff_puts_what_differs_first_and_labels_items(
    sweep_runs: tuple[Workspace, str, str],
) -> None:
    ws, run_a, run_b = sweep_runs
    res = ws.argosy("runs", "diff", run_a, run_b, "--only", "params,metrics")
    assert res.code == 0, res.stderr
    rows = res.stdout.splitlines()[1:]
    sections = [r.split()[0] for r in rows]
    assert sections == ["parameters"] + ["metrics"] * 4, res.stdout
    assert "rows" in rows[0] and "≠" in rows[0]
    assert '(item {"depth": 1' in rows[1]
    everything = ws.argosy("runs", "diff", run_a, run_b).stdout.splitlines()[1:]
    firsts = [r.split()[0] for r in everything]
    assert firsts[: firsts.index("outputs")] == [
        "parameters",
        "metrics",
        "metrics",
        "metrics",
        "metrics",
    ]
    bad = ws.argosy("runs", "diff", run_a, run_b, "--only", "params,hashes")
    assert bad.code == 2 and "no section 'hashes'" in bad.stderr


def test_the_smaller_edges(in_project: Workspace) -> None:
    ws = in_project
    bogus = ws.argosy("runs", "list", "--status", "bogus")
    assert bogus.code == 2 and "pending, running, succeeded, failed, cancelled" in bogus.stderr
    version = ws.argosy("--version")
    assert version.code == 0 and version.stdout.startswith("argosy 0.")
    two = ws.write(
        "from typing import NamedTuple\n"
        "from argosy import pipeline, step\n\n"
        "class Pair(NamedTuple):\n    left: int\n    right: int\n\n"
        "@step\ndef split() -> Pair:\n    return Pair(1, 2)\n\n"
        "@pipeline\ndef halves() -> int:\n    return split().left\n"
    )
    run = run_here(ws, str(two))
    res = ws.argosy("artifacts", "get", f"{run.id}/split", "--out", str(ws.root / "x"))
    assert res.code == 2
    assert f"node 'split' has 2 outputs; name one: {run.id}/split/left, {run.id}/split/right" in (
        res.stderr
    )
    assert len(res.stderr) < 300


MAP_OVER_INT = """
from argosy import pipeline, step

@step
def one() -> int:
    return 3

@step
def square(x: int) -> int:
    return x * x

@pipeline
def over_output() -> list:
    return square.map(one())

@pipeline
def over_parameter(n: int = 3) -> list:
    return square.map(n)

@pipeline
def over_constant() -> list:
    return square.map(3)
"""


@pytest.mark.parametrize(
    ("pipeline", "source"),
    [("over_output", "output one.output"), ("over_parameter", "parameter 'n'"),
     ("over_constant", "the constant 3")],
)  # fmt: skip
def test_mapping_over_a_non_list_names_what_map_was_given(
    ws: Workspace, pipeline: str, source: str
) -> None:
    path = ws.write(MAP_OVER_INT)
    with pytest.raises(Exception) as caught:
        compile_pipeline(load_pipeline(f"{path}:{pipeline}"))
    message = str(caught.value)
    assert f"map() iterates over {source}, which is int, not a list" in message, message
    assert "input 'x' of step 'square' (int)" in message


def test_progress_does_not_number_a_map_nodes_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from argosy.cli.progress import Progress
    from argosy.engine.engine import TaskView

    def view(path: str, state: str, attempts: int) -> TaskView:
        return TaskView(id=path, node_path=path, step_name="s", state=state,
                        attempt_count=attempts, failures=0)  # fmt: skip

    shown = Progress(Console(stderr=True, force_terminal=False))
    shown("run", [view("train", "running", 0), view("train[0]", "running", 1)])
    printed = capsys.readouterr().err
    assert " train running\n" in printed and "attempt 0" not in printed
    assert "train[0] running (attempt 1)" in printed


def test_a_blob_stored_again_then_deleted_is_missing_not_corrupted(tmp_path: Path) -> None:
    from argosy.errors import StoreError
    from argosy.stores.artifacts.blobs import ArtifactStore
    from argosy.stores.artifacts.local import LocalByteStore

    store = ArtifactStore(LocalByteStore(tmp_path / "store"), "t")
    sha = store.put_bytes(b"the bytes").sha256
    path = store.blob_path(sha, cache_dir=tmp_path / "cache", verify=False)
    path.chmod(0o644)
    path.write_bytes(b"rotten")
    with pytest.raises(StoreError, match="corrupted"):
        store.read_blob(sha)  # quarantined
    store.put_bytes(b"the bytes")  # stored again by a re-run
    store.backend.delete(store.blob_key(sha))  # then deleted
    with pytest.raises(StoreError) as caught:
        store.read_blob(sha)
    assert f"blob sha256:{sha} is missing from tenant 't'" in str(caught.value)


# -- 4. a second Ctrl-C leaves no step process behind ---------------------------------------------
SLOW_CLEANUP = """
import subprocess, time
from pathlib import Path
from argosy import exit_handler, pipeline, step

@step
def work(gate: str) -> int:
    Path(gate, "work").write_text("started")
    time.sleep(120)
    return 1

@step
def cleanup(status: dict, gate: str) -> None:
    child = subprocess.Popen(["sleep", "120"])  # something the step started
    Path(gate, "cleanup.tmp").write_text(f"{child.pid}")
    Path(gate, "cleanup.tmp").rename(Path(gate, "cleanup"))
    time.sleep(120)

@pipeline
def slow(gate: str) -> None:
    with exit_handler(cleanup, gate=gate):
        work(gate=gate)
"""


def test_a_second_ctrl_c_kills_every_step_process_before_exiting(
    ws: Workspace, tmp_path: Path
) -> None:
    import signal

    from tests.conftest import alive, wait_for

    gate = tmp_path / "gate"
    gate.mkdir()
    proc = ws.spawn("run", str(ws.write(SLOW_CLEANUP)), "-p", f"gate={gate}")
    try:
        wait_for(gate / "work")
        proc.send_signal(signal.SIGINT)  # cancel: work is stopped, the exit handler starts
        wait_for(gate / "cleanup")
        child = int((gate / "cleanup").read_text())
        assert alive(child)
        proc.send_signal(signal.SIGINT)  # stop at once
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "killed the process trees of 1 running step(s)" in err, err
    assert not alive(child), "a step's process outlived the engine"


# -- 7. the steps' output in the run's console ------------------------------------------------------
LIVE = """
import time
from pathlib import Path
from argosy import pipeline, step

@step
def train(gate: str) -> int:
    print("epoch 1 loss=0.5", flush=True)
    while not Path(gate).exists():  # finishes only once the console has shown the line
        time.sleep(0.05)
    return 1

@step
def chatty() -> int:
    for i in range(200):
        print(f"line {i}")
    return 1

@pipeline
def live(gate: str) -> int:
    chatty()
    return train(gate=gate)
"""


def test_step_output_is_shown_live_prefixed_and_throttled(ws: Workspace, tmp_path: Path) -> None:
    import time

    gate = tmp_path / "gate"
    path = ws.write(LIVE)
    proc = ws.spawn("run", str(path), "-p", f"gate={gate}")
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if line.strip() == "train | epoch 1 loss=0.5":
                break
        else:
            raise AssertionError(f"the step's line was not shown while it ran: {seen}")
        gate.write_text("go")
        _, err = proc.communicate(timeout=60)
    finally:
        gate.write_text("go")  # a step still waiting ends
        proc.kill()
    assert proc.returncode == 0, err
    printed = "".join(seen) + err
    shown = [line for line in printed.splitlines() if line.startswith("chatty | line ")]
    assert 0 < len(shown) <= 40  # throttled: 10 lines a second
    assert "chatty | ... " in printed and "more line(s): argosy logs " in printed
    quiet = ws.argosy("run", str(path), "-p", f"gate={gate}", "--quiet", "--no-cache")
    assert quiet.code == 0 and " | " not in quiet.stderr, quiet.stderr


# -- 8. inputs are checked against their annotations ------------------------------------------------
ANNOTATED = """
from argosy import pipeline, step

@step
def train(config: dict, seed: int = None) -> float:
    return config.get("lr", 0.1)

@step
def make():
    return "3"

@step
def add(x: int) -> int:
    return x + 1

@pipeline
def sweep(configs: list) -> list:
    return train.map(configs)

@pipeline
def chain() -> int:
    return add(x=make())
"""


def test_an_input_that_is_not_what_its_annotation_says_fails_before_the_step_runs(
    in_project: Workspace,
) -> None:
    ws = in_project
    path = ws.write(ANNOTATED)
    sweep = run_here(ws, f"{path}:sweep", configs=[1, {"lr": 0.5}])
    by_node = {t.node_path: t for t in sweep.tasks}
    assert by_node["train[1]"].state == "succeeded"  # a dict, and seed None by its default
    reason = by_node["train[0]"].reason or ""
    assert reason.startswith("input_error: input 'config' of step 'train' expects dict, but ")
    assert "is int 1" in reason and "AttributeError" not in reason
    chain = run_here(ws, f"{path}:chain")
    reason = {t.node_path: t for t in chain.tasks}["add"].reason or ""
    assert "input 'x' of step 'add' expects int, but output 'output' of 'make' is str" in reason
    assert "annotate what 'make' returns ('-> int')" in reason


# -- docs: an older Argosy opens a database a newer one migrated (operations.md) -----------------------
def test_an_older_version_opens_a_database_a_newer_one_migrated(tmp_path: Path) -> None:
    import sqlite3

    from argosy.stores.metadata.db import MetadataStore

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    MetadataStore.open(url).engine.dispose()
    with sqlite3.connect(tmp_path / "meta.db") as db:  # a newer Argosy's revision, unknown here
        db.execute("UPDATE alembic_version SET version_num = 'ffff_from_a_newer_argosy'")
    store = MetadataStore.open(url)  # used to fail with "Can't locate revision"
    try:
        with store.session() as session:
            assert session is not None
    finally:
        store.engine.dispose()
    with sqlite3.connect(tmp_path / "meta.db") as db:  # and it was not downgraded
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (
            "ffff_from_a_newer_argosy",
        )


# -- 2. files a step writes to a relative path ---------------------------------------------------------
RELATIVE_FILES = """
from pathlib import Path
from argosy import pipeline, step

@step
def deploy_str() -> str:
    Path("deployed").mkdir()
    Path("deployed/model.pkl").write_bytes(b"model")
    return "deployed/model.pkl"

@step
def deploy_path() -> Path:
    Path("deployed").mkdir()
    Path("deployed/model.pkl").write_bytes(b"model")
    return Path("deployed")

@step
def deploy_any():
    Path("model.pkl").write_bytes(b"model")
    return Path("model.pkl")

@pipeline
def deploying() -> None:
    deploy_str()
    deploy_path()
    deploy_any()
"""


def test_a_relative_path_a_step_returns_is_stored_or_warned_about(in_project: Workspace) -> None:
    ws = in_project
    doc = run_here(ws, str(ws.write(RELATIVE_FILES)))
    assert doc.status == "succeeded", doc.error
    backend = LocalBackend(load_settings(home=ws.home, database_url=ws.database_url))
    warned = [line.line for line in backend.logs(doc.id, node="deploy_str")]
    assert any(
        "output 'output' of step 'deploy_str' is the string 'deployed/model.pkl', a path in the "
        "step's scratch folder, which is deleted when the attempt ends" in line
        for line in warned
    ), warned
    assert "return a Path (annotate '-> Path')" in "".join(warned)
    by_node = {t.node_path: t for t in doc.tasks}
    assert by_node["deploy_path"].outputs["output"].format == "dir"
    assert by_node["deploy_any"].outputs["output"].format == "file"
    assert not [line for line in backend.logs(doc.id, node="deploy_path") if "warning" in line.line]


# -- 6. a full disk says so ------------------------------------------------------------------------------
def test_a_full_disk_while_storing_an_output_says_so(tmp_path: Path) -> None:
    import errno

    from argosy.runtime import launcher
    from argosy.runtime.invocation import Invocation
    from argosy.stores.artifacts.blobs import ArtifactStore
    from argosy.stores.artifacts.local import LocalByteStore

    class FullDisk(LocalByteStore):
        """A byte store on a disk with no room left (what ENOSPC looks like to the launcher)."""

        def put_file(self, key: str, source: Path, *, move: bool = False) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / key))

    store = ArtifactStore(FullDisk(tmp_path / "store"), "t")
    inv = Invocation.from_json(
        {
            "version": 1, "tenant": "t", "run_id": "r", "node_path": "train", "attempt": 1,
            "attempt_id": "a", "store": {"url": str(tmp_path / "store")},
            "cache_dir": str(tmp_path / "cache"), "code": None, "inputs": {},
            "result_key": "results/a.json", "scratch": str(tmp_path / "scratch"),
            "step": {"name": "train", "inputs": {},
                     "outputs": {"model": {"type": "bytes"}}},
        }
    )  # fmt: skip
    (tmp_path / "scratch").mkdir()
    with pytest.raises(launcher.StepFailed) as caught:
        launcher._store_outputs(inv, store, {"model": b"x" * 1000}, tmp_path / "scratch")
    message = str(caught.value)
    assert caught.value.reason == "output_error"
    assert message.startswith("no space left on device while storing output 'model' (")
    assert " MB free on " in message and str(tmp_path) in message


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A state folder on an 8 MB file system of its own (a tmpfs: 'make test' runs as root; a
    test environment that cannot mount one skips, which fails under CI=true)."""
    import subprocess

    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_reaches_the_engine_with_the_free_space_and_the_log(
    tmp_path: Path, small_disk: Path
) -> None:
    """End to end: the state folder on a small file system, a step storing 50 MB. The
    launcher's own result record cannot be written there (the disk is full at that moment),
    so its failure must reach the engine by a path that needs no disk, and what the step
    printed before must stay in its log."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    ws = Workspace(root, small_disk)
    ws.write(
        """
        from argosy import pipeline, step

        @step
        def train() -> bytes:
            print("the model is trained; storing it", flush=True)
            return b"x" * (50 * 1024 * 1024)

        @pipeline
        def big():
            train()
        """,
        name="big",
    )
    ran = ws.argosy("run", "big.py", "--output", "json", timeout=300)
    assert ran.code == 1, (ran.stdout, ran.stderr)
    assert "Traceback" not in ran.stderr, ran.stderr
    doc = ran.json()
    assert doc["status"] == "failed", doc
    task = doc["tasks"][0]
    reason = task["reason"]
    assert "no space left on device while storing output 'output' (" in reason, reason
    assert f" MB free on {small_disk}" in reason, reason
    logs = ws.argosy("logs", doc["id"], "train")
    assert logs.code == 0, logs.stderr
    assert "the model is trained; storing it" in logs.stdout, logs.stdout
    # the failure came on the status pipe (the store refused the result record): the log says it
    assert "argosy: output_error: no space left on device" in logs.stdout, logs.stdout
    # the attempt's files (and the partial output) are gone: the disk has room again
    assert shutil.disk_usage(small_disk).free > 4_000_000


def test_the_status_pipe_carries_a_compact_failure_record() -> None:
    from argosy.runtime.invocation import FAILED, OutputRecord, ResultRecord

    stored = ResultRecord(
        "a", 1, "succeeded", outputs={"m": OutputRecord("s", 1, "bytes", "bytes")}
    )
    sent = ResultRecord.from_json(stored.compact("the result record could not be stored").to_json())
    assert (sent.status, sent.reason, sent.outputs) == (FAILED, "output_error", {})
    assert sent.error == "the result record could not be stored"
    failed = ResultRecord("a", 1, FAILED, reason="exception", error="E" * 100_000)
    cut = failed.compact("why", limit=1000)
    assert cut.reason == "exception" and len(cut.error or "") == 1000


def test_a_script_that_runs_its_own_pipeline(ws: Workspace) -> None:
    """``python my_pipeline.py`` with ``my_pipeline.run()`` under ``if __name__ ==
    "__main__":`` — the first thing many write. Its steps are defined in ``__main__``, which in
    a task is the launcher's: every step failed with "module '__main__' has no attribute". The
    task imports the script by its own name (its ``__main__`` block does not run again)."""
    path = ws.write(
        """
        from argosy import pipeline, step

        @step(cache=False)
        def double(x: int) -> int:
            return 2 * x

        @pipeline
        def doubled(x: int = 3) -> int:
            return double(x=double(x=x))

        if __name__ == "__main__":
            run = doubled.run(x=5, progress=False)
            print(run.status, run.outputs["output"].load())
        """,
        name="my_pipeline",
    )
    done = subprocess.run(
        [sys.executable, str(path)], cwd=ws.root, env=ws.env(), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["succeeded", "20"], done.stdout + done.stderr
