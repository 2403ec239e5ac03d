"""Python environments for tasks on a server: the one a step was compiled in, or the server's.

A Python step records the sha256 of its environment manifest (Python version, platform,
installed distributions; ``spec/environment.py``). The server runs a task:

- with its own interpreter when the manifest is the server's own (the common case: the
  same image or lock file on laptops, CI and server);
- otherwise in a virtualenv prepared once per manifest under ``<home>/environments/``:
  created with access to the server's packages (pip included), then ``pip install --no-deps`` of exactly
  the distributions whose versions differ or that the server lacks. Pip's own configuration
  (``PIP_INDEX_URL``, ``PIP_FIND_LINKS``, ...) says where packages come from.

A manifest for another Python version or platform cannot be satisfied here: the task fails
at start with a message naming both.

A step with its own packages (``@step(packages=[...])``) has a manifest of its own (the base
one plus ``requirements``), so it gets a virtualenv of its own, made once per package set and
Python version and then reused: made with ``uv`` when it is installed (``uv venv``, ``uv pip
install``; uv reads ``UV_INDEX``, ``UV_FIND_LINKS``, ``UV_OFFLINE``... and none of pip's
configuration), else with ``venv`` and pip. A package that cannot be installed fails the task
at start with the installer's own words (which package, which index). Local mode uses the same
class (``client/local.py``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from argosy.errors import ExecutionError
from argosy.executors.base import AttemptLaunch
from argosy.spec.environment import environment_manifest, manifest_bytes
from argosy.stores.artifacts.blobs import ArtifactStore

log = logging.getLogger("argosy.server")

NEVER_INSTALLED = {"argosy", "pip", "setuptools", "wheel"}  # the server's own are used
PIP_TIMEOUT = 1800.0


class EnvironmentUnavailable(ExecutionError):
    """A task's Python environment cannot be prepared on this server."""


class Environments:
    """Maps a step's environment digest to the Python interpreter that runs it."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root = root
        self.own_manifest = environment_manifest(cache_dir)
        self.own_digest = "sha256:" + hashlib.sha256(manifest_bytes(self.own_manifest)).hexdigest()
        self._lock = threading.Lock()

    def interpreter(self, launch: AttemptLaunch, store: ArtifactStore) -> str:
        """The interpreter for an attempt (container steps and foreign-free steps: ours)."""
        impl = launch.invocation.step["implementation"]
        digest = impl.get("environment") if impl.get("kind") != "container" else None
        if not digest or digest == self.own_digest:
            return sys.executable
        return self.prepare(digest, store)

    def prepare(self, digest: str, store: ArtifactStore) -> str:
        """The virtualenv for the manifest ``digest`` (created once; safe across processes)."""
        folder = self.root / digest.removeprefix("sha256:")[:32]
        python = folder / "bin" / "python"
        ready = folder / ".ready"
        if ready.exists():
            return str(python)
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with (self.root / ".lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one preparation per manifest, server-wide
                if ready.exists():
                    return str(python)
                manifest = json.loads(store.read_blob(digest.removeprefix("sha256:")))
                self._check_compatible(digest, manifest)
                shutil.rmtree(folder, ignore_errors=True)  # a half-made one from a crash
                log.info("preparing the Python environment %s in %s", digest[:19], folder)
                uv = shutil.which("uv") or _beside_python("uv")
                if uv:
                    self._run([uv, "venv", "--quiet", "--python", sys.executable, str(folder)])
                else:
                    self._run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
                see_server_packages(python)
                wanted = self.differences(manifest)
                if wanted:
                    self._run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed",
                               "--disable-pip-version-check", "--quiet", *wanted])  # fmt: skip
                requirements = [str(r) for r in manifest.get("requirements") or []]
                if requirements:
                    install = (
                        [uv, "pip", "install", "--quiet", "--python", str(python)]
                        if uv
                        else [str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check"]
                    )  # fmt: skip
                    self._run([*install, *requirements], what=requirements)
                ready.write_text(json.dumps({"installed": wanted, "requirements": requirements}))
                return str(python)

    def differences(self, manifest: dict[str, Any]) -> list[str]:
        """``name==version`` of each distribution the manifest has and the server has not."""
        own = self.own_manifest["distributions"]
        return [
            f"{name}=={version}"
            for name, version in sorted(manifest.get("distributions", {}).items())
            if own.get(name) != version and name not in NEVER_INSTALLED
        ]

    def _check_compatible(self, digest: str, manifest: dict[str, Any]) -> None:
        here = (".".join(platform.python_version_tuple()[:2]), self.own_manifest["platform"])
        there = (".".join(str(manifest.get("python", "")).split(".")[:2]), manifest.get("platform"))
        if here != there:
            raise EnvironmentUnavailable(
                f"environment {digest[:19]} needs Python {there[0]} on {there[1]}, but this "
                f"server runs Python {here[0]} on {here[1]}; compile the pipeline with the "
                "server's Python version, or run it on a matching server"
            )

    @staticmethod
    def _run(command: list[str], what: list[str] | None = None) -> None:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EnvironmentUnavailable(f"preparing a task environment failed: {exc}") from None
        if done.returncode != 0 and what:
            said = " ".join(line.strip() for line in (done.stderr or done.stdout).splitlines())
            raise EnvironmentUnavailable(
                f"installing the step's packages {', '.join(what)} failed: {said[-600:]}; check "
                "the names and versions, and where packages come from (UV_INDEX, UV_FIND_LINKS "
                "for uv; PIP_INDEX_URL, PIP_FIND_LINKS for pip)"
            )
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise EnvironmentUnavailable(
                f"preparing a task environment failed ({' '.join(command[:4])} ...): {tail}; "
                "check the server's pip configuration (PIP_INDEX_URL) and the package versions"
            )


def _beside_python(name: str) -> str | None:
    """A tool installed in this interpreter's environment (a venv's ``bin``, not on PATH)."""
    found = Path(sys.executable).parent / name
    return str(found) if found.is_file() else None


def see_server_packages(python: Path) -> None:
    """Let the virtualenv of ``python`` see this interpreter's site-packages after its own (a
    ``.pth`` file that also runs their ``.pth`` files, editable installs included), so only
    differing distributions need installing and the virtualenv's versions win."""
    found = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    Path(found, "zz-argosy-server-packages.pth").write_text(lines)
