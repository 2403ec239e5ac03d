"""Process-tree facts and control from ``/proc`` (Linux): find, identify, stop and kill.

Used by the step launcher (which must start in milliseconds, so no psutil import) and by the
local executor. Every task's processes carry ``ARGOSY_ATTEMPT_ID`` in their environment, so
even a process that left the attempt's process group and session (``setsid``) and lost its
parent can be found again, by the executor or by an engine recovering after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
ATTEMPT_ENV = "ARGOSY_ATTEMPT_ID"
_PROC = Path("/proc")


def become_subreaper() -> bool:
    """Make orphaned descendants reparent to this process instead of init (Linux >= 3.4)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_not_dumpable() -> bool:
    """Make this process non-dumpable: other processes of its user cannot read its
    ``/proc/PID/environ``, ``cwd``, ``fd`` or memory, nor ptrace it (root still can)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def thread_count() -> int:
    """This process's threads, as the kernel counts them (a fork copies only the caller)."""
    return len(os.listdir("/proc/self/task"))


def set_oom_score_adj(value: int) -> None:
    """Ask the kernel's OOM killer to pick this process (and its children) first."""
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(value))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


_BOOT_TIME: float | None = None


def _boot_time() -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                _BOOT_TIME = float(line.split()[1])
                break
        else:
            _BOOT_TIME = 0.0
    return _BOOT_TIME


def start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch, to clock-tick precision); None if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[19])  # field 22 of /proc/PID/stat, counted from after the name
    return round(_boot_time() + ticks / os.sysconf("SC_CLK_TCK"), 2)


def is_same_process(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is alive (not a zombie) and is the process that started at ``started``."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if started is None:
        return True
    now_started = start_time(pid)
    return now_started is not None and abs(now_started - started) < 0.05


def _all_pids() -> list[int]:
    return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]


_CHILDREN_FILES: bool | None = None  # whether this kernel has /proc/PID/task/TID/children


def _has_children_files() -> bool:
    global _CHILDREN_FILES
    if _CHILDREN_FILES is None:
        own = os.getpid()
        _CHILDREN_FILES = (_PROC / str(own) / "task" / str(own) / "children").exists()
    return _CHILDREN_FILES


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (none once it is gone)."""
    found: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return found  # gone (a task that ended is sampled once more before it is reaped)
    if _has_children_files():
        for task in tasks:
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                found.extend(int(c) for c in (task / "children").read_text().split())
        return found
    for other in _all_pids():  # kernels without /proc/PID/task/TID/children: scan them all
        fields = _stat_fields(other)
        if fields and int(fields[1]) == pid:
            found.append(other)
    return found


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` in the process tree (children first, depth-first)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children(stack.pop()):
            if child not in out:
                out.append(child)
                stack.append(child)
    return out


def marked_processes(attempt_id: str) -> list[int]:
    """Live processes whose environment carries ``ARGOSY_ATTEMPT_ID=<attempt_id>``."""
    needle = f"{ATTEMPT_ENV}={attempt_id}".encode()
    me = os.getpid()
    found = []
    for pid in _all_pids():
        if pid == me:
            continue
        try:
            env = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and is_same_process(pid, None):
            found.append(pid)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _snapshot(root: int | None, attempt_id: str | None) -> list[int]:
    found: list[int] = []
    if root is not None and is_same_process(root, None):
        found = [root, *descendants(root)]
    if attempt_id is not None:
        found.extend(p for p in marked_processes(attempt_id) if p not in found)
    return [p for p in found if p != os.getpid()]


def kill_tree(root: int | None, attempt_id: str | None = None, *, rounds: int = 50) -> int:
    """SIGKILL ``root``, everything below it, and every process marked with ``attempt_id``.

    The tree is frozen first: processes are stopped with SIGSTOP (a stopped process cannot
    fork) until a fresh look finds no new one; then all are killed. Returns how many.
    """
    stopped: set[int] = set()
    for _ in range(rounds):
        new = [p for p in _snapshot(root, attempt_id) if p not in stopped]
        if not new:
            break
        _signal_all(new, signal.SIGSTOP)
        stopped.update(new)
    _signal_all(sorted(stopped), signal.SIGKILL)
    return len(stopped)


def rss_anon(pid: int) -> int:
    """Anonymous resident memory of ``pid`` in bytes (mapped file pages are not counted)."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_total(pid: int) -> int:
    """Resident memory of ``pid`` in bytes, file-backed pages included."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0
    return int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
