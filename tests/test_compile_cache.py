"""The compiled-spec cache (spec/compile_cache.py), through the real CLI: an unchanged project
is not imported again, and any change to what its compile read (a module, a data file, a new
file in the project) compiles it again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import Workspace, outputs

PIPELINE = """
import os
from pathlib import Path

from argosy import pipeline, step
from {helper} import scale

PROJECT = Path({root!r})
if "ARGOSY_NODE_PATH" not in os.environ:  # the CLI's compile, not a task's own import
    (PROJECT.parent / "imports.log").open("a").write("imported\\n")
FACTOR = int((PROJECT / "factor.txt").read_text())


@step(cache=False)
def grow(x: int) -> int:
    return scale(x) * FACTOR


@pipeline
def cached_compile(x: int = 2) -> int:
    return grow(x)
"""


def _project(ws: Workspace, helper: str) -> Path:
    (ws.root / f"{helper}.py").write_text("def scale(x: int) -> int:\n    return x * 10\n")
    (ws.root / "factor.txt").write_text("1")
    return ws.write(PIPELINE.format(helper=helper, root=str(ws.root)))


def _run(ws: Workspace, path: Path, **env: str) -> int:
    # warm workers off: a warm parent imports the pipeline module too, and this counts the
    # CLI's compiles only
    env = {"ARGOSY_WARM_WORKERS": "false", **env}
    res = ws.argosy("run", f"{path}:cached_compile", "--output", "json", env=env)
    assert res.code == 0, res.stderr
    value: int = outputs(res.json())["output"]
    return value


def _imports(ws: Workspace) -> int:
    log = ws.root.parent / "imports.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _touch_later(path: Path, text: str) -> None:
    time.sleep(0.01)  # a new modification time even on a coarse clock
    path.write_text(text)


def test_an_unchanged_project_is_run_without_importing_it_again(ws: Workspace) -> None:
    path = _project(ws, "cc_helper_a")
    assert _run(ws, path) == 20
    assert _imports(ws) == 1
    assert _run(ws, path) == 20
    assert _imports(ws) == 1  # the second run used the cached spec
    assert _run(ws, path, ARGOSY_COMPILE_CACHE="false") == 20
    assert _imports(ws) == 2  # the switch compiles in full


def test_a_changed_module_or_data_file_compiles_again(ws: Workspace) -> None:
    path = _project(ws, "cc_helper_b")
    assert _run(ws, path) == 20
    _touch_later(ws.root / "cc_helper_b.py", "def scale(x: int) -> int:\n    return x * 100\n")
    assert _run(ws, path) == 200  # the step runs the new code, and its fingerprint is new
    assert _imports(ws) == 2
    _touch_later(ws.root / "factor.txt", "3")  # read while the graph was built
    assert _run(ws, path) == 600
    assert _imports(ws) == 3


def test_a_new_file_in_the_project_compiles_again(ws: Workspace) -> None:
    path = _project(ws, "cc_helper_c")
    assert _run(ws, path) == 20
    (ws.root / "extra_module.py").write_text("X = 1\n")  # part of the code package now
    assert _run(ws, path) == 20
    assert _imports(ws) == 2


def test_a_cached_compile_has_fresh_provenance_and_the_same_digest(ws: Workspace) -> None:
    path = _project(ws, "cc_helper_d")
    first = ws.argosy("compile", f"{path}:cached_compile", "--out", str(ws.root.parent / "a.json"))
    assert first.code == 0, first.stderr
    time.sleep(0.01)
    second = ws.argosy("compile", f"{path}:cached_compile", "--out", str(ws.root.parent / "b.json"))
    assert second.code == 0, second.stderr
    assert _imports(ws) == 1
    a, b = (json.loads((ws.root.parent / n).read_text()) for n in ("a.json", "b.json"))
    assert a["provenance"]["compiled_at"] != b["provenance"]["compiled_at"]
    a.pop("provenance"), b.pop("provenance")
    assert a == b
