"""Server task environments: the server's own interpreter, or a virtualenv made for a manifest."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from argosy.executors.base import AttemptLaunch
from argosy.runtime.invocation import Invocation, StoreAccess
from argosy.server.environments import Environments, EnvironmentUnavailable
from argosy.spec.environment import manifest_bytes
from argosy.stores.artifacts.blobs import ArtifactStore, open_artifact_store


def _store(tmp_path: Path) -> ArtifactStore:
    return open_artifact_store(str(tmp_path / "blobs"), "default")


def _put_manifest(store: ArtifactStore, manifest: dict[str, object]) -> str:
    data = manifest_bytes(manifest)  # type: ignore[arg-type]
    store.put_bytes(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wheel(tmp_path: Path) -> Path:
    """A tiny wheel written here (a wheel is a zip with a dist-info), so pip needs no index."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    info = "argosytinypkg-1.0.dist-info"
    files = {
        "argosytinypkg/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: argosytinypkg\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheels / "argosytinypkg-1.0-py3-none-any.whl", "w") as whl:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            whl.writestr(name, text)
    return wheels


def test_the_servers_own_environment_uses_its_interpreter(tmp_path: Path) -> None:
    envs = Environments(tmp_path / "envs", tmp_path / "cache")
    store = _store(tmp_path)
    digest = _put_manifest(store, envs.own_manifest)
    assert digest == envs.own_digest

    def launch(implementation: dict[str, object]) -> AttemptLaunch:
        invocation = Invocation(
            "default", "R", "n", 1, "A", StoreAccess(str(tmp_path)), str(tmp_path),
            {"implementation": implementation}, None, {}, "runs/R/n/1/result.json",
        )  # fmt: skip
        return AttemptLaunch("A", "R", "n", 1, invocation, 1.0, None, 0, None, None)

    assert (
        envs.interpreter(launch({"kind": "python", "environment": digest}), store) == sys.executable
    )
    assert envs.interpreter(launch({"kind": "container", "image": "x"}), store) == sys.executable
    assert not (tmp_path / "envs").exists()  # nothing was prepared


@pytest.mark.slow
def test_a_manifest_with_another_package_version_gets_a_virtualenv_with_exactly_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", str(_wheel(tmp_path)))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    envs = Environments(tmp_path / "envs", tmp_path / "cache")
    store = _store(tmp_path)
    manifest = dict(envs.own_manifest)
    manifest["distributions"] = dict(manifest["distributions"], argosytinypkg="1.0")
    digest = _put_manifest(store, manifest)
    assert envs.differences(manifest) == ["argosytinypkg==1.0"]

    python = envs.prepare(digest, store)
    assert python != sys.executable
    probe = "import argosytinypkg, argosy, sqlalchemy; print(argosytinypkg.VALUE)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"  # its own package, and the server's packages too
    assert envs.prepare(digest, store) == python  # prepared once, then reused


def test_a_manifest_for_another_python_version_is_refused_with_both_versions(
    tmp_path: Path,
) -> None:
    envs = Environments(tmp_path / "envs", tmp_path / "cache")
    store = _store(tmp_path)
    digest = _put_manifest(store, dict(envs.own_manifest, python="2.7.18"))
    with pytest.raises(
        EnvironmentUnavailable, match=r"needs Python 2\.7 .* this server runs Python 3\.\d+"
    ):
        envs.prepare(digest, store)


def test_a_package_pip_cannot_find_fails_with_pips_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    envs = Environments(tmp_path / "envs", tmp_path / "cache")
    store = _store(tmp_path)
    manifest = dict(envs.own_manifest)
    manifest["distributions"] = dict(manifest["distributions"], nosuchpackageargosy="9.9")
    digest = _put_manifest(store, manifest)
    with pytest.raises(EnvironmentUnavailable, match="nosuchpackageargosy"):
        envs.prepare(digest, store)
