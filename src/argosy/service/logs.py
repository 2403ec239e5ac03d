"""Task logs of a run, read in pages that can be followed while the run goes on.

Every attempt's output is a JSON-lines log (``{"t": time, "s": stream, "m": line}``): in the
tenant's artifact store (its ``log_key`` record: complete once the attempt has finished,
copied every few seconds while it runs on a server), and in
``<attempts_dir>/<attempt id>/log.jsonl`` on the machine running it (read first: the
freshest). Lines of all attempts are merged in time order.

The cursor is opaque to callers: base64url JSON of ``{attempt id: lines already returned}``,
so asking again with it returns only lines written since (each attempt's own order kept).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Iterator
from typing import Any

from argosy import api
from argosy.errors import NotFoundError, UsageError
from argosy.service.context import ServiceContext
from argosy.states import RUN_DONE
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Attempt, Run, Task

PAGE_LINES = 1000


def encode_cursor(offsets: dict[str, int]) -> str:
    raw = json.dumps(offsets, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, int]:
    """Lines already returned per attempt; ``UsageError`` for a cursor this API did not make."""
    if not cursor:
        return {}
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise UsageError(
            f"invalid log cursor {cursor[:40]!r}; pass the cursor of the previous page unchanged, "
            "or omit it to read from the start",
            code="invalid_cursor",
        )
    return value


def attempt_lines(ctx: ServiceContext, attempt: Attempt) -> list[dict[str, Any]]:
    """An attempt's log entries: the live file when it runs on this machine, else its record."""
    live = ctx.attempts_dir / attempt.id / "log.jsonl"
    try:
        data = live.read_bytes()
    except OSError:
        stream = ctx.store.open_record(attempt.log_key) if attempt.log_key else None
        if stream is None:
            return []
        with stream:
            data = stream.read()
    entries = []
    for raw in data.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # a line being written right now
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _nodes(run: Run, tasks: dict[str, Task], node: str | None) -> set[str] | None:
    """The node paths whose lines are wanted: ``node`` and, for a fan-out, its iterations."""
    if node is None:
        return None
    paths = {t.node_path for t in tasks.values()}
    wanted = {p for p in paths if p == node or p.startswith((node + "[", node + "/"))}
    if not wanted:
        raise NotFoundError(
            f"run {run.id} has no node {node!r}; its nodes are: "
            + (", ".join(sorted(paths)) or "(none)")
        )
    return wanted


def resolve(ctx: ServiceContext, ref: str, node: str | None) -> str:
    """The run's id (a ``NotFoundError`` for an unknown run or node)."""
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, ref)
        _nodes(run, {t.id: t for t in q.tasks_of(session, run.id)}, node)
        return run.id


def read(
    ctx: ServiceContext,
    run_ref: str,
    *,
    node: str | None = None,
    attempt: int | None = None,
    cursor: str | None = None,
    limit: int = PAGE_LINES,
) -> api.LogPage:
    """Up to ``limit`` lines written after ``cursor``, merged across attempts in time order;
    ``node`` a node path (a mapped node: all its iterations), ``attempt`` one attempt number."""
    offsets = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, run_ref)
        tasks = {t.id: t for t in q.tasks_of(session, run.id)}
        wanted = _nodes(run, tasks, node)
        status = run.status
        attempts = [
            a
            for a in q.attempts_of(session, run.id)
            if (wanted is None or tasks[a.task_id].node_path in wanted)
            and (attempt is None or a.number == attempt)
        ]
    done = status in RUN_DONE  # read before the logs: a done run's logs are complete
    streams = []
    for a in attempts:
        start = offsets.get(a.id, 0)
        path = tasks[a.task_id].node_path
        entries = attempt_lines(ctx, a)[start:]
        streams.append(
            [
                (str(e.get("t", "")), a.id, start + i + 1, path, a.number, e)
                for i, e in enumerate(entries)
            ]
        )
    new_offsets = dict(offsets)
    lines: list[api.LogLine] = []
    remaining = False
    for time_text, attempt_id, offset, path, number, e in heapq.merge(*streams, key=lambda x: x[0]):
        if len(lines) >= limit:
            remaining = True
            break
        lines.append(
            api.LogLine(
                node_path=path,
                attempt=number,
                time=time_text,
                stream=str(e.get("s", "stdout")),
                line=str(e.get("m", "")),
            )
        )
        new_offsets[attempt_id] = offset
    return api.LogPage(
        items=lines,
        cursor=encode_cursor(new_offsets),
        finished=done and not remaining,
        status=status,  # type: ignore[arg-type]
    )


def read_all(
    ctx: ServiceContext, run_ref: str, *, node: str | None = None, attempt: int | None = None
) -> Iterator[api.LogLine]:
    """Every line written so far, page after page."""
    cursor: str | None = None
    while True:
        page = read(ctx, run_ref, node=node, attempt=attempt, cursor=cursor)
        yield from page.items
        if not page.items:
            return
        cursor = page.cursor
