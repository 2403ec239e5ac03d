"""Container steps: run a command in an image with podman or docker, exchanging files.

Inputs are written to ``/argosy/inputs/NAME`` and outputs read from ``/argosy/outputs/NAME``
inside the container (the attempt's scratch folder, mounted). ``{{inputs.NAME.path}}``,
``{{inputs.NAME.value}}`` and ``{{outputs.NAME.path}}`` in the command are replaced first.

The container gets what a process step gets, and no more:

- declared secrets as files ``/run/secrets/NAME`` (``ARGOSY_SECRETS_DIR``), written to a
  private folder in memory (``/dev/shm``) and mounted read-only, so they are in neither the
  environment, the image, the command line nor ``podman inspect``; declared ``env`` by name;
- no network unless the step asks (``container_step(network=True)``);
- a read-only root filesystem, its scratch folder at ``/argosy`` and a ``/tmp`` tmpfs;
- a non-root user: the launcher's own uid; when the launcher is root (rootful podman,
  ``--user UID:GID``), on a server with task users the tenant's task uid and gid
  (``ARGOSY_CONTAINER_USER``, set by the executor), else ``nobody`` (65534) — the scratch folder
  is handed to that uid; every capability dropped and ``no-new-privileges``;
- ``cpu``/``memory`` (swap off: the memory limit is a hard limit) and ``gpu`` devices; a
  container the kernel killed for its memory fails the task with ``memory_limit``;
- it is removed when its command ends, and by the executor at timeout, cancel or a crash.
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
SECRETS_MOUNT = "/run/secrets"
NOBODY = 65534
USER_ENV = "ARGOSY_CONTAINER_USER"  # "UID:GID": on a server, the tenant's task uid and gid


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


def container_user() -> tuple[int, int]:
    """Who the container's processes are: this process's uid and gid; when this is root,
    the tenant's task uid and gid the server's executor gives in ``ARGOSY_CONTAINER_USER``,
    else ``nobody``."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    given = os.environ.get(USER_ENV, "")
    uid, _, gid = given.partition(":")
    if uid.isdigit() and gid.isdigit() and int(uid) != 0:
        return int(uid), int(gid)
    return NOBODY, NOBODY


def _container_user(scratch: Path) -> tuple[int, int]:
    """:func:`container_user`; when this is root, the scratch folder is handed to it (to
    write its outputs)."""
    user = container_user()
    if os.getuid() != 0:
        return user
    for folder, _, files in os.walk(scratch):
        os.chown(folder, *user)
        for file in files:
            os.chown(os.path.join(folder, file), *user)
    return user


def _secret_files(names: list[str], user: tuple[int, int]) -> Path | None:
    """The declared secrets this process holds, as files in a new private folder (in memory
    where ``/dev/shm`` exists) readable by the container's user only; None without secrets."""
    import tempfile

    found = {n: os.environ[n] for n in names if n in os.environ}
    if not found:
        return None
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = Path(tempfile.mkdtemp(prefix="argosy-secrets-", dir=base))
    for n, value in found.items():
        path = folder / n
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        if os.getuid() == 0:
            os.chown(path, *user)
    if os.getuid() == 0:
        os.chown(folder, *user)
    folder.chmod(0o500)
    return folder


def _size(value: Any) -> str:
    from argosy.units import format_bytes

    return format_bytes(value) if isinstance(value, int) else str(value)


def _oom_killed(engine: str, name: str) -> bool:
    """Whether the kernel killed the container for its memory (cgroup OOM)."""
    try:
        proc = subprocess.run(
            [engine, "inspect", "--format", "{{.State.OOMKilled}}", name],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.stdout.strip().lower() == "true"


def run_confined(
    inv: Invocation, scratch: Path, image: str, command: list[str],
    extra: list[str] | None = None,
) -> int:  # fmt: skip
    """Run ``command`` in ``image`` with the guarantees above (the attempt's scratch folder
    at ``/argosy``; ``extra``: more ``podman run`` options, e.g. read-only mounts), remove the
    container, and return its exit status; ``StepFailed`` (``memory_limit``) when the kernel
    killed it for its memory."""
    from argosy.runtime.launcher import StepFailed

    step = inv.step
    impl = step["implementation"]
    engine = _engine()
    name = container_name(inv.attempt_id)
    user = _container_user(scratch)
    secrets = _secret_files(step.get("secrets", []), user)
    argv = [engine, "run", "--name", name, "-v", f"{scratch}:{MOUNT}",
            "--user", f"{user[0]}:{user[1]}", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--network", "bridge" if impl.get("network") else "none"]  # fmt: skip
    resources = step.get("resources") or {}
    if resources.get("cpu"):
        argv += ["--cpus", str(resources["cpu"])]
    if resources.get("memory"):
        argv += ["--memory", str(resources["memory"]), "--memory-swap", str(resources["memory"])]
    for var in step.get("env", {}):
        if var in os.environ:
            argv += ["-e", var]  # by name: values are not put on a command line
    if secrets is not None:
        argv += ["-v", f"{secrets}:{SECRETS_MOUNT}:ro", "-e", f"ARGOSY_SECRETS_DIR={SECRETS_MOUNT}"]
    if resources.get("gpu"):
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        argv += ["--device", "nvidia.com/gpu=" + (devices or "all"), "-e", "CUDA_VISIBLE_DEVICES"]
    argv += [*(extra or []), image, *command]
    try:
        proc = subprocess.run(argv, check=False)
        # the engine's OOMKilled flag; runc on cgroup v2 does not always set it, so a SIGKILL
        # (137) of a container with a memory limit counts too: nothing else here sends one
        # (a timeout or a cancel kills the launcher itself first)
        oom = _oom_killed(engine, name) or (
            proc.returncode == 137 and bool(resources.get("memory"))
        )
    finally:
        remove_container(inv.attempt_id)
        if secrets is not None:
            shutil.rmtree(secrets, ignore_errors=True)
    if oom:
        raise StepFailed(
            "memory_limit",
            f"the container used more than its memory limit ({_size(resources.get('memory'))}) "
            "and was killed; ask for more with memory=...",
            proc.returncode,
        )
    return proc.returncode


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
    returncode = run_confined(inv, scratch, impl["image"], command)
    if returncode != 0:
        raise StepFailed("exit_code", f"the container command exited with {returncode}", returncode)
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
