"""Warm workers: isolated step processes forked from a pre-imported parent (a fork server).

A fresh interpreter per task pays Python's start, the launcher's imports and then the step
module's imports (numpy, pandas, scikit-learn: often half a second) before doing any work. A
warm parent pays them once: it is a fresh interpreter the executor starts (never a fork of the
engine: it holds no database connection, key-encryption key, credential or task token; with
encryption at rest it holds the tenant's data keys, as each of its children does, and keeps the
plaintext code package in a folder of its own, mode 0700, removed when it exits), with the tasks'
allow-listed environment and OpenMP/OpenBLAS/MKL at one thread, that imports the launcher, the
step's code package and its module, then forks one child per task. Each child is set up as a
fresh launcher would be, and then runs the launcher in process:

- its own session and process group (``setsid``, before its pid is handed to the executor, so
  a stop that arrives at once still kills its whole group);
- file descriptors: stdin/stdout/stderr and the status pipe from the executor (passed over
  the socket), every other descriptor closed;
- signal handlers back to a fresh interpreter's (what the step's module may have set at import);
- the environment replaced by the task's, and ``ARGOSY_ATTEMPT_ID`` written into the process's
  original environment block too (``/proc/PID/environ``, which the sweeper and orphan recovery
  read, shows that block, not ``os.environ``), over the parent's own random marker — which
  whatever the module started in the parent keeps, so that it is killed with the parent;
- random seeds: Python's ``random`` reseeds itself at fork; numpy's global generator is reseeded;
- the thread count of OpenBLAS/OpenMP raised to the task's CPUs (``threadpoolctl``, if present).

The child is the parent's, not the engine's: the parent reaps it and sends its wait status and
CPU time back; the executor watches it through a pidfd, samples its memory and kills its group
as for any attempt. A parent that holds more than one thread is never forked (a forked child
of a threaded process can deadlock): ``/proc/self/task`` is checked before every fork, and the
executor starts a fresh interpreter instead. A parent dies with the process that started it
(``PR_SET_PDEATHSIG``) and after ``IDLE_SECONDS`` without work; its running children outlive
it (the executor then has only the result record, not the exit status).

One parent per (tenant, interpreter, code package, environment, the step's ``env``): a changed
module is a new code package, so the next run gets a new parent; a step's own variables are
what its module's top level saw. A local run's first parent is started ahead
(:meth:`WarmPool.prestart`, before ``argosy run`` compiles): it imports the launcher and waits
for its first task, whose environment it takes before it imports that task's module. At most
``limit`` parents (the least recently used idle one goes first; with none idle a task starts a
fresh interpreter). GPU steps, container
steps and steps whose ``env`` sets ``ARGOSY_WARM=0`` always get a fresh interpreter;
``ARGOSY_WARM_WORKERS=false`` turns warm workers off.

**Sealed parents (servers).** A server's pool is shared by all its runs and its parents are
*sealed*: a server's task carries a task token and, with encryption at rest, the tenant's data
keys, none of which a parent may hold, and a parent runs tenant code (the module's top level)
with which it must never see another tenant's task. So:

- the parent is started as the tenant's task uid (``setgid``/``setuid``, no supplementary
  groups, umask 077: done by ``Popen`` before the interpreter starts, so before it imports
  anything), with the tasks' allow-listed environment without the step's secrets, and makes
  itself non-dumpable before its first import (other processes of that uid cannot read its
  memory, environment or open files, nor ptrace it);
- it reads nothing of the server's: the executor unpacks the code package (decrypting it with
  the store's keys if need be) into ``warm/sealed-<random>/code`` (owned by the server,
  readable, not writable, by the task uid; ``warm/`` is 0711, so the random name cannot be
  listed) and the parent only puts that folder on ``sys.path`` and imports the step's module;
- its key is (tenant, task uid, interpreter, code package, environment, step env): it only
  ever forks tasks of the code it imported, of its own tenant;
- a request carries the attempt id, working folder, status-pipe number and module name, and
  the descriptors: stdin is the server's ``invocation.json`` opened by the server (as for a
  fresh task user's launcher, which reads it on stdin), and a fifth, a sealed memfd, holds the
  task's environment (with its secrets). The parent passes both to the child unread; the child
  reads its environment from the memfd and the launcher its invocation from stdin. The child
  runs the launcher as a fresh task user's does (non-dumpable, its scratch as working folder)
  and uses the code the parent imported (``launcher.PRELOADED``) instead of fetching it again.

The executor never takes a parent's word for which process is the task: the pid it names
must be the parent's own child, in a session of its own, of the tenant's uid, and the
descriptor with it that child's pidfd (``WarmParent._distrust``); else the attempt fails to
start (``WarmRefused``) and the parent is dropped. A parent reaps a child only once the
executor has checked it (``{"checked": pid}``), so a child that ends at once is still there to
be looked at; and the child runs the task only then (it waits on a pipe the parent writes when
told ``checked``), so a parent that dies between the fork and the check — its child no longer
its child — leaves a child that never ran and ends by itself: the attempt starts fresh. Without this a parent's tenant code could name the server, or another tenant's
task, and have the server sample and, at a timeout or cancel, kill that process tree.

The parent's own Argosy code never reads a task token, a data key or a secret. Whatever the
module's top-level code does in the parent (it runs there as the tenant's uid) is inherited by
every child, but each of those children is a task running that same code of that same tenant,
which receives its own token anyway: the parent gives tenant code nothing it does not have.
A sealed parent does not die with the thread that started it (a server's runs each have a
thread of its own): it exits when the server's end of its socket closes (the server stopped
or died), when idle, and when its imports do not finish within ``START_TIMEOUT`` (an alarm).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from argosy.errors import ExecutionError
from argosy.runtime import processes

IDLE_SECONDS = 120.0  # a parent without work for this long exits
WARM_PARENT_MEMORY = 2 * 2**30  # a parent with pandas and scikit-learn: ~0.3 GiB, and room
START_TIMEOUT = 60.0  # a parent not ready after this long is given up
REPLY_TIMEOUT = 30.0  # seconds to wait for a fork (the step's module may be imported first)
EXIT_TIMEOUT = 10.0  # seconds to wait for a child's exit status once its pidfd fired
MAX_MESSAGE = 256 * 1024
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ATTEMPT_ENV = "ARGOSY_ATTEMPT_ID"
# a parent's ARGOSY_ATTEMPT_ID: an attempt id's length, overwritten in each child's environment
# block; random per parent (lowercase hex: never an attempt id), so that what the module started
# at import (processes that inherit it) can be found and ended with the parent
MARKER_LENGTH = 26
LOG_PREFIX = "warm-"  # + the engine's pid: a local parent's output
PRIVATE_PREFIX = "private-"  # + the parent's pid: its plaintext code package (encrypted stores)
SEALED_PREFIX = "sealed-"  # + a random name: a sealed parent's folder (its code and home)
SEALED_ENV = "ARGOSY_WARM_SEALED"  # a sealed parent's start document (no secret in it)
IDLE_ENV = "ARGOSY_WARM_IDLE"
FIRST_ENV = "ARGOSY_WARM_FIRST"  # the invocation whose module a local parent imports first
SERVE = "import sys;from argosy.executors.local.warm import serve;serve(int(sys.argv[1]))"


class WarmUnavailable(Exception):
    """This task cannot be forked from a warm parent now: start a fresh interpreter."""


class WarmRefused(ExecutionError):
    """A warm parent's reply named a process that is not its new child: the attempt fails to
    start (its invocation may have been read by whatever the parent started)."""


# -- the executor's side ---------------------------------------------------------------------------
@dataclass
class WarmProcess:
    """A task forked by a warm parent (what the executor keeps of a ``Popen``)."""

    pid: int
    parent: WarmParent
    pidfd: int  # opened by the parent before it could reap the child (which may end at once)
    started: float | None  # its start time (processes.start_time), read while it existed
    returncode: int | None = None

    def wait4(self) -> tuple[int | None, float | None]:
        """(wait status, CPU seconds) from the parent; (None, None) if the parent is gone."""
        return self.parent.exit_of(self.pid)


@dataclass(frozen=True)
class Sealed:
    """How a server starts a sealed parent (see the module's docstring)."""

    uid: int | None  # the tenant's task uid (None: the server's own user, no task user set)
    gid: int | None
    module: str  # the step's module, imported first
    code: str  # the code package's sha256
    paths: tuple[str, ...]  # its import roots
    unpack: Callable[[Path], None]  # the server unpacks the code package into this folder


@dataclass
class WarmParent:
    key: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    folder: Path | None = None  # a sealed parent's folder (removed when it is dropped)
    marker: str | None = None  # its ARGOSY_ATTEMPT_ID, inherited by what its imports started
    log: Path | None = None  # its stdout and stderr
    python: str = ""  # its interpreter
    started_with: dict[str, str] = field(default_factory=dict)  # what its interpreter read
    ready: bool = False
    failed: str | None = None
    started: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    exits: dict[int, tuple[int, float]] = field(default_factory=dict)
    children: set[int] = field(default_factory=set)  # forked, exit not yet reported
    lock: threading.RLock = field(default_factory=threading.RLock)  # a server's runs share it

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        if not data:
            raise OSError("the warm parent closed its socket")
        try:
            doc: dict[str, Any] = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("not a message")
        except ValueError:
            for fd in fds:
                os.close(fd)
            raise
        if fds and "pid" in doc:
            doc["_fds"] = fds
        else:  # a descriptor only ever comes with a child's pid
            for fd in fds:
                os.close(fd)
            if "pid" in doc:
                raise ValueError("a child's pid without its pidfd")
        try:  # a parent runs tenant code: what it sends is checked, and only its own
            if "pid" in doc:  # children's exits are kept (bounded)
                doc["pid"] = int(doc["pid"])
            if "exit" in doc and int(doc["exit"]) in self.children:
                self.exits[int(doc["exit"])] = (int(doc["status"]), float(doc["cpu"]))
                self.children.discard(int(doc["exit"]))
        except (TypeError, KeyError, ValueError, OverflowError) as exc:
            for fd in doc.pop("_fds", []):
                os.close(fd)
            raise ValueError(f"not a warm parent's message: {exc}") from None
        return doc

    def poll_ready(self, wait: float = 0.0) -> bool:
        """Whether it has finished its imports (waiting up to ``wait`` seconds)."""
        if self.ready or self.failed:
            return self.ready
        deadline = time.monotonic() + wait
        with self.lock:
            try:
                while (doc := self._receive(max(0.0, deadline - time.monotonic()))) is not None:
                    if doc.get("ready"):
                        self.ready = True
                    elif "failed" in doc:
                        self.failed = str(doc["failed"])
                    if self.ready or self.failed:
                        break
            except (OSError, ValueError) as exc:
                self.failed = f"the warm parent is gone ({exc})"
        if not self.ready and time.monotonic() - self.started > START_TIMEOUT:
            self.failed = "the warm parent was not ready in time"
        return self.ready

    def fork(self, request: dict[str, Any], fds: list[int], uid: int | None = None) -> WarmProcess:
        """Ask for a child running the launcher; raises :class:`WarmUnavailable`, or
        :class:`WarmRefused` when the reply does not name a new child of this parent (of
        ``uid``, if given) in a session of its own with that child's pidfd."""
        self.used = time.monotonic()
        with self.lock:  # one request at a time: the reply is the next pid or fallback
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
                deadline = time.monotonic() + REPLY_TIMEOUT
                while (left := deadline - time.monotonic()) > 0:
                    doc = self._receive(left)
                    if doc is None:
                        break
                    if "pid" in doc:
                        pid, pidfd = int(doc["pid"]), doc["_fds"][0]
                        why = self._distrust(pid, pidfd, uid)
                        if why is not None:  # never watch, sample or kill a pid it names
                            os.close(pidfd)
                            if self.proc.poll() is not None:  # it died (crashed) meanwhile:
                                self.failed = f"the warm parent died ({why})"  # its child
                                raise WarmUnavailable(self.failed)  # never ran: start fresh
                            self.failed = f"the warm parent's reply was refused: {why}"
                            raise WarmRefused(self.failed)
                        from argosy.runtime.processes import start_time

                        started = start_time(pid)  # it cannot be reaped before "checked"
                        self.children.add(pid)
                        self.sock.send(json.dumps({"checked": pid}).encode())
                        return WarmProcess(pid, self, pidfd, started)
                    if "fallback" in doc:
                        raise WarmUnavailable(str(doc["fallback"]))
            except (OSError, ValueError) as exc:
                self.failed = f"the warm parent is gone ({exc})"
                raise WarmUnavailable(self.failed) from None
            self.failed = "the warm parent did not answer in time"
            raise WarmUnavailable(self.failed)

    def _distrust(self, pid: int, pidfd: int, uid: int | None) -> str | None:
        """Why the child a parent names is not to be trusted (None: it is). A parent runs
        tenant code: a pid it made up (the server's, another tenant's task) would otherwise be
        sampled, and killed at a timeout, by the server."""
        try:
            info = Path(f"/proc/self/fdinfo/{pidfd}").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
            session = os.getsid(pid)
        except (OSError, ValueError) as exc:
            return f"child {pid} cannot be looked at ({exc})"
        fields = {k: v.split() for k, _, v in (line.partition(":") for line in status.splitlines())}
        if fields.get("Pid") != [str(pid)] or [
            line.split()[1:] for line in info.splitlines() if line.startswith("Pid:")
        ] != [[str(pid)]]:
            return f"the descriptor is not the pidfd of {pid}"
        if fields.get("PPid") != [str(self.proc.pid)]:
            return f"{pid} is not its child"
        if uid is not None and fields.get("Uid") != [str(uid)] * 4:
            return f"{pid} does not run as uid {uid}"
        if session != pid:
            return f"{pid} is not in a session of its own"
        return None

    def exit_of(self, pid: int) -> tuple[int | None, float | None]:
        deadline = time.monotonic() + EXIT_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            with self.lock:  # in short turns: other runs' tasks use this parent too
                if pid in self.exits:
                    break
                try:
                    self._receive(min(left, 0.05))
                except (OSError, ValueError):
                    break
        with self.lock:
            self.children.discard(pid)
            found = self.exits.pop(pid, None)
        return found if found is not None else (None, None)

    def close(self) -> None:
        """End the parent: it exits by itself when its socket closes (removing its private
        folder); one that does not within a second is terminated, then killed. A sealed
        parent (its folder is the server's to remove; it runs tenant code) is killed at once."""
        self.sock.close()
        stops = (None, self.proc.terminate, self.proc.kill) if self.folder is None else (
            self.proc.kill,
        )  # fmt: skip
        for stop in stops:
            if stop is not None and self.proc.poll() is None:
                stop()
            if _exited(self.proc, 1 if stop is None else 5):
                break
        self.end_strays()

    def end_strays(self) -> None:
        """Kill what the module started in the parent (at import, or later from a hook), which
        belongs to no task: every process still carrying the parent's marker. Its tasks carry
        their own attempt ids and are not touched."""
        if self.marker is not None:
            from argosy.runtime.processes import kill_tree

            kill_tree(None, self.marker)


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit, woken by its exit (a pidfd), not
    by ``Popen.wait``'s doubling sleeps, which add ~10 ms to every local run's end."""
    if proc.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # reaped meanwhile, or no pidfds: Popen's own wait
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return proc.poll() is not None


class WarmPool:
    """Warm parents by (tenant, interpreter, code package, environment, step env): one
    executor's (local runs), or a server's, shared by all its runs (``sealed``)."""

    def __init__(self, folder: Path, limit: int = 2, wait: float = 0.0, *,
                 sealed: bool = False, idle: float = IDLE_SECONDS) -> None:  # fmt: skip
        self.folder = folder
        self.limit = max(1, limit)
        self.wait = wait  # seconds a task waits for a starting parent before starting fresh
        self.sealed = sealed
        self.idle = idle  # seconds a parent without work lives on
        self._parents: dict[tuple[str, ...], WarmParent] = {}
        self._ahead: WarmParent | None = None  # started before its first task was known
        self._leftovers: list[WarmParent] = []  # dropped with children running: folder kept
        self._lock = threading.Lock()
        if sealed:  # a server's: the folders of an earlier process's parents go
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o711)  # enterable by task users, never listable
            _end_strays_in(folder)
            for old in folder.glob(f"{SEALED_PREFIX}*"):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)

    def prestart(self, python: str, env: dict[str, str]) -> None:
        """Start a parent now, before any task is known (a run is still being compiled and
        submitted), that imports the launcher and waits: the first task that needs a new
        parent of this interpreter and interpreter environment adopts it — it is given that
        task's environment and imports that task's module — instead of starting a fresh
        interpreter while a parent warms up beside it. Local pools only (a sealed parent's
        user and code are known only with its task)."""
        with self._lock:
            if self.sealed or self._ahead is not None:
                return
            self._ahead = self._start(("ahead",), python, env, None, None)

    def _adopt(self, python: str, env: dict[str, str], invocation: Path) -> WarmParent | None:
        """The parent started ahead, told to import ``invocation``'s module, if it fits."""
        ahead = self._ahead
        if ahead is None:
            return None
        alive = ahead.proc.poll() is None
        if alive and (ahead.python != python or ahead.started_with != _interpreter_env(env)):
            return None  # kept for a task it fits
        if alive:
            first = {"first": str(invocation), "env": _parent_env(env, None)}
            with contextlib.suppress(OSError):
                ahead.sock.send(json.dumps(first).encode())
                self._ahead = None
                ahead.started = time.monotonic()  # its first import starts now
                return ahead
        self._discard_ahead()  # it exited (idle, killed) or cannot be told
        return None

    def _discard_ahead(self) -> None:
        """Kill the parent started ahead: it ran no task's code, only Argosy's imports."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.sock.close()
            ahead.proc.kill()
            ahead.proc.wait()
            _remove_folder(ahead)

    def parent(self, key: tuple[str, ...], python: str, env: dict[str, str],
               invocation: Path | None, sealed: Sealed | None = None) -> WarmParent | None:  # fmt: skip
        """The ready parent for ``key``; else None (one is started for the next task). A
        parent started ahead is adopted and waited for: it has imported the launcher already,
        so its import of the task's module ends before a fresh interpreter's would."""
        wait = self.wait
        with self._lock:
            self._remove_leftovers()
            for gone in [
                k for k, p in self._parents.items() if k != key and p.proc.poll() is not None
            ]:
                self._drop(gone)  # exited by itself (idle): what its imports started goes too
            found = self._parents.get(key)
            if found is not None and (found.failed or found.proc.poll() is not None):
                self._drop(key)
                if found.failed:
                    return None  # (its imports failed, say): the next task starts another
                found = None  # it exited (idle, or killed): replaced now
            if found is None:
                excess = len(self._parents) - self.limit + 1
                for old in sorted(self._parents.values(), key=lambda p: p.used):
                    if excess <= 0:
                        break
                    # only an idle one, and not while another run's task is being forked
                    if not old.children and old.lock.acquire(blocking=False):
                        try:
                            if not old.children:
                                self._drop(old.key)
                                excess -= 1
                        finally:
                            old.lock.release()
                if excess > 0:
                    return None  # every parent has tasks running: no room for another now
                adopted = None if invocation is None else self._adopt(python, env, invocation)
                if adopted is not None:
                    adopted.key, wait = key, max(wait, START_TIMEOUT)
                found = self._parents[key] = adopted or self._start(
                    key, python, env, invocation, sealed
                )
                if not wait:
                    return None
        return found if found.poll_ready(wait) else None

    def _start(self, key: tuple[str, ...], python: str, env: dict[str, str],
               invocation: Path | None, sealed: Sealed | None) -> WarmParent:  # fmt: skip
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        marker = secrets.token_hex(MARKER_LENGTH // 2)
        server_env = _parent_env(env, marker)
        server_env[IDLE_ENV] = str(self.idle)
        self.folder.mkdir(parents=True, exist_ok=True)
        folder: Path | None = None
        user: dict[str, Any] = {}
        cwd = self.folder
        if sealed is not None:
            folder, home = self._sealed_folder(sealed)
            cwd = home
            server_env.update(HOME=str(home), TMPDIR=str(home))
            server_env[SEALED_ENV] = json.dumps({
                "code": sealed.code, "dir": str(folder / "code"), "paths": list(sealed.paths),
                "module": sealed.module,
            })  # fmt: skip
            if sealed.uid is not None:  # before the interpreter starts: before any import
                user = {"user": sealed.uid, "group": sealed.gid, "extra_groups": [],
                        "umask": 0o077}  # fmt: skip
            log = folder.with_name(folder.name + ".log")
        else:
            if invocation is not None:  # else started ahead: told its first task's later
                server_env[FIRST_ENV] = str(invocation)
            _remove_orphaned_plaintext(self.folder)
            log = self.folder / f"{LOG_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.log"
        try:
            with open(log, "wb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW, 0o600)) as err:
                proc = subprocess.Popen(
                    [python, "-c", SERVE, str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=cwd,
                    env=server_env, pass_fds=(theirs.fileno(),), start_new_session=True, **user,
                )  # fmt: skip
        except BaseException:
            ours.close()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            theirs.close()
        return WarmParent(key, proc, ours, folder=folder, marker=marker, python=python,
                          started_with=_interpreter_env(env), log=log)  # fmt: skip

    def _sealed_folder(self, sealed: Sealed) -> tuple[Path, Path]:
        """A sealed parent's folder (the server's, 0711, a random name) with its code (the
        server's, readable by all who can reach it) and its home (the task uid's, 0700)."""
        folder = self.folder / f"{SEALED_PREFIX}{secrets.token_hex(16)}"
        folder.mkdir(mode=0o700)
        try:
            sealed.unpack(folder / "code")
            for root, _dirs, files in os.walk(folder / "code"):
                os.chmod(root, 0o755)
                for name in files:
                    path = os.path.join(root, name)
                    if not os.path.islink(path):
                        os.chmod(path, 0o644)
            home = folder / "home"
            home.mkdir(mode=0o700)
            if sealed.uid is not None:
                os.chown(home, sealed.uid, sealed.gid if sealed.gid is not None else -1)
            os.chmod(folder, 0o711)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder, home

    def _drop(self, key: tuple[str, ...]) -> None:
        found = self._parents.pop(key, None)
        if found is not None:
            found.close()
            if found.children:  # running tasks may still import from its code folder
                self._leftovers.append(found)
            else:
                _remove_folder(found)

    def _remove_leftovers(self) -> None:
        for old in list(self._leftovers):
            if not any(Path(f"/proc/{pid}").exists() for pid in old.children):
                self._leftovers.remove(old)
                _remove_folder(old)

    def close(self) -> None:
        with self._lock:
            self._discard_ahead()
            for key in list(self._parents):
                self._drop(key)
            for old in self._leftovers:
                _remove_folder(old)
            self._leftovers.clear()


def _parent_env(env: dict[str, str], marker: str | None) -> dict[str, str]:
    """A parent's environment for tasks of environment ``env``: theirs without Argosy's
    variables, native thread pools at one thread while importing, and ``marker``."""
    parent = {k: v for k, v in env.items() if not k.startswith("ARGOSY_")}
    parent.update({var: "1" for var in THREAD_VARS})  # no thread pools while importing
    # pyarrow's (pandas') jemalloc starts a background thread on import: a parent with a
    # second thread is never forked
    parent.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    if marker is not None:
        parent[ATTEMPT_ENV] = marker  # a slot each child writes its attempt id into
    return parent


def _interpreter_env(env: dict[str, str]) -> dict[str, str]:
    """What of ``env`` the interpreter reads once, when it starts (``sys.path``, hashing,
    buffering): a parent started ahead serves only tasks that agree on all of it."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


