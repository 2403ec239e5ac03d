"""The step cache: hits when nothing changed, misses for exactly what changed, and says why."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, Workspace, outputs

HELPERS = """
def scale(x: float) -> float:
    return x * 2
"""

UNRELATED = """
def nothing() -> int:
    return 0
"""

PIPELINE = """
from pathlib import Path
from argosy import step, pipeline
from helpers import scale

@step
def load(source: Path) -> list:
    return [float(v) for v in source.read_text().split()]

@step
def transform(values: list) -> list:
    return [scale(v) for v in values]

@step(cache_version="1")
def total(values: list, offset: float = 0.0) -> float:
    return sum(values) + offset

@step
def report(value: float) -> str:
    return f"total={value}"

@pipeline
def numbers(source: str = "data.txt", offset: float = 0.0) -> str:
    return report(value=total(values=transform(values=load(source=source)), offset=offset))
"""


@pytest.fixture
def project(ws: Workspace) -> Workspace:
    (ws.root / "helpers.py").write_text(HELPERS)
    (ws.root / "unrelated.py").write_text(UNRELATED)
    (ws.root / "data.txt").write_text("1 2 3")
    (ws.root / "nums.py").write_text(PIPELINE)
    return ws


def run(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res: Result = ws.argosy("run", "nums.py", "--output", "json", *args, env=env)
    assert res.code == 0, res.stderr
    return res.json()  # type: ignore[no-any-return]


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {s["node_path"]: s["state"] for s in doc["tasks"]}


def reasons(doc: dict[str, Any]) -> dict[str, str]:
    return {s["node_path"]: s["cache"]["reason"] for s in doc["tasks"]}


ALL = ("load", "transform", "total", "report")


def test_rerun_with_nothing_changed_hits_everything_and_starts_no_process(
    project: Workspace,
) -> None:
    first = run(project)
    assert outputs(first) == {"output": "total=12.0"}
    assert all(s["cache"]["status"] == "miss" for s in first["tasks"])
    assert reasons(first)["load"] == "no earlier task of this step"
    second = run(project)
    assert states(second) == dict.fromkeys(ALL, "cached")
    assert outputs(second) == outputs(first)
    assert all(s["attempts"] == [] for s in second["tasks"]), "a cached task started a process"
    for step in second["tasks"]:
        assert step["cache"]["status"] == "hit"
        assert first["id"] in step["cache"]["reason"]
        assert step["cache"]["cached_from_task"]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("change", "missed", "phrase"),
    [
        ("function_body", {"total", "report"}, "code changed: nums.py::total"),
        ("helper_module", {"transform", "total", "report"}, "code changed: helpers.py"),
        ("parameter", {"total", "report"}, "input 'offset' changed: 0.0 -> 1.5"),
        ("data_file", ALL, "input 'source' data changed"),
        # total re-runs and gives the same value, so report's input is unchanged: it hits
        ("cache_version", {"total"}, "cache_version changed: '1' -> '2'"),
        ("unrelated_module", set(), ""),
    ],
)
def test_each_change_misses_exactly_the_affected_steps(
    project: Workspace, change: str, missed: set[str], phrase: str
) -> None:
    run(project)
    args: list[str] = []
    root = project.root
    if change == "function_body":
        _edit(root / "nums.py", "return sum(values) + offset", "return sum(values) + offset + 1")
    elif change == "helper_module":
        _edit(root / "helpers.py", "return x * 2", "return x * 3")
    elif change == "parameter":
        args = ["-p", "offset=1.5"]
    elif change == "data_file":
        (root / "data.txt").write_text("1 2 3 4")
    elif change == "cache_version":
        _edit(root / "nums.py", 'cache_version="1"', 'cache_version="2"')
    elif change == "unrelated_module":
        _edit(root / "unrelated.py", "return 0", "return 1")
    doc = run(project, *args)
    got = states(doc)
    assert {n for n in ALL if got[n] == "succeeded"} == set(missed)
    assert {n for n in ALL if got[n] == "cached"} == set(ALL) - set(missed)
    first_missed = next((n for n in ALL if n in missed), None)
    if first_missed is not None:
        assert phrase in reasons(doc)[first_missed], reasons(doc)[first_missed]


def test_a_package_version_change_misses_only_the_steps_that_import_it(ws: Workspace) -> None:
    site = ws.root.parent / "site"

    def install(version: str) -> None:
        for old in site.glob("fakepkg-*.dist-info"):
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        info = site / f"fakepkg-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n"
        )
        (info / "top_level.txt").write_text("fakepkg\n")
        (site / "fakepkg").mkdir(exist_ok=True)
        (site / "fakepkg" / "__init__.py").write_text("FACTOR = 3\n")

    install("1.0")
    (ws.root / "pkgs.py").write_text(
        textwrap.dedent("""
        from argosy import step, pipeline

        @step
        def plain(x: int) -> int:
            return x + 1

        @step
        def uses_pkg(x: int) -> int:
            import fakepkg
            return x * fakepkg.FACTOR

        @pipeline
        def pkgs(x: int = 2) -> int:
            return uses_pkg(x=plain(x=x))
    """)
    )
    env = {"PYTHONPATH": str(site)}
    first = ws.argosy("run", "pkgs.py", "--output", "json", env=env)
    assert first.code == 0, first.stderr
    assert outputs(first.json()) == {"output": 9}
    install("2.0")
    second = ws.argosy("run", "pkgs.py", "--output", "json", env=env).json()
    assert states(second) == {"plain": "cached", "uses_pkg": "succeeded"}
    assert "package fakepkg 1.0 -> 2.0" in reasons(second)["uses_pkg"]


def test_cache_controls(project: Workspace) -> None:
    run(project)
    no_cache = run(project, "--no-cache")
    assert set(states(no_cache).values()) == {"succeeded"}
    assert all(s["cache"]["status"] == "off" for s in no_cache["tasks"])
    assert "--no-cache" in reasons(no_cache)["load"]
    by_config = run(project, env={"ARGOSY_CACHE": "false"})
    assert set(states(by_config).values()) == {"succeeded"}
    _edit(project.root / "nums.py", "@step\ndef report", "@step(cache=False)\ndef report")
    doc = run(project)
    assert states(doc) == {
        "load": "cached",
        "transform": "cached",
        "total": "cached",
        "report": "succeeded",
    }
    assert reasons(doc)["report"] == "caching is off for this step (cache=False)"


def test_cache_ttl_expires_old_outputs(project: Workspace) -> None:
    _edit(project.root / "nums.py", "@step\ndef load", "@step(cache_ttl=1)\ndef load")
    run(project)
    time.sleep(1.5)
    doc = run(project)
    assert states(doc)["load"] == "succeeded"
    assert "expired or gone" in reasons(doc)["load"]
    assert states(doc)["transform"] == "cached"  # same data again: downstream still hits
