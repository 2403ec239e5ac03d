"""The warm command line: ``argosy`` commands forked from a resident process that has
imported SQLAlchemy, pydantic and the engine once.

Why: ``argosy run`` spends ~0.35 s importing its stack before it does any work, on every
invocation; interactive iteration on a pipeline should not. The first eligible command of a
user in a Python environment starts a **warm command line** in the background (and runs the
usual way itself); later commands connect to it over a Unix socket, hand it their argv, working
directory, environment, umask and their stdin/stdout/stderr (as file descriptors), and it forks
one child per command that runs exactly what the cold command would: the same ``main()``, the
same state folder, the same output on the same terminal or pipe, the same exit code.

What keeps it equivalent and safe:

- The parent holds no database connection, thread, socket but its own, or user data: it has
  only imported modules and built the Click commands of :data:`WARM_COMMANDS` (the modules
  that size themselves to the terminal at import, :data:`TERMINAL_MODULES`, are dropped
  again: each command imports them for its own terminal).
- One per (user, Python environment): the socket lives in a folder only the user can open,
  named by a digest of the interpreter, its prefix and ``PYTHONPATH``; a connection from any
  other uid is refused (``SO_PEERCRED``).
- Changed code is never run stale: before each fork the parent checks that every file it has
  imported is unchanged (size and modification time); otherwise it answers ``stale`` and exits,
  and the command runs cold (and starts a fresh one).
- Signals reach the command: the client forwards INT, TERM, HUP and QUIT to the child; if the
  client dies (even by SIGKILL) the parent kills the child the same way, so ``kill -9`` of
  ``argosy run`` still ends its engine, as before.
- Eligible commands (:data:`WARM_COMMANDS`) are those that neither serve nor prompt; not
  inside a task; not under ``CI=true`` unless ``ARGOSY_WARM_CLI=true`` (a CI job's processes
  should end with it); ``ARGOSY_WARM_CLI=false`` turns it off. An idle parent exits after
  ``ARGOSY_WARM_CLI_IDLE`` seconds (default 900), or when its socket file is removed.

The client side of this module imports only the standard library: it is what the ``argosy``
script runs first.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import socket
import struct
import sys
import zlib

TYPE_CHECKING = False  # typing, json and hashlib stay out of the client: ~5 ms of each command
if TYPE_CHECKING:
    from typing import Any, NoReturn

WARM_COMMANDS = frozenset({"run", "runs", "logs", "lineage", "compile", "artifacts"})
SWITCH_ENV = "ARGOSY_WARM_CLI"
IDLE_ENV = "ARGOSY_WARM_CLI_IDLE"
DEFAULT_IDLE = 900.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# What a command's process imports (the rest follows from these; see TERMINAL_MODULES).
PRELOAD = (
    "argosy.cli.main",
    "argosy.cli.commands",
    "argosy.cli.ci_commands",
    "argosy.client.local",
    "argosy.client.backend",
    "argosy.client.client",
    "argosy.service.runs",
    "argosy.service.pipelines",
    "argosy.service.logs",
    "argosy.service.lineage",
    "argosy.service.artifacts",
    "argosy.engine.engine",
    "argosy.executors.local.executor",
    "argosy.spec.compile",
    "argosy.spec.compile_cache",
    "argosy.spec.parameters",
    "argosy.spec.validate",
    "argosy.sdk.step",
    "argosy.sdk.pipeline",
    "argosy.interop.kfp.ir",
    "argosy.config",
)
# The command line's modules that size themselves to the terminal at import (commands.py's
# consoles, and the modules that import them by name): dropped from the warm command line
# after its imports, so that each command imports them for its own terminal. Every other
# module of argosy.cli stays imported (tests/test_warm_cli.py checks none of them does that).
TERMINAL_MODULES = (
    "argosy.cli.commands",
    "argosy.cli.ci_commands",
    "argosy.cli.model_commands",
    "argosy.cli.operations",
    "argosy.cli.schedule_commands",
)
# The environment a parent is started with: enough to import the same modules, nothing else.
_PARENT_ENV = (
    "PATH", "PYTHONPATH", "PYTHONHOME", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", IDLE_ENV,
)  # fmt: skip
_HEADER = struct.Struct("!I")


def entry() -> NoReturn:
    """The ``argosy`` script: an eligible command through the warm command line when one is
    running, else the usual in-process command (starting a warm one for next time)."""
    argv = sys.argv
    if _eligible(argv):
        key = environment_key()
        paths = _paths(key)
        if paths is not None:
            code = _run_warm(paths[0], argv, key)
            if code is not None:
                os._exit(code)
            _start_parent(*paths)
    from argosy.cli.main import entry as cold

    cold()
    raise AssertionError("unreachable: the command line exits")


def _eligible(argv: list[str]) -> bool:
    if len(argv) < 2 or argv[1] not in WARM_COMMANDS:
        return False
    switch = os.environ.get(SWITCH_ENV, "").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return False
    if switch not in ("1", "true", "yes", "on") and _truthy(os.environ.get("CI")):
        return False  # a CI job's processes end with it: no resident process unless asked for
    return "ARGOSY_ATTEMPT_ID" not in os.environ and hasattr(socket, "AF_UNIX")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _paths(key: str) -> tuple[str, str] | None:
    """The socket and lock file of this user's warm command line for this Python environment,
    in a folder only the user can use; None where no such folder can be had."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = os.path.join(runtime, "argosy") if runtime else f"/tmp/argosy-{uid}"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if st.st_uid != uid or st.st_mode & 0o077 or not os.path.isdir(folder):
        return None
    data = key.encode()
    digest = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"  # a name; the key itself is checked
    base = os.path.join(folder, f"cli-{digest}")
    if len(os.fsencode(base)) + len(".sock") > 107:  # the most a Unix socket's path holds
        return None
    return base + ".sock", base + ".lock"