def _end_strays_in(folder: Path) -> None:
    """Kill what an earlier server's parents (killed with it) left running: processes working
    in a parent's home (what its module started); its tasks work in their scratch folders."""
    from argosy.runtime.processes import kill_tree

    prefix = str(folder.resolve() / SEALED_PREFIX)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(prefix):
            kill_tree(int(entry.name))


def _remove_folder(parent: WarmParent) -> None:
    """What a dropped parent leaves: a sealed parent's folder; its output (what its imports
    printed), unless its imports failed — the task that then started fresh said why, this
    log is kept for whoever wonders why it was not forked."""
    if parent.folder is not None:
        shutil.rmtree(parent.folder, ignore_errors=True)
        parent.folder.with_name(parent.folder.name + ".log").unlink(missing_ok=True)
    elif parent.log is not None and not parent.failed:
        parent.log.unlink(missing_ok=True)


def _remove_orphaned_plaintext(folder: Path) -> None:
    """Remove the private folders of parents that are gone (killed before their clean-up),
    and the output of the parents of engines that are gone (``warm-ENGINE_PID-...log``)."""
    import shutil

    for private in folder.glob(f"{PRIVATE_PREFIX}*"):
        pid = private.name.removeprefix(PRIVATE_PREFIX)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(private, ignore_errors=True)
    for log in folder.glob(f"{LOG_PREFIX}*.log"):
        engine = log.name.removeprefix(LOG_PREFIX).split("-", 1)[0]
        if engine.isdigit() and not Path(f"/proc/{engine}").exists():
            log.unlink(missing_ok=True)


