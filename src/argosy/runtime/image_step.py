"""Python steps in a container image: ``@step(image="repo@sha256:...")``.

The launcher on the host (this module, called by :mod:`argosy.runtime.launcher`) does every
piece of I/O with the artifact store, and the step's code runs in the image, confined exactly
as a container step (:func:`argosy.runtime.container.run_confined`: non-root, no network
unless asked, read-only root, secrets as files under ``/run/secrets``, resource limits):

1. it stages what the step reads in the attempt's scratch folder, mounted at ``/argosy``: the
   code package (unpacked), the input blobs in a folder artifact store (``/argosy/store``,
   plaintext even where the real store encrypts), and an invocation naming that store;
2. it mounts the Argosy runtime read-only: the ``argosy`` package at ``/opt/argosy/lib`` and
   the site-packages folders of the interpreter running this launcher at
   ``/opt/argosy/site/N`` (put *after* the image's own paths, so the image's packages win and
   the runtime's dependencies fill in what the image lacks); nothing of Argosy is assumed
   installed there;
3. the image's ``python3`` runs the same launcher against the staged store: it loads the
   inputs, calls the function and writes the outputs and its result record there;
4. back on the host, each output blob moves into the real store (encrypted where it
   encrypts) and the record's outcome becomes this attempt's.

The image needs a ``python3`` on its ``PATH`` of the same major.minor version as the runtime
(compiled dependencies such as pydantic's are built for it); otherwise the task fails at once
with ``container_error``, naming the image and both versions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from argosy.runtime.container import MOUNT, run_confined
from argosy.stores.artifacts.blobs import ArtifactStore, BlobInfo, open_artifact_store

if TYPE_CHECKING:
    from argosy.runtime.invocation import Invocation, OutputRecord

RUNTIME = "/opt/argosy"
WRONG_PYTHON = 86  # the in-image bootstrap's exit status when its Python does not fit
NOT_FOUND = (126, 127)  # podman/docker: the command could not be found or run in the image

# run by the image's python3: check the version, put the mounted runtime on the path (after
# the image's own packages), then run the launcher on the staged invocation
BOOT = f"""
import json, sys
want = tuple(int(p) for p in sys.argv[1].split("."))
if sys.version_info[:2] != want:
    with open("{MOUNT}/python-version", "w") as f:
        f.write("%d.%d.%d" % sys.version_info[:3])
    sys.exit({WRONG_PYTHON})
sys.path.insert(0, "{RUNTIME}/lib")
sys.path.extend(json.loads(sys.argv[2]))
from argosy.runtime.launcher import main
sys.exit(main(sys.argv[3:]))
"""


def site_folders() -> list[str]:
    """This interpreter's site-packages folders, in path order (those a ``.pth`` adds too,
    as when a task venv sees the server's packages)."""
    found: list[str] = []
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")) and os.path.isdir(entry):
            real = os.path.realpath(entry)
            if real not in found:
                found.append(real)
    return found


def _runtime_mounts() -> tuple[list[str], list[str]]:
    """Read-only binds of the ``argosy`` package and of this interpreter's site-packages,
    and where the latter are in the container (in path order)."""
    import argosy

    package = Path(argosy.__file__).resolve().parent
    mounts = ["-v", f"{package}:{RUNTIME}/lib/argosy:ro"]
    inside = []
    for n, folder in enumerate(site_folders()):
        inside.append(f"{RUNTIME}/site/{n}")
        mounts += ["-v", f"{folder}:{RUNTIME}/site/{n}:ro"]
    return mounts, inside


