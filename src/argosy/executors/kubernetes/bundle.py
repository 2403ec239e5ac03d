"""The Argosy runtime copied into a pod whose step runs in an image of its own.

A Python step with ``@step(image=...)`` runs on Kubernetes the way Kubeflow Pipelines runs its
launcher: the attempt's pod gets an init container in the deployment's runtime image
(``ARGOSY_KUBERNETES_RUNTIME_IMAGE``, which has Argosy installed) that runs
``python -m argosy.executors.kubernetes.bundle /opt/argosy``; it writes into a shared
``emptyDir``:

- ``lib/``: the ``argosy`` package and its distribution metadata (the entry points name the
  byte stores: ``argosy-task+http://`` is found through them);
- ``site/``: the distributions the launcher imports at task time, with their own
  dependencies (:data:`TASK_TIME`: httpx for the task store, cryptography for encryption at
  rest), copied file by file from their installed ``RECORD``;
- ``runtime.json``: the Python they are built for (version, implementation, ``SOABI``);
- ``boot.py``: what the step image's ``python3`` runs first (:data:`BOOT`).

The main container runs the step's image with that folder mounted read-only at
``/opt/argosy`` and ``python3 /opt/argosy/boot.py IMAGE INVOCATION``. The boot checks, before
anything is imported, that this ``python3`` is the runtime's: same implementation, same
major.minor version and the same ``SOABI`` (which names the platform and the C library too:
``cpython-311-x86_64-linux-gnu``). Compiled dependencies (cffi's ``_cffi_backend`` is built
per Python version; cryptography's ``abi3`` module for glibc) load only there, so any other
Python fails the task at once with one ``container_error`` line naming the image and both
Pythons; an image without ``python3`` cannot start its container (the executor says so).
Then it puts ``lib/`` first on ``sys.path`` and ``site/`` last (the image's own packages win,
as for a local image step, and Argosy's dependencies fill in what the image lacks) and runs
the launcher, which talks to the task store with the attempt's token as in any pod.

What the launcher imports at task time was measured (``tests/test_kubernetes_executor.py``
imports it under ``python -S`` with only this folder on the path): ``argosy`` itself, httpx
(httpcore, h11, anyio, sniffio, idna, certifi) and cryptography (cffi, pycparser).
pydantic is not among them. The step's own libraries (numpy, pandas, pyarrow for its data
types) are the image's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path
from typing import Any

TASK_TIME = ("httpx", "cryptography")  # third-party roots of what the launcher imports in a pod
WRONG_PYTHON = 86  # the boot's exit status when the image's Python does not fit
MARK = "argosy-boot: "  # the boot's one line on stderr (the executor takes it as the error)
MANIFEST = "runtime.json"

# Run by the step image's python3, whatever its version: old syntax only (no f-strings), and
# nothing imported but the standard library until the Python is known to fit.
BOOT = """\
import json, os, sys, sysconfig
here = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == here:
    del sys.path[0]
with open(os.path.join(here, "runtime.json")) as f:
    want = json.load(f)
image = sys.argv[1]
found = "%d.%d.%d" % tuple(sys.version_info[:3])
name = sys.implementation.name
soabi = sysconfig.get_config_var("SOABI") or ""
wanted = "%s %s" % (want["implementation"], ".".join(str(p) for p in want["version"]))
problem = None
if name != want["implementation"] or list(sys.version_info[:2]) != want["version"]:
    problem = "has Python %s (%s)" % (found, name)
elif soabi != want["soabi"]:
    problem = "has Python %s built for %s" % (found, soabi or "an unknown ABI")
if problem:
    sys.stderr.write(
        "%simage %s %s, but the Argosy runtime in the pod is built for %s (%s; its compiled "
        "dependencies too): use an image with Python %s.%d\\n"
        % (@MARK@, image, problem, wanted, want["soabi"], want["version"][0], want["version"][1])
    )
    sys.exit(@CODE@)