def environment_key() -> str:
    """What must be equal for a warm command line to run a client's command: the interpreter,
    its prefix and version, ``PYTHONPATH`` and where this package is."""
    return "\0".join(
        (sys.executable, sys.prefix, os.environ.get("PYTHONPATH", ""), sys.version,
         os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )  # fmt: skip


def _run_warm(path: str, argv: list[str], key: str) -> int | None:
    """Run the command in a child of the warm command line; its exit code, or None when none
    is running or it will not take the command (then the caller runs it cold)."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    request = marshal.dumps(
        {
            "key": key,
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "path": sys.path,
            "streams": [[s.encoding, s.errors] for s in streams]
            if all(s is not None for s in streams)
            else None,
        }
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
        sock.sendall(request)
        replies = sock.makefile("rb")
        first = replies.readline().split()
    except OSError:  # none running, or a descriptor of ours is closed: run cold
        sock.close()
        return None
    if len(first) != 2 or first[0] != b"pid":
        sock.close()
        return None  # stale (it exits), busy, or refused: run cold
    child = int(first[1])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for forwarded in FORWARDED:
        signal.signal(forwarded, forward)
    last = replies.readline().split()
    if len(last) == 2 and last[0] == b"exit":
        return int(last[1])
    if len(last) == 2 and last[0] == b"signal":
        signum = int(last[1])
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # end the way the command's process ended
        return 128 + signum
    sys.stderr.write(
        "argosy: the warm command line stopped during the command; run it again, or set "
        f"{SWITCH_ENV}=false to run commands without it\n"
    )
    return 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _start_parent(sock_path: str, lock_path: str) -> None:
    """Start a warm command line in the background for the next command (never waits)."""
    import subprocess

    env = {k: os.environ[k] for k in _PARENT_ENV if k in os.environ}
    code = f"from argosy.cli.warm import serve; serve({sock_path!r}, {lock_path!r})"
    with contextlib.suppress(OSError):
        subprocess.Popen(
            [sys.executable, "-P", "-c", code],
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )


# -- the warm command line itself ------------------------------------------------------------


def serve(sock_path: str, lock_path: str, idle: float | None = None) -> None:
    """Be the warm command line on ``sock_path`` until idle for ``idle`` seconds, the socket
    file goes, or imported code changes. Exits at once if another holds ``lock_path``."""
    import fcntl

    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another one is starting or running
    os.ftruncate(lock, 0)
    os.write(lock, str(os.getpid()).encode())  # who holds it: for `kill` and the tests
    if idle is None:
        try:
            idle = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE))
        except ValueError:
            idle = DEFAULT_IDLE
    _preload()
    files = _imported_files()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)  # a dead predecessor's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    os.chmod(sock_path, 0o600)
    listener.listen(32)
    parent = _Parent(listener, sock_path, files, idle)
    try:
        parent.loop()
    finally:
        if parent.still_ours():
            os.unlink(sock_path)


def _preload() -> None:
    import gc
    import importlib

    gc.disable()
    for name in PRELOAD:
        importlib.import_module(name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    from argosy.cli import main

    main.prepare(WARM_COMMANDS)
    package = sys.modules["argosy.cli"]
    for name in TERMINAL_MODULES:  # each command imports them afresh, sized to its terminal
        if sys.modules.pop(name, None) is not None and hasattr(package, name.rsplit(".")[-1]):
            delattr(package, name.rsplit(".")[-1])
    gc.collect()
    gc.freeze()
    gc.enable()


def _imported_files() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file the parent has imported from."""
    seen: dict[str, tuple[int, int]] = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str) and name not in seen:
            try:
                st = os.stat(name)
            except OSError:
                continue
            seen[name] = (st.st_size, st.st_mtime_ns)
    return seen


def _unchanged(files: dict[str, tuple[int, int]]) -> bool:
    for name, identity in files.items():
        try:
            st = os.stat(name)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != identity:
            return False
    return True


