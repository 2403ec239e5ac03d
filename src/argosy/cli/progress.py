"""Live progress of a run on stderr: a table on a terminal, one line per change otherwise;
and the steps' own output as it is written, each line prefixed by its node path (throttled:
at most :data:`LINES_PER_SECOND` of each node, the rest counted and named with the command that shows
them)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from argosy import api
from argosy.engine.engine import TaskView

LINES_PER_SECOND = 10  # of each node

STYLE = {
    "succeeded": "green", "cached": "cyan", "failed": "bold red", "running": "yellow",
    "queued": "blue", "skipped": "dim", "cancelled": "magenta", "pending": "dim",
}  # fmt: skip


class Progress:
    """An ``on_change`` callback for the engine that renders task states."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self._live: Live | None = None
        self._seen: dict[str, tuple[str, int]] = {}
        self._since: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._tasks: list[TaskView] = []
        self._window = 0.0  # when the current second of step output began
        self._shown: dict[str, int] = {}  # node path -> its lines shown in that second
        self._held: dict[str, int] = {}  # node path -> its lines not shown in it
        self.run_id = ""

    def __enter__(self) -> Progress:
        if self.interactive:
            self._live = Live(console=self.console, refresh_per_second=8, transient=False,
                              get_renderable=self._table)  # fmt: skip
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for col in ("node", "state", "attempt", "time"):
            table.add_column(col)
        now = time.monotonic()
        for t in self._tasks:
            started = self._since.get(t.node_path)
            end = self._ended.get(t.node_path, now)
            duration = f"{end - started:.1f}s" if started is not None else ""
            state = f"[{STYLE.get(t.state, '')}]{t.state}[/]"
            table.add_row(t.node_path, state, str(t.attempt_count or ""), duration)
        return table

    def _print(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def log(self, line: api.LogLine) -> None:
        """One line a step wrote, as ``NODE | text``; beyond the rate, counted instead."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self.flush_held()
            self._window = now
            self._shown.clear()
        node = line.node_path
        if self._shown.get(node, 0) >= LINES_PER_SECOND:  # per node: none starves another
            self._held[node] = self._held.get(node, 0) + 1
            return
        self._shown[node] = self._shown.get(node, 0) + 1
        self._print(f"{node} | {line.line}")

    def flush_held(self) -> None:
        """Say how many lines of each node were not shown, and how to see them."""
        for node, count in self._held.items():
            self._print(f"{node} | ... {count} more line(s): argosy logs {self.run_id} {node}")
        self._held.clear()

    def __call__(self, run_id: str, tasks: list[TaskView]) -> None:
        self.run_id = run_id
        self._tasks = tasks
        now = time.monotonic()
        for t in tasks:
            key = (t.state, t.attempt_count)
            if self._seen.get(t.node_path) == key:
                continue
            self._seen[t.node_path] = key
            if t.state == "running" and t.node_path not in self._since:
                self._since[t.node_path] = now
            if t.state in ("succeeded", "failed", "skipped", "cancelled", "cached"):
                self._ended[t.node_path] = now
            if not self.interactive and t.state != "pending":
                # a map node runs no process of its own: it has no attempt to number
                running = t.state == "running" and t.attempt_count > 0
                extra = f" (attempt {t.attempt_count})" if running else ""
                why = f": {t.reason}" if t.reason and t.state in ("failed", "skipped") else ""
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} {t.node_path} {t.state}{extra}{why}", file=sys.stderr, flush=True)