sys.path.insert(0, os.path.join(here, "lib"))
sys.path.append(os.path.join(here, "site"))
from argosy.runtime.launcher import main
sys.exit(main(sys.argv[2:]))
""".replace("@MARK@", repr(MARK)).replace("@CODE@", str(WRONG_PYTHON))

_SKIP = re.compile(r"(^|/)__pycache__(/|$)|\.pyc$")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...] = TASK_TIME) -> list[metadata.Distribution]:
    """The installed distributions of ``roots`` and their requirements, transitively.

    A requirement that only an extra asks for is left out; other environment markers are not
    evaluated (one that does not apply here is simply not installed, and skipped)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _canonical(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in map(_canonical, roots):
                raise
            continue
        found[name] = dist
        for requirement in dist.requires or []:
            if "extra" in requirement.partition(";")[2]:
                continue
            match = _REQUIREMENT.match(requirement)
            if match:
                todo.append(match.group(1))
    return [found[k] for k in sorted(found)]


def _copy_tree(source: Path, target: Path) -> tuple[int, int]:
    files = size = 0
    for folder, dirs, names in os.walk(source):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = Path(folder).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in names:
            if name.endswith(".pyc"):
                continue
            shutil.copyfile(Path(folder, name), target / rel / name)
            files, size = files + 1, size + (target / rel / name).stat().st_size
    return files, size


def _copy_distribution(dist: metadata.Distribution, site: Path) -> tuple[int, int]:
    """The files of ``dist`` under its site-packages folder (scripts and bytecode left out)."""
    files = size = 0
    for entry in dist.files or []:
        rel = str(entry)
        if rel.startswith(("..", "/")) or _SKIP.search(rel):
            continue
        source = Path(str(dist.locate_file(entry)))
        if not source.is_file():
            continue
        target = site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files, size = files + 1, size + target.stat().st_size
    return files, size


def _argosy_metadata(lib: Path) -> int:
    """Argosy's own distribution metadata (its entry points), beside the package."""
    try:
        dist = metadata.distribution("argosy")
    except metadata.PackageNotFoundError:  # a source tree: no entry points to copy
        return 0
    folder = lib / f"argosy-{dist.version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name in ("METADATA", "entry_points.txt", "top_level.txt"):
        text = dist.read_text(name)
        if text is not None:
            (folder / name).write_text(text)
            written += 1
    return written


def python_identity() -> dict[str, Any]:
    """The Python this runtime is built for, as the boot compares it."""
    return {
        "implementation": sys.implementation.name,
        "version": list(sys.version_info[:2]),
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "platform": sysconfig.get_platform(),
    }


def write_bundle(target: Path) -> dict[str, Any]:
    """Copy the runtime into ``target`` (an empty or missing folder); its manifest."""
    import argosy

    started = time.monotonic()
    lib, site = target / "lib", target / "site"
    files, size = _copy_tree(Path(argosy.__file__).resolve().parent, lib / "argosy")
    files += _argosy_metadata(lib)
    distributions: dict[str, str] = {}
    compiled: list[str] = []
    for dist in closure():
        n, s = _copy_distribution(dist, site)
        files, size = files + n, size + s
        distributions[dist.metadata["Name"]] = dist.version
        compiled += [str(f) for f in dist.files or [] if str(f).endswith((".so", ".pyd"))]
    manifest = {
        **python_identity(),
        "argosy": argosy.__version__ if hasattr(argosy, "__version__") else None,
        "distributions": distributions,
        "compiled": sorted(compiled),
        "files": files,
        "bytes": size,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1))
    (target / "boot.py").write_text(BOOT)
    manifest["seconds"] = round(time.monotonic() - started, 3)
    return manifest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m argosy.executors.kubernetes.bundle TARGET_FOLDER\n")
        return 2
    done = write_bundle(Path(args[0]))
    print(
        f"copied the Argosy runtime for Python {done['python']} ({done['soabi']}): "
        f"{done['files']} files, {done['bytes'] / 2**20:.1f} MiB, "
        f"{len(done['distributions'])} distributions, in {done['seconds']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