# -- the warm parent's side ------------------------------------------------------------------------


def _import_step(invocation: str) -> None:
    """What a launcher imports for this invocation's step: the code package and its module."""
    import sys

    from argosy.runtime.invocation import Invocation
    from argosy.runtime.launcher import _import_function
    from argosy.stores.artifacts.blobs import open_artifact_store

    inv = Invocation.from_json(json.loads(Path(invocation).read_text()))
    module = inv.step["implementation"]["module"]
    if module in sys.modules:
        return
    store = open_artifact_store(inv.store.url, inv.tenant, inv.store.options)
    if inv.encryption:  # the code package is stored encrypted: read it as the launcher does
        from argosy.stores.encryption import ObjectCipher, StaticDataKeys

        store = store.with_cipher(ObjectCipher(StaticDataKeys.from_document(inv.encryption)))
        # not the attempt's scratch (it goes with the attempt; this module stays imported)
        inv = inv.completed(cache_dir=str(_private_cache()), encryption=None)
    _import_function(inv, store)


def _private_cache() -> Path:
    """This parent's own folder for plaintext (the warm folder is the cwd), mode 0700."""
    private = Path.cwd() / f"{PRIVATE_PREFIX}{os.getpid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    return private


def serve(fd: int) -> NoReturn:
    """The warm parent: import, say ready, then fork a child per request until idle."""
    sealed = os.environ.pop(SEALED_ENV, None)
    if sealed is not None:  # first of all: no other process of the task uid may look inside
        processes.set_not_dumpable()
    try:
        _serve(fd, json.loads(sealed) if sealed is not None else None)
    finally:  # a parent killed outright leaves it: the next pool in this folder removes it
        shutil.rmtree(Path.cwd() / f"{PRIVATE_PREFIX}{os.getpid()}", ignore_errors=True)
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown (~10 ms): the executor waits for this exit


