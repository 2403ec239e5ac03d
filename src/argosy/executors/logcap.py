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
        self.file = open(path, "a", encoding="utf-8", opener=opener)  # noqa: SIM115
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
            self.file.write(record)
            self.written += size
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

    def flush(self) -> None:
        self.file.flush()

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

    def close(self) -> None:
        """Write the marker (if anything was cut) and the kept tail, then close."""
        if self.file.closed:
            return
        if self.cut_lines:
            self.file.write(self.marker())
        for record, _ in self.tail:
            self.file.write(record)
        self.tail.clear()
        self.file.close()


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
