"""Per-step environments: ``@step(packages=[...])`` runs the step in an environment of its own,
made once per package set and Python version (with uv) from a locally built wheel and reused;
the packages are part of the step's cache key and lineage; a missing package fails the task at
start naming it and the installer's words; ``argosy.toml`` gives the project's default."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace


def build_wheel(folder: Path, name: str, version: str, value: int) -> Path:
    """A pure-Python wheel of module ``name`` (``VALUE = value``), built by hand (offline)."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VALUE = {value}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: argosy-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


PIPE = """
from argosy import pipeline, step

@step(packages=["argosy-tinypkg=={version}"])
def with_pkg(x: int = 1) -> int:
    import argosy_tinypkg
    return argosy_tinypkg.VALUE + x

@step
def without_pkg(x: int = 1) -> bool:
    try:
        import argosy_tinypkg  # noqa: F401
    except ImportError:
        return False
    return True

@pipeline
def envs(x: int = 1) -> dict:
    return {{"value": with_pkg(x=x), "visible_outside": without_pkg(x=x)}}
"""


@pytest.fixture
def wheels(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "wheels"
    folder.mkdir()
    build_wheel(folder, "argosy-tinypkg", "0.1", 42)
    build_wheel(folder, "argosy-tinypkg", "0.2", 100)
    return {"UV_FIND_LINKS": str(folder), "UV_OFFLINE": "1", "PIP_FIND_LINKS": str(folder),
            "PIP_NO_INDEX": "1"}  # fmt: skip


def _run(ws: Workspace, env: dict[str, str], *args: str) -> Any:
    res = ws.argosy("run", "envpipe.py:envs", "-q", "--output", "json", *args, env=env)
    assert res.code == 0, res.stderr
    return res.json()


def test_a_step_with_packages_runs_in_its_own_cached_environment(
    ws: Workspace, wheels: dict[str, str]
) -> None:
    ws.write(PIPE.format(version="0.1"), "envpipe")
    started = time.monotonic()
    first = _run(ws, wheels)
    cold = time.monotonic() - started
    outputs = {t["node_path"]: t for t in first["tasks"]}
    value = next(iter(outputs["with_pkg"]["outputs"].values()))["value"]
    hidden = next(iter(outputs["without_pkg"]["outputs"].values()))["value"]
    assert (value, hidden) == (43, False)  # the package is the step's alone
    envs = [p for p in (ws.home / "environments").iterdir() if p.is_dir()]
    assert len(envs) == 1
    ready = json.loads((envs[0] / ".ready").read_text())
    assert ready["requirements"] == ["argosy-tinypkg==0.1"]
    made = (envs[0] / ".ready").stat().st_mtime_ns

    # another parameter: the step runs again, in the same environment (not made again)
    started = time.monotonic()
    second = _run(ws, wheels, "-p", "x=2")
    cached = time.monotonic() - started
    value = next(iter({t["node_path"]: t for t in second["tasks"]}["with_pkg"]["outputs"].values()))
    assert value["value"] == 44
    assert (envs[0] / ".ready").stat().st_mtime_ns == made
    assert len([p for p in (ws.home / "environments").iterdir() if p.is_dir()]) == 1
    print(f"environment: cold run {cold:.2f} s, cached {cached:.2f} s")

    # the same parameters: a cache hit; another package version: a miss, a new environment
    again = _run(ws, wheels)
    assert {t["node_path"]: t["state"] for t in again["tasks"]}["with_pkg"] == "cached"
    ws.write(PIPE.format(version="0.2"), "envpipe")
    newer = _run(ws, wheels)
    with_pkg = {t["node_path"]: t for t in newer["tasks"]}["with_pkg"]
    assert with_pkg["state"] == "succeeded" and with_pkg["cache"]["status"] == "miss"
    assert next(iter(with_pkg["outputs"].values()))["value"] == 101
    assert len([p for p in (ws.home / "environments").iterdir() if p.is_dir()]) == 2

    # lineage records the step's packages
    ref = f"{newer['id']}/with_pkg"
    tree = ws.argosy("lineage", ref, "--output", "json").json()
    assert tree["artifact"]["produced_by"]["environment"]["requirements"] == ["argosy-tinypkg==0.2"]


def test_a_missing_package_fails_the_task_at_start(ws: Workspace, wheels: dict[str, str]) -> None:
    ws.write(PIPE.format(version="9.9"), "envpipe")
    res = ws.argosy("run", "envpipe.py:envs", "-q", "--output", "json", env=wheels)
    assert res.code == 1
    task = {t["node_path"]: t for t in res.json()["tasks"]}["with_pkg"]
    error = task["attempts"][0]["error"] if task["attempts"] else task["reason"]
    assert "argosy-tinypkg==9.9" in error and "failed" in error, error
    assert "argosy-tinypkg" in error.split("failed:", 1)[1]  # the installer's own words


def test_the_project_file_gives_the_default_packages(ws: Workspace, wheels: dict[str, str]) -> None:
    (ws.root / "argosy.toml").write_text('[environment]\npackages = ["argosy-tinypkg==0.2"]\n')
    ws.write(
        """
        from argosy import pipeline, step

        @step
        def uses() -> int:
            import argosy_tinypkg
            return argosy_tinypkg.VALUE

        @pipeline
        def envs() -> int:
            return uses()
        """,
        "envpipe",
    )
    doc = _run(ws, wheels)
    assert doc["outputs"]["output"]["value"] == 100