_MARKER = ""  # this parent's ARGOSY_ATTEMPT_ID (its marker), which each child overwrites


def _import_sealed(start: dict[str, Any], module: str) -> None:
    """A sealed parent's import: the code the server unpacked for it, nothing else read."""
    import importlib
    import sys

    from argosy.runtime import launcher

    if start["code"] not in launcher.PRELOADED:
        for rel in reversed(start["paths"]):
            sys.path.insert(0, str(Path(start["dir"]) / rel))
        launcher.PRELOADED[start["code"]] = start["dir"]
    if module not in sys.modules:
        importlib.import_module(module)


def _import_task_client() -> None:
    """What a server's launcher imports besides the step: the task store's client (httpx) and
    the cipher, through the plugin registry (whose entry points are read once, here)."""
    import importlib

    from argosy import plugins
    from argosy.stores.artifacts.task_http import SCHEME, tls_context

    plugins.names(plugins.BYTE_STORES)  # what open_artifact_store looks a scheme up in
    plugins.byte_store_class(f"{SCHEME}http")
    tls_context()  # no secret in it: the system's CA bundle
    for name in ("httpcore", "argosy.stores.encryption"):  # httpx imports httpcore lazily
        importlib.import_module(name)


def _serve(fd: int, sealed: dict[str, Any] | None) -> None:
    import signal
    import traceback

    if sealed is None:  # a local run's parent dies with its engine; a server's is shared by
        processes.set_parent_death_signal()  # runs (threads) and exits when the server's socket closes
    global _MARKER
    started_by = os.getppid()
    idle = float(os.environ.pop(IDLE_ENV, IDLE_SECONDS))
    _MARKER = os.environ.get(ATTEMPT_ENV, "")
    sock = socket.socket(fileno=fd)
    try:
        signal.alarm(int(START_TIMEOUT))  # an import that never ends ends the parent
        # what every child runs, what every step's module imports, what finds its code
        import argosy.runtime.launcher
        import argosy.sdk.pipeline
        import argosy.spec.code_package

        if sealed is not None:
            _import_task_client()
            _import_sealed(sealed, sealed["module"])
        else:
            import argosy.stores.artifacts.local  # noqa: F401  (the code package's store)

            first = os.environ.pop(FIRST_ENV, None)
            if first is None:  # started ahead: wait for the first task's module and environment
                signal.alarm(0)
                first = _first_task(sock, idle)
                if first is None:
                    return
                signal.alarm(int(START_TIMEOUT))
            _import_step(first)
        signal.alarm(0)
    except BaseException as exc:
        traceback.print_exc()
        sock.send(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}).encode())
        return
    sock.send(b'{"ready": true}')
    children: dict[int, int] = {}  # pidfd -> pid
    unchecked: dict[int, int] = {}  # pid -> pidfd: not reaped until the executor checked it
    gates: dict[int, int] = {}  # pid -> the pipe its child waits on before running the task
    spare = _Spare.make(sock)
    try:
        _serve_loop(sock, sealed, started_by, idle, children, unchecked, gates, spare)
    finally:
        if spare.pid is not None:
            spare.discard()


