"""Human-readable output that fits: tables and lines cut to the width they are read at.

The width is ``COLUMNS`` when set, else the terminal's; in a pipe without ``COLUMNS`` (and
with ``--wide``) nothing is cut. A cut value ends with ``…``; ``--wide`` or ``--output json``
shows it in full. Colour and styles appear only on a terminal (Rich's rule), so a pipe gets
plain text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.table import Table

MARK = "…"
MIN_FLEXIBLE = 12  # a cut column keeps at least this many characters
GAP = 2  # spaces between columns
UNBOUNDED = 1_000_000


@dataclass
class Layout:
    """How wide output may be: ``width`` None means unbounded (a pipe, or ``--wide``)."""

    width: int | None

    def clip(self, text: str, room: int | None = None) -> str:
        """``text`` cut to ``room`` (default: the whole width) with the mark, if it must be."""
        limit = room if room is not None else self.width
        if limit is None or len(text) <= limit:
            return text
        return text[: max(limit - 1, 0)] + MARK


def width_for(stream: TextIO, wide: bool = False) -> int | None:
    """``COLUMNS``, else the terminal's width, else None (a pipe: unbounded); None if ``wide``."""
    if wide:
        return None
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        pass
    return None


def console_for(stderr: bool, width: int | None) -> Console:
    """A console that never wraps or pads beyond ``width`` (unbounded: lines as they are)."""
    return Console(
        stderr=stderr, width=width or UNBOUNDED, soft_wrap=width is None, highlight=False
    )


def layout_for(stream: TextIO | None = None, wide: bool = False) -> Layout:
    return Layout(width_for(stream or sys.stdout, wide))


def fit_widths(natural: Sequence[int], flexible: Sequence[bool], width: int | None) -> list[int]:
    """Column widths that fit ``width`` (with :data:`GAP` between columns): the widest
    flexible columns give way first, down to :data:`MIN_FLEXIBLE`; then, if that is not
    enough, every column shares the cut."""
    widths = list(natural)
    if width is None:
        return widths
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if flexible[i] and w > MIN_FLEXIBLE]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        others = [widths[i] for i in shrinkable if i != widest]
        target = max(MIN_FLEXIBLE, max(others, default=0), widths[widest] - excess)
        if target >= widths[widest]:  # level with the next widest: cut both by one
            target = widths[widest] - 1
        excess -= widths[widest] - target
        widths[widest] = target
    while excess > 0:  # the fixed columns alone are too wide: cut the widest of all
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= 3:
            break
        widths[widest] -= 1
        excess -= 1
    return widths


class Trimmed:
    """A renderable's lines without the padding Rich adds at their ends (cells are padded to
    their column's width), styles kept."""

    def __init__(self, inner: Table) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.inner, options, pad=False):
            while line and not line[-1].control and not line[-1].text.rstrip():
                line.pop()
            if line and not line[-1].control:
                last = line[-1]
                line[-1] = Segment(last.text.rstrip(), last.style, last.control)
            yield from line
            yield Segment.line()


def table(
    layout: Layout, columns: Sequence[str], rows: Sequence[Sequence[str]], flexible: Sequence[str]
) -> Trimmed:
    """A borderless table whose cells are cut (``…``) so that it fits ``layout``; the columns
    named in ``flexible`` (long free text: reasons, parameters) give way first."""
    natural = [
        max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)
    ]  # fmt: skip
    widths = fit_widths(natural, [c in flexible for c in columns], layout.width)
    result = Table(box=None, header_style="bold", pad_edge=False, padding=(0, GAP // 2))
    for name, w in zip(columns, widths, strict=True):
        result.add_column(layout.clip(name, w), no_wrap=True, overflow="ellipsis", max_width=w)
    for r in rows:
        result.add_row(*(layout.clip(cell, w) for cell, w in zip(r, widths, strict=True)))
    return Trimmed(result)
