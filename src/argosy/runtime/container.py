"""Container steps: run a command in an image with podman or docker, exchanging files.

Inputs are written to ``/argosy/inputs/NAME`` and outputs read from ``/argosy/outputs/NAME``
inside the container (the attempt's scratch folder, mounted). ``{{inputs.NAME.path}}``,
``{{inputs.NAME.value}}`` and ``{{outputs.NAME.path}}`` in the command are replaced first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argosy.sdk.types import JSON_TYPES
from argosy.stores.artifacts.blobs import ArtifactStore

if TYPE_CHECKING:
    from argosy.runtime.invocation import Invocation, OutputRecord

_PLACEHOLDER = re.compile(r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\.(path|value)\s*\}\}")
MOUNT = "/argosy"


def container_engine() -> str | None:
    """The container CLI to run container steps with: podman first, then docker."""
    chosen = os.environ.get("ARGOSY_CONTAINER_ENGINE")
    if chosen:
        return shutil.which(chosen)
    for candidate in ("podman", "docker"):
        path = shutil.which(candidate)
        if path:
            return path
    return None


def _chosen_engine() -> str | None:
    """``ARGOSY_CONTAINER_ENGINE`` as given (even off PATH), else the one found on PATH."""
    return os.environ.get("ARGOSY_CONTAINER_ENGINE") or container_engine()


def _engine() -> str:
    chosen = _chosen_engine()
    if not chosen:
        from argosy.runtime.launcher import StepFailed

        raise StepFailed(
            "container_error",
            "no container engine: install podman or docker, or set ARGOSY_CONTAINER_ENGINE",
        )
    return chosen


def container_name(attempt_id: str) -> str:
    return f"argosy-{attempt_id.lower()}"


def remove_container(attempt_id: str) -> None:
    """Remove an attempt's container if it outlived its launcher (timeout, cancel, crash)."""
    engine = _chosen_engine()
    if engine:
        for _ in range(3):  # a container whose monitor was just killed may need a retry
            proc = subprocess.run(
                [engine, "rm", "--force", "--ignore", "--time", "0", container_name(attempt_id)],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                return
            time.sleep(0.2)


def image_id(image: str) -> str | None:
    """The local image id behind a (possibly moving) tag, or None if not pulled yet."""
    engine = _chosen_engine()
    if not engine:
        return None
    try:
        proc = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def run_container(inv: Invocation, store: ArtifactStore, scratch: Path) -> dict[str, OutputRecord]:
    from argosy.runtime.launcher import StepFailed, _store_outputs

    step = inv.step
    impl = step["implementation"]
    (scratch / "inputs").mkdir(parents=True, exist_ok=True)
    (scratch / "outputs").mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {}
    for name, source in inv.inputs.items():
        target = scratch / "inputs" / name
        if "value" in source:
            value = source["value"]
            values[name] = value
            target.write_text(value if isinstance(value, str) else json.dumps(value))
        else:
            store.copy_blob_to(source["artifact"]["sha256"], target)
            if source["artifact"]["format"] == "json":
                values[name] = json.loads(target.read_text())
                if isinstance(values[name], str):
                    target.write_text(values[name])

    def substitute(match: re.Match[str]) -> str:
        group, name, kind = match.groups()
        if kind == "path":
            return f"{MOUNT}/{group}/{name}"
        value = values.get(name)
        return value if isinstance(value, str) else json.dumps(value)

    command = [_PLACEHOLDER.sub(substitute, part) for part in impl["command"]]
    argv = [_engine(), "run", "--rm", "--name", container_name(inv.attempt_id),
            "-v", f"{scratch}:{MOUNT}"]  # fmt: skip
    resources = step.get("resources") or {}
    if resources.get("cpu"):
        argv += ["--cpus", str(resources["cpu"])]
    if resources.get("memory"):
        argv += ["--memory", str(resources["memory"])]
    for name in [*step.get("env", {}), *step.get("secrets", [])]:
        if name in os.environ:
            argv += ["-e", name]  # by name: values are not put on a command line
    if resources.get("gpu"):
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        argv += ["--device", "nvidia.com/gpu=" + (devices or "all"), "-e", "CUDA_VISIBLE_DEVICES"]
    argv += [impl["image"], *command]
    proc = subprocess.run(argv, check=False)
    if proc.returncode != 0:
        raise StepFailed(
            "exit_code", f"the container command exited with {proc.returncode}", proc.returncode
        )
    outputs: dict[str, Any] = {}
    for name, declared in step["outputs"].items():
        path = scratch / "outputs" / name
        if not path.exists():
            raise StepFailed(
                "output_error",
                f"the container did not write output {name!r} ({MOUNT}/outputs/{name})",
            )
        ref = declared["type"]
        if ref == "str":
            outputs[name] = path.read_text()
        elif ref in JSON_TYPES:
            outputs[name] = json.loads(path.read_text())
        elif ref == "bytes":
            outputs[name] = path.read_bytes()
        else:
            outputs[name] = path
    return _store_outputs(inv, store, outputs, scratch)