class _Parent:
    """The accept/fork/reap loop: one child per command, its exit code to its client."""

    def __init__(
        self, listener: socket.socket, path: str, files: dict[str, tuple[int, int]], idle: float
    ) -> None:
        import selectors

        self.listener = listener
        self.path = path
        self.files = files
        self.idle = idle
        self.inode = os.lstat(path).st_ino
        self.children: dict[int, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._stop)
        self.selector.register(listener, 1, "accept")
        self.selector.register(self.wake_r, 1, "reap")
        self.running = True

    def _stop(self, *_: object) -> None:
        self.running = False

    def loop(self) -> None:
        import time

        last = time.monotonic()
        while self.running:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "reap":
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 512)
                    self._reap()
                else:
                    self._client_event(key.fileobj, key.data)  # type: ignore[arg-type]
            self._reap()
            if self.children:
                last = time.monotonic()
            elif time.monotonic() - last > self.idle or not self.still_ours():
                break
        for sock in self.children.values():
            sock.close()

    def still_ours(self) -> bool:
        try:
            return os.lstat(self.path).st_ino == self.inode
        except OSError:
            return False

    def _accept(self) -> None:
        from argosy.runtime import processes

        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            if not _peer_is_us(conn):  # the folder is the user's alone: never expected
                raise ValueError("another user")
            request, fds = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            return
        try:
            if request is None:
                conn.sendall(b"refused\n")
            elif not _unchanged(self.files):
                conn.sendall(b"stale\n")
                self.running = False
            elif processes.thread_count() != 1:
                conn.sendall(b"busy\n")
            else:
                pid = os.fork()
                if pid == 0:
                    self._become_command(conn, request, fds)
                self.children[pid] = conn
                self.selector.register(conn, 1, pid)
                conn.sendall(f"pid {pid}\n".encode())
                return
        except OSError:
            pass
        finally:
            for fd in fds:
                os.close(fd)
        conn.close()

    def _client_event(self, conn: socket.socket, pid: int) -> None:
        """The client closed its end before its command ended: it was killed, so the command
        is killed the same way (what killing a cold ``argosy`` process does)."""
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data and pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                reply = f"signal {os.WTERMSIG(status)}\n"
            else:
                reply = f"exit {os.waitstatus_to_exitcode(status)}\n"
            with contextlib.suppress(OSError):
                conn.sendall(reply.encode())
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            conn.close()

    def _become_command(
        self, conn: socket.socket, request: dict[str, Any], fds: list[int]
    ) -> NoReturn:
        """In the forked child: take the client's streams, folder and environment, then run
        the command line's ``entry()`` exactly as the ``argosy`` script would."""
        from argosy.runtime import processes

        try:
            processes.set_parent_death_signal()  # it must not outlive the warm command line
            os.setsid()
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            self.listener.close()
            for sock in self.children.values():
                sock.close()
            conn.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.umask(int(request["umask"]))
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = list(request["argv"])
            sys.path[:] = list(request["path"])
            import importlib
            import random

            importlib.invalidate_caches()
            random.seed()
            _fresh_streams(request.get("streams"))
            from argosy.cli.main import entry as command

            command()
        except BaseException:  # the child must never return into the loop
            import traceback

            with contextlib.suppress(Exception):
                traceback.print_exc()
        os._exit(1)


def _fresh_streams(streams: list[list[str]] | None) -> None:
    """New ``sys.stdin/stdout/stderr`` on the client's descriptors, buffered as Python's own
    start-up would (line-buffered on a terminal, stderr always), in the client's encodings."""
    import io

    kinds = streams or [["utf-8", "strict"], ["utf-8", "strict"], ["utf-8", "backslashreplace"]]
    made = []
    for fd, (encoding, errors) in enumerate(kinds):
        binary = open(fd, "rb" if fd == 0 else "wb", closefd=False)  # noqa: SIM115
        made.append(
            io.TextIOWrapper(
                binary,
                encoding=encoding,
                errors=errors,
                line_buffering=fd == 2 or os.isatty(fd),
                write_through=fd == 2,
            )
        )
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made  # type: ignore[misc]


def _receive(conn: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The client's request and its three file descriptors."""
    conn.settimeout(5.0)
    size = _HEADER.size
    data, fds, _flags, _addr = socket.recv_fds(conn, size, 3)
    if len(data) != size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("bad request")
    (length,) = _HEADER.unpack(data)
    if length > 16 * 1024 * 1024:
        for fd in fds:
            os.close(fd)
        raise ValueError("request too large")
    body = bytearray()
    while len(body) < length:
        chunk = conn.recv(min(65536, length - len(body)))
        if not chunk:
            break
        body.extend(chunk)
    conn.settimeout(None)
    try:
        request = marshal.loads(bytes(body))  # only from a peer of this uid (checked first)
    except (ValueError, EOFError, TypeError):
        request = None
    fields = {"key", "argv", "cwd", "env", "umask", "path"}
    if (
        not isinstance(request, dict)
        or not fields <= set(request)
        or request["key"] != environment_key()
    ):
        request = None
    return request, fds


def _peer_is_us(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())