def _stage(inv: Invocation, store: ArtifactStore, scratch: Path) -> Invocation:
    """The code package unpacked and the input blobs copied under ``scratch``; the
    invocation the launcher in the image reads (paths as the container sees them)."""
    from argosy.runtime.invocation import StoreAccess
    from argosy.runtime.launcher import StepFailed
    from argosy.spec.code_package import extract_package

    staged = open_artifact_store(str(scratch / "store"), inv.tenant)
    cache = Path(inv.cache_dir)
    for source in inv.inputs.values():
        art = source.get("artifact")
        if art is None:
            continue
        elements = [art]
        if art["format"] == "collection":  # a map()'s outputs: the list, then each element
            staged.put_bytes(store.read_blob(art["sha256"]))
            elements = [e for e in json.loads(store.read_blob(art["sha256"])) if e is not None]
        for element in elements:
            path = store.blob_path(element["sha256"], cache_dir=cache / "blobs")
            staged.put_file(path, BlobInfo(element["sha256"], path.stat().st_size))
    if inv.code is None:
        raise StepFailed("input_error", f"step {inv.step['name']!r} has no code package")
    sha = inv.code.sha256.removeprefix("sha256:")
    package = store.blob_path(sha, cache_dir=cache / "blobs")
    extract_package(package, scratch / "cache" / "code" / sha)
    (scratch / "work").mkdir(exist_ok=True)
    step = {**inv.step, "implementation": {**inv.step["implementation"], "image": None}}
    return inv.completed(
        step=step,  # in the image, the launcher runs the step itself
        store=StoreAccess(url=f"{MOUNT}/store"), cache_dir=f"{MOUNT}/cache",
        scratch=f"{MOUNT}/work", encryption=None, status_fd=None,
    )  # fmt: skip


def run_in_image(inv: Invocation, store: ArtifactStore, scratch: Path) -> dict[str, OutputRecord]:
    """Run the Python step of ``inv`` in its image; its outputs, stored in ``store``."""
    from argosy.runtime.invocation import OutputRecord, ResultRecord
    from argosy.runtime.launcher import StepFailed

    image = str(inv.step["implementation"]["image"])
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    inner = _stage(inv, store, scratch)
    (scratch / "invocation.json").write_text(json.dumps(inner.to_json()))
    mounts, site = _runtime_mounts()
    command = ["-c", BOOT, want, json.dumps(site), f"{MOUNT}/invocation.json"]
    extra = [*mounts, "--workdir", f"{MOUNT}/work", "--entrypoint", "python3",
             "-e", "HOME=/tmp", "-e", "PYTHONDONTWRITEBYTECODE=1", "-e", "PYTHONUNBUFFERED=1"]  # fmt: skip
    code = run_confined(inv, scratch, image, command, extra)
    if code == WRONG_PYTHON and (scratch / "python-version").is_file():
        found = (scratch / "python-version").read_text().strip()
        raise StepFailed(
            "container_error",
            f"image {image} has Python {found}, but this Argosy runs Python steps with Python "
            f"{want} (its runtime and compiled dependencies are built for it): use an image with "
            f"Python {want}, or make the step a container_step",
        )
    if code in NOT_FOUND:
        raise StepFailed(
            "container_error",
            f"image {image} has no python3 on its PATH (the container could not start it, "
            f"exit {code}): a Python step in an image needs Python {want} there",
        )
    staged = open_artifact_store(str(scratch / "store"), inv.tenant)
    doc = staged.get_record(inv.result_key)
    if doc is None:
        raise StepFailed(
            "exit_code", f"python3 in image {image} exited with {code} before the step's result "
            "was written (see the log)", code or 1,
        )  # fmt: skip
    record = ResultRecord.from_json(doc)
    if not record.succeeded:
        raise StepFailed(record.reason or "exception", record.error or "the step failed", code or 1)
    outputs: dict[str, OutputRecord] = {}
    for name, out in record.outputs.items():
        path = staged.blob_path(out.sha256, cache_dir=scratch / "cache" / "blobs")
        info = store.put_file(path, BlobInfo(out.sha256, out.size), move=True)
        outputs[name] = OutputRecord(
            sha256=info.sha256, size=info.size, type=out.type, format=out.format,
            serializer=out.serializer, filename=out.filename, json_text=out.json_text,
        )  # fmt: skip
    return outputs
