"""The one clock of a server process: leases, heartbeats and schedules all read it.

``SystemClock`` is real time. ``FileClock`` reads the current time from a file (an ISO-8601
timestamp, rewritten by a test), so schedules and leases can be driven through simulated
minutes or days, consistently across server restarts and across instances.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time (timezone-aware, UTC)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of real time (simulated clocks move only when told to)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FileClock:
    """Simulated time from a file holding an ISO-8601 timestamp (for tests and drills)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        text = self.path.read_text().strip()
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def clock_for(path: Path | None) -> Clock:
    return FileClock(path) if path is not None else SystemClock()