def _first_task(sock: socket.socket, idle: float) -> str | None:
    """A parent started ahead: take its first task's environment (as a parent started for
    that task would have had it from the start) and return its invocation; None when the
    executor closed the socket, or none came for ``idle`` seconds."""
    ready, _, _ = select.select([sock], [], [], idle)
    data = sock.recv(MAX_MESSAGE) if ready else b""
    if not data:
        return None
    first = json.loads(data)
    os.environ.clear()
    os.environ.update(first["env"])
    os.environ[ATTEMPT_ENV] = _MARKER
    return str(first["first"])


def _serve_loop(sock: socket.socket, sealed: dict[str, Any] | None, started_by: int,
                idle: float, children: dict[int, int], unchecked: dict[int, int],
                gates: dict[int, int], spare: _Spare) -> None:  # fmt: skip
    import sys

    idle_since = time.monotonic()
    while True:
        if os.getppid() != started_by:
            return  # its engine is gone
        if not children and not unchecked and time.monotonic() - idle_since > idle:
            return
        watched: list[Any] = [sock, *children]
        ready, _, _ = select.select(watched, [], [], 1.0)
        for pidfd in [r for r in ready if isinstance(r, int)]:
            pid = children.pop(pidfd)
            os.close(pidfd)
            _, status, usage = os.wait4(pid, 0)
            cpu = usage.ru_utime + usage.ru_stime
            sock.send(json.dumps({"exit": pid, "status": status, "cpu": cpu}).encode())
            idle_since = time.monotonic()
        if sock not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 8)
        except OSError:
            return
        if not data:
            return  # the executor closed its end
        request = json.loads(data)
        if "checked" in request:  # the executor has checked the child: it may run, and be
            checked = int(request["checked"])  # reaped
            found = unchecked.pop(checked, None)
            if found is not None:
                children[found] = checked
            gate = gates.pop(checked, None)
            if gate is not None:
                with contextlib.suppress(OSError):
                    os.write(gate, b"1")
                os.close(gate)
            if spare.pid is None:  # the next task's child, forked while this one runs
                spare.refill(sock)
            continue
        sys.stdout.flush()  # nothing of the parent's may reach a child's output
        sys.stderr.flush()
        reply = _fork(request, fds, sock, sealed, spare)
        for passed in fds:  # passed on unread (a sealed parent's: the invocation, environment)
            os.close(passed)
        if "pid" not in reply:
            sock.send(json.dumps(reply).encode())
            continue
        pidfd = os.pidfd_open(reply["pid"])  # before any wait: the child cannot be reaped yet
        unchecked[reply["pid"]] = pidfd
        if (gate := reply.pop("_go", None)) is not None:
            gates[reply["pid"]] = gate
        socket.send_fds(sock, [json.dumps(reply).encode()], [pidfd])
        idle_since = time.monotonic()


