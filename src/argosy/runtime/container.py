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
- a non-root user in a user namespace of its own (rootful mode, below), or the launcher's own
  uid (rootless mode); the scratch folder is handed to that user; every capability dropped and
  ``no-new-privileges``;
- ``cpu``/``memory`` (swap off: the memory limit is a hard limit) and ``gpu`` devices; a
  container the kernel killed for its memory fails the task with ``memory_limit``;
- it is removed when its command ends, and by the executor at timeout, cancel or a crash.

**Mode** (``ARGOSY_CONTAINER_MODE``: ``auto`` | ``rootful`` | ``rootless``). ``auto`` is
``rootful`` when the launcher is root, else ``rootless`` (podman run by a non-root user).

- ``rootful``: podman runs as root and the container gets a **user namespace** in which
  no id is the host's root. On a server with task users (``ARGOSY_CONTAINER_USER``, the
  tenant's task uid and gid set by the executor) the namespace holds exactly one uid and one
  gid, the tenant's: ``--uidmap 0:UID:1 --gidmap 0:GID:1 --user 0:0`` — the container's
  processes are that uid on the host, "root" in the container is that uid too (without a
  capability), and no other host id exists in it. Without a task user (a root launcher on a
  laptop or in CI) it holds a range of unprivileged ids, ``--uidmap 0:BASE:65536`` (and the
  same for gids) with ``--user 65534:65534``: the processes are host uid ``BASE + 65534``, the
  image's root is ``BASE`` (``ARGOSY_CONTAINER_UID_BASE``, default 1 000 000 000: far above the
  task uids, which start at ``ARGOSY_TASK_UID_BASE`` (e.g. 720 000) and the usual
  ``/etc/subuid`` ranges; values below 100 000 000 are refused).

  Why not the 65536-id range *plus* the task uid mapped to itself
  (``--uidmap 0:BASE:65536 --uidmap UID:UID:1``)? podman 4.3 (Debian 12's) refuses nothing but
  then cannot mount the container: for a mapping that is not one contiguous range it makes a
  chowned copy of the image's top layer *and* mounts the layers id-mapped, and the overlay
  mount fails (``permission denied``); mappings that start at container id 0 and are one range
  on both sides work, and with id-mapped mounts they cost nothing measurable at start-up (no
  copy of the image: 0.30-0.40 s for a busybox container with or without a mapping, the same
  for a 68 MB Python image). A one-id namespace is the range that puts the process at the task
  uid; the price: the step sees itself as uid 0 (programs that check for root think they are,
  but hold no capability, and the root filesystem is read-only), and files of the image owned
  by ids other than root show as ``nobody`` (reachable through their "other" permission bits).
- ``rootless``: podman runs as the launcher's (non-root) user, with ``--user`` its uid and gid.
  A memory limit then needs the cgroup v2 ``memory`` controller delegated to that user (a
  systemd ``user@UID.service`` with ``Delegate=memory``); on a host without it (cgroup v1, or no
  delegation) podman would run the container *without* its limit, so a step that asks for
  ``memory`` fails at start with ``container_error`` naming the reason and the fix instead.
  ``rootless`` on a root launcher is refused (running podman as each tenant's task uid, with
  its own image storage, is not done yet).

The mode and the user namespace of each container are written as one line to the task's log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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
MODE_ENV = "ARGOSY_CONTAINER_MODE"  # auto | rootful | rootless (the module's docstring)
MODES = ("auto", "rootful", "rootless")
UID_BASE_ENV = "ARGOSY_CONTAINER_UID_BASE"
DEFAULT_UID_BASE = 1_000_000_000
ID_RANGE = 65536  # ids of a rootful container without a task user: 0..65535
MIN_UID_BASE = 100_000_000  # far above task uids (ARGOSY_TASK_UID_BASE + N) and /etc/subuid
MAX_UID_BASE = 2**32 - 2 - ID_RANGE  # (uid_t) -1 is no uid
CGROUP_ROOT = Path("/sys/fs/cgroup")


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
    """The host uid and gid of the container's processes (see the module's docstring): in
    rootless mode this process's; as root, the tenant's task uid and gid the server's executor
    gives in ``ARGOSY_CONTAINER_USER``, else ``BASE + 65534`` (``nobody`` of the namespace)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    task = _task_user()
    if task is not None:
        return task
    base = uid_base()
    return base + NOBODY, base + NOBODY


def _task_user() -> tuple[int, int] | None:
    given = os.environ.get(USER_ENV, "")
    uid, _, gid = given.partition(":")
    if uid.isdigit() and gid.isdigit() and int(uid) != 0:
        return int(uid), int(gid)
    return None


def uid_base() -> int:
    """``ARGOSY_CONTAINER_UID_BASE``: the first host id of a root launcher's containers
    without a task user (their ids 0-65535 are host ids ``BASE``-``BASE+65535``)."""
    from argosy.runtime.launcher import StepFailed

    given = os.environ.get(UID_BASE_ENV, "").strip()
    if not given:
        return DEFAULT_UID_BASE
    if not given.isdigit() or not MIN_UID_BASE <= int(given) <= MAX_UID_BASE:
        raise StepFailed(
            "container_error",
            f"{UID_BASE_ENV}={given!r} is not a safe first host id for containers: use a whole "
            f"number from {MIN_UID_BASE} to {MAX_UID_BASE} (default {DEFAULT_UID_BASE})",
        )
    return int(given)


def memory_delegated(uid: int | None = None, root: Path = CGROUP_ROOT) -> bool:
    """Whether rootless podman of user ``uid`` (default: this process's) can enforce a memory
    limit: cgroup v2 (``cgroup.controllers`` at the root) with the ``memory`` controller
    delegated to that user's systemd service (``user@UID.service``), or to the cgroup this
    process is in when that is the user's own."""
    uid = os.getuid() if uid is None else uid
    if not (root / "cgroup.controllers").is_file():
        return False  # cgroup v1 (or hybrid): no delegation to unprivileged users
    candidates = [root / f"user.slice/user-{uid}.slice/user@{uid}.service"]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::") and line[3:].strip("/"):  # a subtree, not the root
                candidates.append(root / line[3:].strip("/"))
    except OSError:
        pass
    for folder in candidates:
        try:
            if folder.stat().st_uid == uid and "memory" in (
                (folder / "cgroup.controllers").read_text().split()
            ):
                return True
        except OSError:
            continue
    return False


def container_mode() -> str:
    """The mode containers run in (``rootful`` or ``rootless``; module docstring), from
    ``ARGOSY_CONTAINER_MODE``; ``StepFailed`` (``container_error``) for one that cannot work
    for this launcher."""
    from argosy.runtime.launcher import StepFailed

    asked = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    root = os.getuid() == 0
    if asked == "auto":
        return "rootful" if root else "rootless"
    if asked not in MODES:
        raise StepFailed(
            "container_error",
            f"{MODE_ENV}={asked!r} is not a container mode: use auto, rootful or rootless",
        )
    if asked == "rootful" and not root:
        raise StepFailed(
            "container_error",
            f"{MODE_ENV}=rootful needs the launcher to run as root (it runs as uid "
            f"{os.getuid()}): run the server as root, or use rootless or auto",
        )
    if asked == "rootless" and root:
        raise StepFailed(
            "container_error",
            f"{MODE_ENV}=rootless needs a server that does not run as root (rootless podman "
            "as each tenant's task uid is not supported yet): use rootful or auto",
        )
    return asked


def userns_options(mode: str) -> tuple[list[str], str]:
    """The ``podman run`` options that set the container's user (and, in rootful mode, its
    user namespace), and a line for the log that says what they are."""
    if mode == "rootless":
        uid, gid = os.getuid(), os.getgid()
        return ["--user", f"{uid}:{gid}"], (
            f"container mode rootless: podman runs as uid {uid}; the container as {uid}:{gid}"
        )
    task = _task_user()
    if task is not None:
        uid, gid = task
        options = ["--uidmap", f"0:{uid}:1", "--gidmap", f"0:{gid}:1", "--user", "0:0"]
        return options, (
            f"container mode rootful: user namespace uid 0:{uid}:1 gid 0:{gid}:1 (the "
            f"tenant's task uid and gid only; no host root in it)"
        )
    base = uid_base()
    options = ["--uidmap", f"0:{base}:{ID_RANGE}", "--gidmap", f"0:{base}:{ID_RANGE}",
               "--user", f"{NOBODY}:{NOBODY}"]  # fmt: skip
    return options, (
        f"container mode rootful: user namespace 0:{base}:{ID_RANGE} (uids and gids); runs as "
        f"{NOBODY}:{NOBODY}, host uid {base + NOBODY}"
    )


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
    resources = step.get("resources") or {}
    mode = container_mode()
    if mode == "rootless" and resources.get("memory") and not memory_delegated():
        raise StepFailed(
            "container_error",
            f"rootless containers cannot enforce this step's memory limit "
            f"({_size(resources['memory'])}) here: the host does not delegate the cgroup v2 "
            f"memory controller to uid {os.getuid()} (cgroup v1, or no Delegate=memory for "
            f"user@{os.getuid()}.service); enable that delegation, or run the server as root "
            f"({MODE_ENV}=rootful or auto)",
        )
    identity, described = userns_options(mode)
    user = _container_user(scratch)
    secrets = _secret_files(step.get("secrets", []), user)
    print(f"argosy: {described}", file=sys.stderr, flush=True)
    argv = [engine, "run", "--name", name, "-v", f"{scratch}:{MOUNT}", *identity,
            "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--network", "bridge" if impl.get("network") else "none"]  # fmt: skip
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
