"""A task log with a size cap: a task that prints a gigabyte keeps its first and last parts.

An attempt's log (JSON lines, see :mod:`argosy.service.logs`) is written as it comes until
half of the cap is used; from then on only the newest lines are kept, in a ring of the other
half of the cap. When the log is closed, one marker line says how many lines and bytes were
cut there (``"truncated": {"lines": N, "bytes": B}`` on the line, for tools), then the kept
tail follows. So a log never holds more than the cap (plus the marker), and the process that
writes it never holds more than half the cap in memory.

:func:`punch_hole` frees the disk blocks of raw output that was already read (a task's
stdout/stderr files keep their size but no longer their bytes), so a task printing without
end does not fill the disk either.

A full disk loses no line and stops no engine: what the file system refuses (ENOSPC, EDQUOT)
stays in memory (up to :data:`PENDING_CAP`) and is written at the next flush, e.g. once the
attempt's scratch folder is removed; beyond that, a line at the end says how much was lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_LOG_CAP = 32 * 1024 * 1024  # bytes of JSON lines per attempt (ARGOSY_LOG_CAP_BYTES)
MAX_LINE = 64 * 1024  # a longer line (or output with no newline) is split into pieces of this
TRUNCATED_KEY = "truncated"
PENDING_CAP = 4 * 1024 * 1024  # bytes of lines held in memory while the disk refuses them
_FLUSH_AT = 64 * 1024  # pending bytes that trigger a write

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: ctypes.CDLL | None = None


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"  # pragma: no cover


class CappedLog:
    """The JSON-lines log of one attempt, written to ``path`` within ``cap`` bytes."""

    def __init__(
        self, path: Path, cap: int = DEFAULT_LOG_CAP, *, opener: Callable[..., int] | None = None
    ) -> None:
        self.path = path
        self.cap = cap
        # unbuffered: bytes the disk refused stay in ``pending``, none vanish in a buffer
        self.file = open(path, "ab", buffering=0, opener=opener)  # noqa: SIM115
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.lost_lines = 0
        self.lost_bytes = 0
        self.lost_why = ""
        self.error: OSError | None = None  # why the last write failed (None: all written)
        self.head_budget = cap // 2
        self.tail_budget = cap - self.head_budget
        self.written = self.file.tell()
        self.tail: deque[tuple[str, int]] = deque()
        self.tail_bytes = 0
        self.cut_lines = 0
        self.cut_bytes = 0
        self.cutting = False

    @property
    def truncated(self) -> bool:
        return self.cut_lines > 0

    def write(self, record: str) -> None:
        """One JSON line, with its newline."""
        size = len(record.encode("utf-8", "replace"))
        if not self.cutting and self.written + size <= self.head_budget:
            self._queue(record.encode("utf-8", "replace"))
            self.written += size
            if self.pending_bytes >= _FLUSH_AT:
                self.flush()
            return
        self.cutting = True
        self.tail.append((record, size))
        self.tail_bytes += size
        while self.tail_bytes > self.tail_budget and self.tail:
            _, dropped = self.tail.popleft()
            self.tail_bytes -= dropped
            self.cut_lines += 1
            self.cut_bytes += dropped

    def skip(self, lines: int, size: int) -> None:
        """``lines`` (``size`` bytes of raw output) newer than any line written or kept were
        never read: everything kept in the tail so far is cut with them (the tail stays one
        contiguous stretch of the log)."""
        self.cutting = True
        self.cut_lines += len(self.tail) + lines
        self.cut_bytes += self.tail_bytes + size
        self.tail.clear()
        self.tail_bytes = 0

    def _queue(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_bytes += len(data)
        while self.pending_bytes > PENDING_CAP and len(self.pending) > 1:
            dropped = self.pending.popleft()  # the disk stays full: the oldest are lost
            self.pending_bytes -= len(dropped)
            self.lost_lines += 1
            self.lost_bytes += len(dropped)
            self.lost_why = str(self.error or "the disk was full")

    def flush(self) -> bool:
        """Write what is pending; False if the file system refused some (it stays pending,
        and :attr:`error` says why)."""
        while self.pending:
            data = self.pending[0]
            try:
                done = self.file.write(data) or 0
            except OSError as exc:
                self.error = exc
                return False
            self.pending_bytes -= done
            if done < len(data):
                self.pending[0] = data[done:]
            else:
                self.pending.popleft()
        self.error = None
        return True

    def marker(self, stamp: str | None = None) -> str:
        """The line that marks where lines were cut."""
        text = (
            f"argosy: [log truncated] {self.cut_lines} lines (about {_human(self.cut_bytes)}) were cut "
            f"here: this attempt's log passed its cap of {_human(self.cap)} "
            "(ARGOSY_LOG_CAP_BYTES); its first and last parts are kept"
        )
        entry = {
            "t": stamp or datetime.now(UTC).isoformat(),
            "s": "err",
            "m": text,
            TRUNCATED_KEY: {"lines": self.cut_lines, "bytes": self.cut_bytes},
        }
        return json.dumps(entry) + "\n"

    def close(self) -> bool:
        """Write the marker (if anything was cut) and the kept tail, then close; False if
        the file system refused part of it (:attr:`error` says why)."""
        if self.file.closed:
            return self.error is None
        if self.cut_lines:
            self._queue(self.marker().encode())
        for record, _ in self.tail:
            self._queue(record.encode("utf-8", "replace"))
        self.tail.clear()
        if self.lost_lines:
            self._queue(self.lost_marker().encode())
        written = self.flush()
        self.file.close()
        return written

    def lost_marker(self) -> str:
        """The line that says how much the full disk cost."""
        text = (
            f"argosy: [log lost] {self.lost_lines} lines (about {_human(self.lost_bytes)}) "
            f"could not be written to this attempt's log: {self.lost_why}"
        )
        return json.dumps({"t": datetime.now(UTC).isoformat(), "s": "err", "m": text}) + "\n"


def punch_hole(fd: int, length: int) -> bool:
    """Free the disk blocks of the first ``length`` bytes of the file (its size is kept, the
    range reads as zeros); False where the file system or platform cannot."""
    global _libc
    length -= length % 4096
    if length <= 0:
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fallocate = _libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        return bool(fallocate(fd, mode, 0, length) == 0)
    except (OSError, AttributeError):
        return False


def disk_bytes(path: Path) -> int:
    """The bytes a file occupies on disk (its blocks), not its apparent size."""
    return os.stat(path).st_blocks * 512
