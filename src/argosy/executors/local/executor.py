"""The local executor: each attempt is an isolated OS process group on this machine.

Per attempt: its own session and process group, an allow-listed environment (plus the step's
``env`` and secrets), a scratch folder (removed afterwards), a timeout, a memory watchdog on
anonymous resident memory, GPU devices by ``CUDA_VISIBLE_DEVICES``, and stdout/stderr
captured line by line with timestamps. Attempts start only while CPU, memory and GPUs
requested by running attempts fit the configured capacity.

On a server with ``task_user`` (``run_as``) every Python attempt runs as that unprivileged OS
user (``setuid``: the server needs root or CAP_SETUID): the attempt folder stays the server's
(mode 0711: enterable, not listable), so its stdout/stderr/log files cannot be replaced by the
task; ``invocation.json`` (the task token, data keys) stays the server's too and reaches the
launcher on its stdin. The scratch folder belongs to the task user (0700), and the task's HOME,
TMPDIR and download cache are inside it; the launcher makes itself non-dumpable, so other
tasks (same OS user) cannot read its ``/proc`` environment, working folder or memory. The
launcher of a container step (or of a Python step in an image) runs as the server's user, to
drive the container engine; the container's processes run as the task uid (``--user``).

Python attempts may instead be forked from a warm parent (``warm.py``): a local run's own pool,
or a server's shared, *sealed* pool, whose parents run as the tenant's task uid and are never
told a token, key or secret — such an attempt's invocation reaches it on stdin as above, and
its environment in a sealed memfd the parent passes on unread.

stdout/stderr go to files (not pipes) so an attempt outlives a crashed engine without
SIGPIPE; the executor tails them. The process exit is watched through a pidfd, so the engine
wakes the moment an attempt ends.

A full disk (the attempt folder, the log and the store share it) loses neither the failure nor
the log: the launcher gets the write end of a **status pipe** (``status_fd``) for its result
record when the store refuses it, which the executor reads when the attempt ends and hands to
the engine (``AttemptExit.record``); log lines the disk refuses stay in memory
(:class:`CappedLog`) until the attempt's scratch folder — where a half-written output fills
the disk — is removed, and only then is the log written out and stored.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import argosy
from argosy.errors import ExecutionError, NoRoomError, StoreError, UsageError
from argosy.executors.base import (
    AttemptExit,
    AttemptLaunch,
    Capacity,
    Executor,
    ProcessIdentity,
    Usage,
)
from argosy.executors.local.capacity import CapacityLedger
from argosy.executors.local.warm import (
    WARM_PARENT_MEMORY,
    Sealed,
    WarmPool,
    WarmProcess,
    WarmUnavailable,
)
from argosy.executors.logcap import DEFAULT_LOG_CAP, MAX_LINE, CappedLog, punch_hole
from argosy.runtime import processes
from argosy.runtime.invocation import ResultRecord
from argosy.stores.artifacts.blobs import ArtifactStore

ENV_ALLOW = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
    "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "ARGOSY_CONTAINER_ENGINE", "CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF",
    "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG",  # podman's registries and logins
    # the standard AWS credential chain, for an S3 artifact store (scoped credentials: later)
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CA_BUNDLE",
)  # fmt: skip
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ISOLATED_ENV = "ARGOSY_TASK_ISOLATED"  # set when the task runs as the task user
CONTAINER_USER_ENV = "ARGOSY_CONTAINER_USER"  # a container's UID:GID (runtime/container.py)
CONTAINER_MODE_ENV = "ARGOSY_CONTAINER_MODE"  # the settings container.py reads in the launcher
CONTAINER_UID_BASE_ENV = "ARGOSY_CONTAINER_UID_BASE"
LOG_TAIL_LINES = 20
SAMPLE_INTERVAL = 0.1
READ_CHUNK = 1024 * 1024  # raw output is read (and its disk blocks freed) this much at a time
SWEEP_GRACE_S = 120.0  # the sweeper leaves processes and folders younger than this alone
STATUS_MAX = 64 * 1024  # bytes read from an attempt's status pipe (one compact record)
_LAUNCH = "import os,sys;from argosy.runtime.launcher import main;c=main(sys.argv[1:]);sys.stdout.flush();sys.stderr.flush();os._exit(c)"


def _private(path: str, flags: int) -> int:
    """Open a file of the server's (mode 0600; never through a symbolic link)."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