class _Spare:
    """A child forked ahead of its task, so that forking is off the task's critical path: it
    is in a session of its own already and waits for its request (and the task's descriptors)
    on a private socket; the parent hands the next request to it and forks the next spare
    after the executor has checked that child. A spare forked before the parent imported
    more modules (another step's) is stale: it is discarded and a fresh one forked for the
    task on the spot. It exits when its socket closes (the parent ended or discarded it)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.go = -1
        self.modules = 0

    @classmethod
    def make(cls, main: socket.socket) -> _Spare:
        spare = cls()
        spare.refill(main)
        return spare

    def refill(self, main: socket.socket) -> None:
        import sys
        import traceback

        if processes.thread_count() != 1:
            return
        gc.freeze()  # the child's collections skip what the parent imported (no page copies)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the spare
            try:
                ours.close()
                os.close(ready_r)
                os.close(go_w)
                os.setsid()
                os.write(ready_w, b"1")
                os.close(ready_w)
                # what needs no request, done while the previous task runs
                main.close()
                _close_fds_except({theirs.fileno(), go_r})
                _reset_signals()
                marker = _marker_address()
                os.environ.clear()
                data, fds, _, _ = socket.recv_fds(theirs, MAX_MESSAGE, 8)
                if not data:
                    os._exit(0)  # discarded, or its parent ended
                request = json.loads(data)
                if os.read(go_r, 1) != b"1":  # the parent died before the executor checked it
                    os._exit(0)
                os.close(go_r)
                theirs.close()
                _become_task(request, fds, main, marker)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        theirs.close()
        os.close(ready_w)
        os.close(go_r)
        got = os.read(ready_r, 1)
        os.close(ready_r)
        if not got:
            ours.close()
            os.close(go_w)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        self.pid, self.sock, self.go, self.modules = pid, ours, go_w, len(sys.modules)

    def hand_over(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        """Give the request to the spare: the reply naming it, or None (none fit: fork)."""
        import sys

        if self.pid is None or self.sock is None:
            return None
        if self.modules != len(sys.modules):
            self.discard()
            return None
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        except OSError:
            self.discard()
            return None
        reply = {"pid": self.pid, "_go": self.go}
        self.sock.close()
        self.pid, self.sock, self.go = None, None, -1
        return reply

    def discard(self) -> None:
        if self.pid is None:
            return
        if self.sock is not None:
            self.sock.close()  # it exits on the end of its socket
        os.close(self.go)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.pid, self.sock, self.go = None, None, -1


def _fork(request: dict[str, Any], fds: list[int], sock: socket.socket,
          sealed: dict[str, Any] | None, spare: _Spare) -> dict[str, Any]:  # fmt: skip
    if len(request["attempt_id"]) != MARKER_LENGTH:
        return {"fallback": "an attempt id of another length"}
    if len(fds) != (5 if sealed is not None else 4):
        return {"fallback": "not the descriptors this parent expects"}
    try:
        if sealed is not None:
            _import_sealed(sealed, str(request["module"]))
        else:
            _import_step(request["invocation"])
    except BaseException as exc:  # the fresh interpreter reports it as the step's error
        return {"fallback": f"the step's module did not import here: {exc}"}
    handed = spare.hand_over(request, fds)
    if handed is None:  # no spare, or one older than this module: fork one for it now
        if processes.thread_count() != 1:  # never fork a threaded process (a lock held
            return {"fallback": f"the warm parent holds {processes.thread_count()} threads"}
        spare.refill(sock)  # (elsewhere stays held)
        handed = spare.hand_over(request, fds)
    return handed or {"fallback": "the forked child ended at once"}


def _reset_signals() -> None:
    """Every signal handler as a fresh interpreter has it."""
    import signal

    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        handler: Any = signal.SIG_DFL
        if sig == signal.SIGINT:
            handler = signal.default_int_handler
        elif sig in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)):
            handler = signal.SIG_IGN
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, handler)


def _close_fds_except(keep: set[int]) -> None:
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd not in keep and fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def _become_task(
    request: dict[str, Any], fds: list[int], sock: socket.socket, marker: int | None
) -> None:
    """In the child (a spare that has reset its signal handlers and environment and found
    ``marker``, its environment block's marker): a launcher's process as a fresh interpreter
    would have it; never returns."""
    import fcntl
    import sys

    sock.close()
    stdin, stdout, stderr, status = fds[:4]
    env = request.get("env")
    if len(fds) == 5:  # a sealed parent's child: its environment, which the parent never read
        with os.fdopen(fds[4], "rb") as given:
            env = json.loads(given.read())
    assert isinstance(env, dict)
    wanted = {0: stdin, 1: stdout, 2: stderr, int(request["status_fd"]): status}
    high = {target: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 1000) for target, src in wanted.items()}
    _close_fds_except(set(high.values()))
    for target, src in high.items():
        os.dup2(src, target)  # inheritable, as Popen's pass_fds leaves them
        os.close(src)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(env)
    _mark_environment_block(request["attempt_id"], marker)
    source = request.get("invocation") or "-"  # "-": on stdin, as a fresh task user's launcher
    sys.argv = ["-c", source]
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # the parent's global generator is not a secret
        _thread_limits(int(env.get("OMP_NUM_THREADS") or 1))
    from argosy.runtime.launcher import main

    code = main([source])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _thread_limits(threads: int) -> None:
    """Give native thread pools (imported at one thread) the task's CPUs."""
    if threads <= 1:
        return
    import importlib

    try:  # scikit-learn's dependency; without it the pools keep the parent's one thread
        threadpoolctl: Any = importlib.import_module("threadpoolctl")
    except ImportError:
        return
    threadpoolctl.threadpool_limits(threads)


def _marker_address() -> int | None:
    """Where this process's original environment block (what ``/proc/self/environ`` shows)
    holds the marker's value, or None."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
        block = Path("/proc/self/environ").read_bytes()
    except (OSError, IndexError, ValueError):
        return None
    needle = f"{ATTEMPT_ENV}={_MARKER}".encode()
    at = block.find(needle)
    if at < 0 or start + at + len(needle) > end:
        return None
    return start + at + len(ATTEMPT_ENV) + 1


def _mark_environment_block(attempt_id: str, address: int | None) -> None:
    """Write the attempt id over the placeholder at ``address`` (:func:`_marker_address`)."""
    import ctypes

    if address is not None:
        value = attempt_id.encode()
        ctypes.memmove(address, value, len(value))