def _is_container(launch: AttemptLaunch) -> bool:
    """A container step, or a Python step in its own image: a container to remove."""
    impl = launch.invocation.step.get("implementation") or {}
    return launch.invocation.kind == "container" or bool(impl.get("image"))


@dataclass(frozen=True)
class TaskUser:
    """The OS user tasks run as (``task_user``)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> TaskUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise UsageError(
                f"the task user {name!r} (ARGOSY_TASK_USER) does not exist: create it with "
                f"'useradd --system --no-create-home --shell /usr/sbin/nologin {name}'"
            ) from None
        return cls(name, entry.pw_uid, entry.pw_gid)


@dataclass
class _Stream:
    path: Path
    name: str
    offset: int = 0
    partial: bytes = b""
    punched: int = 0  # bytes at the start whose disk blocks were freed (already read)


@dataclass
class _Running:
    launch: AttemptLaunch
    proc: subprocess.Popen[bytes] | WarmProcess  # a fresh interpreter, or a warm worker's fork
    pidfd: int
    identity: ProcessIdentity
    folder: Path
    started: float
    deadline: float | None
    memory_limit: int | None
    streams: list[_Stream]
    log: CappedLog
    status: int  # the read end of the status pipe (non-blocking)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    stop_reason: str | None = None
    peak_rss: int = 0
    published_at: float = 0.0  # when the live log was last copied to the store
    published_size: int = 0


class LocalExecutor(Executor):
    """Runs attempts as local processes within ``capacity`` (or a ledger shared with others)."""

    def __init__(
        self,
        store: ArtifactStore,
        attempts_dir: Path,
        capacity: Capacity,
        *,
        memory_margin: float = 1.25,
        python: str | None = None,
        ledger: CapacityLedger | None = None,
        interpreter: Callable[[AttemptLaunch], str] | None = None,
        platform_credentials: bool = True,
        run_as: str | TaskUser | None = None,
        live_log_interval: float | None = None,
        log_cap: int = DEFAULT_LOG_CAP,
        warm_workers: bool = False,
        warm_wait: float = 0.0,
        warm_pool: WarmPool | None = None,
        container_mode: str = "auto",
        container_uid_base: int | None = None,
    ) -> None:
        self.store = store
        # container steps' settings (Settings.container_mode, .container_uid_base): the
        # launcher gets them from here, never from a step's env
        self.container_mode = container_mode
        self.container_uid_base = container_uid_base
        self.log_cap = log_cap  # bytes of log per attempt: first and last parts kept
        self.attempts_dir = attempts_dir
        self._capacity = capacity
        self.memory_margin = memory_margin
        self.python = python or sys.executable
        self.host = socket.gethostname()
        self._running: dict[str, _Running] = {}
        self._selector = selectors.DefaultSelector()
        self.ledger = ledger or CapacityLedger(capacity)
        self.interpreter = interpreter  # the Python of an attempt, if not always ``python``
        self.platform_credentials = platform_credentials  # pass the store's AWS_* variables
        # copy a running attempt's log to its record this often (servers: other instances
        # serve live logs from the store); None: only when the attempt ends
        self.live_log_interval = live_log_interval
        # tasks' OS user (server): a user name, or a resolved user (per-tenant uids)
        self.run_as = TaskUser.lookup(run_as) if isinstance(run_as, str) else run_as
        if self.run_as is not None:  # other tasks' folders cannot be listed
            self.attempts_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.attempts_dir, 0o711)
        self._last_sample = 0.0
        # Python attempts forked from pre-imported parents (warm.py): a server's pool is
        # shared by its runs and sealed (parents as the tenant's task uid, told no secret)
        self.warm: WarmPool | None = warm_pool
        self._own_warm = False
        if warm_pool is not None and not warm_pool.sealed and self.run_as is not None:
            raise ValueError("a task user's attempts are forked only by a sealed warm pool")
        if warm_pool is None and warm_workers and self.run_as is None:
            self._own_warm = True
            limit = min(4, max(1, (capacity.memory or 2**34) // WARM_PARENT_MEMORY))
            self.warm = WarmPool(attempts_dir.parent / "warm", limit=int(limit), wait=warm_wait)

    def close(self) -> None:
        """Stop its own warm parents (running attempts are not touched; a server's shared pool
        is the server's to close)."""
        if self.warm is not None and self._own_warm:
            self.warm.close()

    # -- capacity ------------------------------------------------------------------------------
    @property
    def capacity(self) -> Capacity:
        return self._capacity

    def has_room(
        self, cpu: float, memory: int | None, gpu: int, besides: Usage | None = None
    ) -> bool:
        return self.ledger.fits(self.store.tenant, cpu, memory, gpu, besides)

    def running(self) -> int:
        return len(self._running)

    # -- start ---------------------------------------------------------------------------------
    def prewarm(self) -> None:
        """Start a warm parent now, before the run's first task is known, for the first task
        of this executor's own interpreter to adopt (:meth:`WarmPool.prestart`)."""
        if self.warm is not None and not self.warm.sealed and self.run_as is None:
            self.warm.prestart(self.python, self._common_environment())

    def _common_environment(self) -> dict[str, str]:
        """What every task's environment starts from: the allow-listed variables of this
        process and the interpreter's (``PYTHONPATH`` finds Argosy)."""
        env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW or k.startswith("LC_")}
        if not self.platform_credentials:  # a server's tasks get a task token instead
            env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        src = str(Path(argosy.__file__).resolve().parent.parent)
        user_path = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{src}{os.pathsep}{user_path}" if user_path else src
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _environment(self, launch: AttemptLaunch, scratch: Path, gpus: list[int]) -> dict[str, str]:
        env = self._common_environment()
        env["TMPDIR"] = str(scratch / "tmp")
        threads = str(max(1, math.ceil(launch.cpu)))
        for var in THREAD_VARS:
            env[var] = threads
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        if self._isolated(launch):
            assert self.run_as is not None
            env.update(HOME=str(scratch), USER=self.run_as.name, LOGNAME=self.run_as.name)
        env.update(launch.env)
        env.update(launch.secrets)
        # What the platform decides comes last: a step's env or a secret named like one of
        # these (ARGOSY_CONTAINER_USER=<another tenant's uid>) must never override it.
        for name in (ISOLATED_ENV, CONTAINER_USER_ENV, CONTAINER_UID_BASE_ENV):
            env.pop(name, None)
        env[CONTAINER_MODE_ENV] = self.container_mode
        if self.container_uid_base is not None:
            env[CONTAINER_UID_BASE_ENV] = str(self.container_uid_base)
        if self._isolated(launch):
            env[ISOLATED_ENV] = "1"  # the launcher makes itself non-dumpable
        elif self.run_as is not None:  # a container: its processes run as the task uid
            env[CONTAINER_USER_ENV] = f"{self.run_as.uid}:{self.run_as.gid}"
        env.update(
            {
                processes.ATTEMPT_ENV: launch.attempt_id,
                "ARGOSY_RUN_ID": launch.run_id,
                "ARGOSY_NODE_PATH": launch.node_path,
                "ARGOSY_ATTEMPT": str(launch.number),
            }
        )
        return env

    def start(self, launch: AttemptLaunch) -> ProcessIdentity:
        gpus = self.ledger.reserve(self.store.tenant, launch.cpu, launch.memory, launch.gpu)
        if gpus is None:
            raise NoRoomError(f"no room to start {launch.node_path}: the engine must wait")
        status_r, status_w = os.pipe()  # both close-on-exec; the launcher inherits status_w
        os.set_blocking(status_r, False)
        try:
            return self._start(launch, gpus, status_r, status_w)
        except BaseException:
            os.close(status_r)
            self.ledger.release(self.store.tenant, launch.cpu, launch.memory, tuple(gpus))
            raise
        finally:
            os.close(status_w)  # the launcher holds its own copy

    def _isolated(self, launch: AttemptLaunch) -> bool:
        """Whether the attempt runs as the task user (container steps: as the server)."""
        return self.run_as is not None and not _is_container(launch)

    def _start(
        self, launch: AttemptLaunch, gpus: list[int], status_r: int, status_w: int
    ) -> ProcessIdentity:
        python = self.interpreter(launch) if self.interpreter else self.python
        isolated = self._isolated(launch)
        folder = self.attempts_dir / launch.attempt_id
        scratch = folder / "scratch"
        (scratch / "tmp").mkdir(parents=True, exist_ok=True)
        for private in (folder, scratch):  # plaintext inputs and data keys: this user only
            os.chmod(private, 0o700)
        invocation = launch.invocation.completed(
            scratch=str(scratch),
            status_fd=status_w,
            # the tenant's data keys, never the KEK
            encryption=self.store.cipher.task_document() if self.store.cipher else None,
            # a task user's downloads stay in its scratch: the shared cache is the server's
            cache_dir=str(scratch / ".cache") if isolated else launch.invocation.cache_dir,
        )
        inv_path = folder / "invocation.json"
        fd = os.open(inv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as inv_file:
            inv_file.write(json.dumps(invocation.to_json()))
        if isolated:  # the folder (and the files the server reads) stay the server's
            assert self.run_as is not None
            os.chmod(folder, 0o711)  # enterable, not listable
            for own in (scratch, scratch / "tmp"):
                os.chown(own, self.run_as.uid, self.run_as.gid, follow_symlinks=False)
        out_path, err_path = folder / "stdout", folder / "stderr"
        user = self.run_as if isolated else None
        env = self._environment(launch, scratch, gpus)
        # a task user's launcher reads the invocation on stdin: no path to it in its command
        # line, and the file stays the server's; so does every task of a sealed warm pool's
        on_stdin = isolated or (self.warm is not None and self.warm.sealed)
        with (
            open(out_path, "wb", opener=_private) as out,
            open(err_path, "wb", opener=_private) as err,
            open(inv_path if on_stdin else os.devnull, "rb") as stdin,
        ):
            fds = [stdin.fileno(), out.fileno(), err.fileno(), status_w]
            warm = self._fork_warm(launch, python, env, inv_path, fds)
            proc = warm or subprocess.Popen(
                [python, "-c", _LAUNCH, "-" if on_stdin else str(inv_path)],
                stdin=stdin,
                stdout=out,
                stderr=err,
                cwd=scratch,
                env=env,
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_w,),
                user=user.uid if user else None,
                group=user.gid if user else None,
                extra_groups=[] if user else None,
                umask=0o077 if user else -1,
            )
        # a warm worker's fork may already have ended (and been reaped by its parent, which
        # opened its pidfd first)
        if isinstance(proc, WarmProcess):
            pidfd, started = proc.pidfd, proc.started
        else:
            pidfd, started = os.pidfd_open(proc.pid), processes.start_time(proc.pid)
        self._selector.register(pidfd, selectors.EVENT_READ, launch.attempt_id)
        identity = ProcessIdentity(
            host=self.host,
            pid=proc.pid,
            pgid=proc.pid,
            started=started,
            gpu_devices=tuple(gpus),
        )
        now = time.monotonic()
        limit = int(launch.memory * self.memory_margin) if launch.memory else None
        if _is_container(launch):  # the container's cgroup enforces it (runtime/container.py);
            limit = None  # here only the engine's client runs, whose own memory is not the step's
        self._running[launch.attempt_id] = _Running(
            launch=launch,
            proc=proc,
            pidfd=pidfd,
            identity=identity,
            folder=folder,
            started=now,
            deadline=now + launch.timeout if launch.timeout else None,
            memory_limit=limit,
            streams=[_Stream(out_path, "out"), _Stream(err_path, "err")],
            log=CappedLog(folder / "log.jsonl", self.log_cap, opener=_private),
            status=status_r,
        )
        return identity

    def _fork_warm(
        self, launch: AttemptLaunch, python: str, env: dict[str, str], invocation: Path,
        fds: list[int],
    ) -> WarmProcess | None:  # fmt: skip
        """The attempt forked from a warm parent, or None: start a fresh interpreter."""
        opted_out = launch.env.get("ARGOSY_WARM", "1").lower() in ("0", "false", "no")
        if self.warm is None or launch.gpu or launch.invocation.kind != "python" or opted_out:
            return None
        if _is_container(launch):  # a step in an image: its code runs there, never out here
            return None
        impl = launch.invocation.step.get("implementation", {})
        # the step's own variables too: its module's top level (and the interpreter, for
        # PYTHON* ones) sees them in the parent, as a fresh interpreter of that step would
        step_env = json.dumps(sorted(launch.env.items()))
        key = (self.store.tenant, python, str(impl.get("code")), str(impl.get("environment")),
               step_env)  # fmt: skip
        if not self.warm.sealed:
            parent = self.warm.parent(key, python, env, invocation)
            if parent is None:  # none ready yet (one is starting): this attempt starts fresh
                return None
            request = {"attempt_id": launch.attempt_id, "invocation": str(invocation),
                       "cwd": str(invocation.parent / "scratch"), "env": env,
                       "status_fd": fds[3]}  # fmt: skip
            try:
                return parent.fork(request, fds)
            except WarmUnavailable:
                return None
        return self._fork_sealed(launch, python, env, invocation, fds, key)

    def _fork_sealed(
        self, launch: AttemptLaunch, python: str, env: dict[str, str], invocation: Path,
        fds: list[int], key: tuple[str, ...],
    ) -> WarmProcess | None:  # fmt: skip
        """A server's attempt forked from the sealed parent of its tenant's task uid and code:
        the parent is told no token, key or secret (warm.py's docstring)."""
        assert self.warm is not None
        code = launch.invocation.code
        if code is None:
            return None
        if self.run_as is not None and not self._isolated(launch):
            return None  # a parent as the server's user next to task users: never
        user = self.run_as
        key = (*key, str(user.uid) if user else "server")  # never another uid's parent
        sealed = Sealed(
            uid=user.uid if user else None, gid=user.gid if user else None,
            module=str(launch.invocation.step["implementation"]["module"]), code=code.sha256,
            paths=tuple(code.paths), unpack=lambda target: self._unpack_code(code.sha256, target),
        )  # fmt: skip
        # the parent's environment: the task's, without its secrets and attempt
        base = {k: v for k, v in env.items() if k not in launch.secrets}
        base["CUDA_VISIBLE_DEVICES"] = ""
        parent = self.warm.parent(key, python, base, None, sealed)
        if parent is None:
            return None
        request = {"attempt_id": launch.attempt_id, "cwd": str(invocation.parent / "scratch"),
                   "status_fd": fds[3], "module": sealed.module}  # fmt: skip
        given = os.memfd_create("argosy-task-env", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(given, json.dumps(env).encode())
            os.lseek(given, 0, os.SEEK_SET)
            # sealed: nobody holding it (the parent passes it on) can change what the task reads
            import fcntl

            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(given, fcntl.F_ADD_SEALS, seals)
            return parent.fork(request, [*fds, given], sealed.uid)
        except WarmUnavailable:
            return None
        finally:
            os.close(given)

    def _unpack_code(self, sha256: str, target: Path) -> None:
        """Unpack a code package for a sealed parent (decrypted with the store's keys: the
        plaintext blob is removed once unpacked)."""
        import tempfile

        from argosy.spec.code_package import extract_package

        assert self.warm is not None
        with tempfile.TemporaryDirectory(dir=self.warm.folder, prefix=".unpack-") as tmp:
            blob = self.store.blob_path(sha256.removeprefix("sha256:"), cache_dir=Path(tmp))
            extract_package(blob, target)

    # -- watch ---------------------------------------------------------------------------------
    def poll(self, timeout: float) -> list[AttemptExit]:
        if not self._running:
            if timeout > 0:
                time.sleep(timeout)
            return []
        wait = timeout
        deadlines = [r.deadline for r in self._running.values() if r.deadline is not None]
        if deadlines:
            wait = max(0.0, min(wait, min(deadlines) - time.monotonic()))
        if any(r.memory_limit for r in self._running.values()):
            wait = min(wait, SAMPLE_INTERVAL)
        ended = [key.data for key, _ in self._selector.select(wait)]
        now = time.monotonic()
        for attempt_id, run in list(self._running.items()):
            if attempt_id in ended:
                continue
            if run.deadline is not None and now >= run.deadline and run.stop_reason is None:
                self.stop(attempt_id, "timeout")
        if now - self._last_sample >= SAMPLE_INTERVAL:
            self._last_sample = now
            self._sample()
        exits = [self._finish(a) for a in ended]
        return exits

    def _sample(self) -> None:
        for attempt_id, run in list(self._running.items()):
            if run.stop_reason is not None:
                continue
            pids = [run.identity.pid, *processes.descendants(run.identity.pid)]
            total = sum(processes.rss_total(p) for p in pids)
            run.peak_rss = max(run.peak_rss, total)
            if run.memory_limit is not None:
                anon = sum(processes.rss_anon(p) for p in pids)
                if anon > run.memory_limit:
                    self._write_line(
                        run, "err",
                        f"argosy: memory {anon / 2**20:.0f}Mi exceeds the request "
                        f"{run.launch.memory / 2**20 if run.launch.memory else 0:.0f}Mi x "
                        f"{self.memory_margin:g}; the attempt is killed (raise memory= on the step)",
                    )  # fmt: skip
                    self.stop(attempt_id, "memory_limit")
            self._read_streams(run, final=False)
            self._publish_log(run)

    def _publish_log(self, run: _Running) -> None:
        """Copy the log so far to the attempt's log record (best effort; the final copy at
        the end is the one that counts)."""
        if self.live_log_interval is None or not run.launch.log_key:
            return
        now = time.monotonic()
        if now - run.published_at < self.live_log_interval:
            return
        run.published_at = now
        run.log.flush()
        path = run.folder / "log.jsonl"
        try:
            size = path.stat().st_size
            if size != run.published_size:
                self.store.put_record_file(run.launch.log_key, path)
                run.published_size = size
        except (OSError, StoreError):
            pass  # the store is unreachable for now: the next interval tries again

    def _write_line(self, run: _Running, stream: str, text: str) -> None:
        for secret in run.launch.secrets.values():
            if secret:
                text = text.replace(secret, "***")
        stamp = datetime.now(UTC).isoformat()
        run.log.write(json.dumps({"t": stamp, "s": stream, "m": text}) + "\n")
        run.tail.append(text)

    def _read_streams(self, run: _Running, *, final: bool) -> None:
        """What the attempt wrote since the last read, in chunks (constant memory); the disk
        blocks of what was read are freed, so endless output does not fill the disk."""
        for stream in run.streams:
            try:
                f = stream.path.open("r+b")
            except OSError:
                continue
            with f:
                self._skip_backlog(run, stream, f)
                f.seek(stream.offset)
                while True:
                    data = f.read(READ_CHUNK)
                    if not data:
                        break
                    stream.offset += len(data)
                    lines = (stream.partial + data).split(b"\n")
                    stream.partial = lines.pop()
                    while len(stream.partial) > MAX_LINE:  # no newline for too long: split
                        lines.append(stream.partial[:MAX_LINE])
                        stream.partial = stream.partial[MAX_LINE:]
                    for line in lines:
                        text = line.decode("utf-8", "replace").rstrip("\r")
                        self._write_line(run, stream.name, text)
                    if stream.offset - stream.punched >= READ_CHUNK and punch_hole(
                        f.fileno(), stream.offset
                    ):
                        stream.punched = stream.offset - stream.offset % 4096
            if final and stream.partial:
                text = stream.partial.decode("utf-8", "replace").rstrip("\r")
                self._write_line(run, stream.name, text)
                stream.partial = b""
        run.log.flush()

    def _skip_backlog(self, run: _Running, stream: _Stream, f: BinaryIO) -> None:
        """Once the log's head is full, output beyond what its tail keeps is only counted:
        the reader stays ahead of any writer, so unread output cannot pile up on disk."""
        if not run.log.cutting:
            return
        skip_to = os.fstat(f.fileno()).st_size - run.log.tail_budget - READ_CHUNK
        if skip_to <= stream.offset + READ_CHUNK:
            return
        f.seek(stream.offset)
        start = stream.offset
        lines = 0
        last = b""
        while stream.offset < skip_to:
            data = f.read(min(READ_CHUNK, skip_to - stream.offset))
            if not data:
                break
            stream.offset += len(data)
            lines += data.count(b"\n")
            last = data
            if punch_hole(f.fileno(), stream.offset):
                stream.punched = stream.offset - stream.offset % 4096
        stream.partial = last.rpartition(b"\n")[2][-MAX_LINE:] if b"\n" in last else b""
        run.log.skip(lines, stream.offset - start)

    def _finish(self, attempt_id: str) -> AttemptExit:
        run = self._running.pop(attempt_id)
        self._selector.unregister(run.pidfd)
        os.close(run.pidfd)
        if isinstance(run.proc, WarmProcess):  # the warm parent reaped it
            status, cpu_time = run.proc.wait4()
        else:
            _, status, usage = os.wait4(run.identity.pid, 0)
            cpu_time = usage.ru_utime + usage.ru_stime
        exit_code = sig = None
        if status is not None:  # None: its warm parent died first; the record tells the rest
            run.proc.returncode = os.waitstatus_to_exitcode(status)
            exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if sig is not None or run.stop_reason is not None:
            processes.kill_tree(None, attempt_id)  # escaped descendants of a killed launcher
            if _is_container(run.launch):
                from argosy.runtime.container import remove_container

                remove_container(attempt_id)
        record = self._read_status(run)
        self._read_streams(run, final=True)
        if sig is not None and run.stop_reason is None:
            self._write_line(
                run, "err", f"argosy: the process was killed by {signal.Signals(sig).name}"
            )
        if record is not None:  # its own stderr may have been lost with the record: say it
            self._write_line(run, "err", f"argosy: {record.reason}: {record.error}")
        # the scratch first: a half-written output there may be what fills the disk
        shutil.rmtree(run.folder / "scratch", ignore_errors=True)
        if not run.log.close():
            run.tail.append(f"argosy: this attempt's log could not be written: {run.log.error}")
        if run.launch.log_key:
            try:
                self.store.put_record_file(run.launch.log_key, run.folder / "log.jsonl")
            except OSError as exc:  # the disk is still full: the tail (below) is kept
                run.tail.append(f"argosy: this attempt's log could not be stored: {exc}")
        shutil.rmtree(run.folder, ignore_errors=True)
        ended_at = datetime.now(UTC)
        self.ledger.release(
            self.store.tenant, run.launch.cpu, run.launch.memory, run.identity.gpu_devices
        )
        return AttemptExit(
            attempt_id=attempt_id,
            exit_code=exit_code,
            signal=sig,
            reason=run.stop_reason,
            wall_time=time.monotonic() - run.started,
            cpu_time=cpu_time,
            # ru_maxrss is not used: Linux carries the engine's own peak over into the child
            peak_memory=run.peak_rss or None,
            log_tail=list(run.tail),
            record=record,
            ended_at=ended_at,
        )

    def _read_status(self, run: _Running) -> ResultRecord | None:
        """The failure record the launcher sent on its status pipe (it could not store its
        result record), if any; the pipe is closed."""
        data = b""
        try:
            while len(data) < STATUS_MAX:
                chunk = os.read(run.status, STATUS_MAX)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:  # nothing (more) written, a descendant still holds the pipe
            pass
        finally:
            os.close(run.status)
        line = data.partition(b"\n")[0].strip()
        if not line:
            return None
        try:
            return ResultRecord.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError, ExecutionError) as exc:
            self._write_line(run, "err", f"argosy: the status pipe held no record: {exc}")
            return None

    # -- stop ----------------------------------------------------------------------------------
    def stop(self, attempt_id: str, reason: str) -> None:
        run = self._running.get(attempt_id)
        if run is None:
            return
        if run.stop_reason is None:
            run.stop_reason = reason
        if _is_container(run.launch):
            from argosy.runtime.container import remove_container

            remove_container(attempt_id)  # through the container engine first: it owns the state
        processes.kill_tree(run.identity.pid, attempt_id)

    def stop_all(self, reason: str) -> int:
        """Stop every running attempt at once (process trees SIGKILLed); returns how many."""
        attempts = list(self._running)
        for attempt_id in attempts:
            self.stop(attempt_id, reason)
        return len(attempts)

    def end_orphan(self, attempt_id: str, identity: ProcessIdentity | None) -> bool:
        root = None
        if (
            identity is not None
            and identity.host == self.host
            and processes.is_same_process(identity.pid, identity.started)
        ):
            root = identity.pid
        return processes.kill_tree(root, attempt_id) > 0

    def sweep(self, is_live: Callable[[str], bool], *, grace: float = SWEEP_GRACE_S) -> list[str]:
        """Remove the leftovers of attempts that are neither live nor this executor's: their
        processes (those that carry an attempt id in their environment and work in this
        executor's attempts folder: never another home's), attempt folders (scratch and
        temp files inside), and the store's temporary files older than an hour. Nothing
        younger than ``grace`` seconds is touched (an attempt being started now may not be
        recorded yet). Returns ``kind:name`` for each thing removed."""
        removed: list[str] = []
        mine = set(self._running)
        marker = processes.ATTEMPT_ENV.encode() + b"="
        root = str(self.attempts_dir.resolve()) + os.sep
        now = time.time()
        seen: dict[str, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if not os.readlink(entry / "cwd").startswith(root):
                    continue  # not a task of this executor's folder
                started = processes.start_time(int(entry.name))
                if started is None or now - started < grace:
                    continue
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            for item in environ.split(b"\0"):
                if item.startswith(marker):
                    attempt_id = item[len(marker) :].decode(errors="replace")
                    seen.setdefault(attempt_id, []).append(int(entry.name))
        for attempt_id, pids in sorted(seen.items()):
            if attempt_id in mine or is_live(attempt_id):
                continue
            for pid in pids:
                processes.kill_tree(pid, None)
                removed.append(f"process:{pid}")
        if self.attempts_dir.is_dir():
            for folder in sorted(self.attempts_dir.iterdir()):
                try:
                    young = now - folder.stat().st_mtime < grace
                except OSError:
                    continue
                ours = folder.is_dir() and not young and folder.name not in mine
                if ours and not is_live(folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(f"scratch_folder:{folder.name}")
        tmp = getattr(self.store.backend, "tmp", None)
        if isinstance(tmp, Path) and tmp.is_dir():
            for path in tmp.iterdir():
                try:
                    if path.is_file() and now - path.stat().st_mtime > 3600:
                        path.unlink()
                        removed.append(f"temp_file:{path.name}")
                except OSError:
                    pass
        return removed

    def adopt_log(self, attempt_id: str, log_key: str) -> list[str]:
        """Store the log of an attempt whose engine died; returns its last lines.

        Lines the dead engine already stamped are kept; the rest of the raw output is read
        now and stamped with the time of recovery.
        """
        folder = self.attempts_dir / attempt_id
        log_path = folder / "log.jsonl"
        if not folder.is_dir():
            return []
        seen = {"out": 0, "err": 0}
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        kept: list[str] = []
        if log_path.exists():
            for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a line cut short by the crash
                seen[entry["s"]] = seen.get(entry["s"], 0) + 1
                kept.append(line)
                tail.append(entry["m"])
        stamp = datetime.now(UTC).isoformat()
        for name in ("out", "err"):
            raw = folder / ("stdout" if name == "out" else "stderr")
            if not raw.exists():
                continue
            lines = raw.read_bytes().decode("utf-8", "replace").splitlines()
            for text in lines[seen[name] :]:
                kept.append(json.dumps({"t": stamp, "s": name, "m": text}))
                tail.append(text)
        log_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        self.store.put_record_file(log_key, log_path)
        shutil.rmtree(folder, ignore_errors=True)
        return list(tail)
