"""Task logs of a run: pages of lines, and a live Server-Sent Events stream.

Every attempt's output is a JSON-lines log (``{"t": time, "s": stream, "m": line}``): in the
tenant's artifact store (its ``log_key`` record: complete once the attempt has finished,
copied every few seconds while it runs), and in ``<home>/attempts/<attempt id>/log.jsonl`` on
the instance running it (read first: the freshest). So any instance serves live logs, within
seconds. Lines of all attempts are merged in time order.

The cursor is opaque to clients: base64url JSON of ``{attempt id: lines already returned}``,
so asking again with it returns only lines written since (the attempt's own order is kept).
The stream sends each line as ``event: line`` with that cursor as its ``id`` (a reconnecting
client sends it back as ``Last-Event-ID``), a comment every 10 s to keep proxies from closing
an idle stream, and ``event: end`` once the run is done and every line has been sent.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Header, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from argosy import api
from argosy.auth.policy import Action
from argosy.errors import NotFoundError
from argosy.server.context import ServerContext
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses
from argosy.server.routes import tenant_router
from argosy.server.routes.runs import RunIdPath
from argosy.states import RUN_DONE
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Attempt, Run, Task

router = tenant_router("logs")
log = logging.getLogger("argosy.server")

POLL_S = 0.5
HEARTBEAT_S = 10.0
MAX_POLL_FAILURES = 20  # consecutive failed polls (about 10 s) before the stream is closed

NodeQuery = Annotated[
    str | None, Query(max_length=512, description="only this node path's lines (e.g. `train`)")
]
LogCursorQuery = Annotated[
    str | None,
    Query(max_length=100_000, description="``cursor`` of the previous page (omit: from the start)"),
]


def encode_log_cursor(offsets: dict[str, int]) -> str:
    raw = json.dumps(offsets, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_log_cursor(cursor: str | None) -> dict[str, int]:
    """Lines already returned per attempt; a 422 problem for a cursor this API did not make."""
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
        raise ApiProblem(
            422,
            f"invalid log cursor {cursor[:40]!r}; pass the cursor of the previous page unchanged, "
            "or omit it to read from the start",
            code="invalid_cursor",
        )
    return value


def attempt_lines(context: ServerContext, tenant: str, attempt: Attempt) -> list[dict[str, Any]]:
    """An attempt's log entries: the live file when the attempt runs on this host (freshest),
    else its log record (complete once the attempt ended; copied every few seconds while it
    runs on another instance)."""
    live = context.settings.attempts_dir / attempt.id / "log.jsonl"
    try:
        data = live.read_bytes()
    except OSError:
        stream = context.store(tenant).open_record(attempt.log_key) if attempt.log_key else None
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


def _resolve(
    session: Session, tenant: str, run_id: str, node: str | None
) -> tuple[Run, dict[str, Task]]:
    """The run and its tasks by id; a 404 for an unknown run or node."""
    run = q.get_run(session, tenant, run_id)
    tasks = {t.id: t for t in q.tasks_of(session, run.id)}
    if node is not None and node not in {t.node_path for t in tasks.values()}:
        raise NotFoundError(
            f"run {run.id} has no node {node!r}; its nodes are: "
            + (", ".join(sorted(t.node_path for t in tasks.values())) or "(none)")
        )
    return run, tasks


@dataclass
class Collected:
    lines: list[tuple[api.LogLine, str, int]]  # (line, attempt id, its offset after the line)
    offsets: dict[str, int]
    finished: bool
    status: str


def collect(
    context: ServerContext,
    tenant: str,
    run_id: str,
    node: str | None,
    offsets: dict[str, int],
    limit: int,
) -> Collected:
    """Up to ``limit`` lines after ``offsets``, merged across attempts in time order."""
    with context.metadata.session() as session:
        run, tasks = _resolve(session, tenant, run_id, node)
        status = run.status
        attempts = [
            a
            for a in q.attempts_of(session, run.id)
            if node is None or tasks[a.task_id].node_path == node
        ]
    done = status in RUN_DONE  # read before the logs: a done run's logs are complete
    streams = []
    for a in attempts:
        start = offsets.get(a.id, 0)
        entries = attempt_lines(context, tenant, a)[start:]
        path = tasks[a.task_id].node_path
        streams.append(
            [
                (str(e.get("t", "")), a.id, start + i + 1, path, a.number, e)
                for i, e in enumerate(entries)
            ]
        )
    merged = heapq.merge(*streams, key=lambda item: item[0])  # keeps each attempt's order
    new_offsets = dict(offsets)
    lines: list[tuple[api.LogLine, str, int]] = []
    remaining = False
    for time_text, attempt_id, offset, path, number, e in merged:
        if len(lines) >= limit:
            remaining = True
            break
        line = api.LogLine(
            node_path=path, attempt=number, time=time_text, stream=str(e.get("s", "stdout")),
            line=str(e.get("m", "")),
        )  # fmt: skip
        lines.append((line, attempt_id, offset))
        new_offsets[attempt_id] = offset
    return Collected(lines, new_offsets, done and not remaining, status)


@router.get(
    "/runs/{run_id}/logs",
    response_model=api.LogPage,
    summary="Read a run's log lines",
    responses=problem_responses(404),
)
def get_logs(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.LOG_READ)],
    context: ContextDep,
    node: NodeQuery = None,
    cursor: LogCursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="lines at most")] = 1000,
) -> api.LogPage:
    """Lines in time order after ``cursor``; ``finished`` says the run is done and this page
    holds its last lines."""
    found = collect(context, tenant, run_id, node, decode_log_cursor(cursor), limit)
    return api.LogPage(
        items=[line for line, _, _ in found.lines],
        cursor=encode_log_cursor(found.offsets),
        finished=found.finished,
    )


def _event(name: str, data: str, event_id: str | None = None) -> str:
    head = f"event: {name}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return head + "".join(f"data: {part}\n" for part in data.split("\n")) + "\n"


@router.get(
    "/runs/{run_id}/logs/stream",
    summary="Follow a run's log lines (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: line` (data: a LogLine) per line, `id` the cursor after it; "
            "`event: end` when the run is done; a comment every 10 s",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
)
def stream_logs(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.LOG_READ)],
    context: ContextDep,
    node: NodeQuery = None,
    cursor: LogCursorQuery = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=100_000, description="resume after this event"),
    ] = None,
) -> StreamingResponse:
    """Lines as they are written, until the run ends."""
    offsets = decode_log_cursor(last_event_id or cursor)
    with context.metadata.session() as session:  # a 404 before the stream starts
        resolved = _resolve(session, tenant, run_id, node)[0].id

    async def events() -> AsyncIterator[str]:
        state = dict(offsets)
        last_sent = time.monotonic()
        failures = 0
        yield "retry: 2000\n\n"
        while True:
            try:
                found = await anyio.to_thread.run_sync(
                    collect, context, tenant, resolved, node, state, 1000
                )
                failures = 0
            except Exception as exc:  # the database or store is away: keep trying a while
                failures += 1
                log.warning("log stream of run %s: %s", resolved, exc)
                if failures >= MAX_POLL_FAILURES:
                    return  # the client reconnects with Last-Event-ID
                await anyio.sleep(POLL_S)
                continue
            for line, attempt_id, offset in found.lines:
                state[attempt_id] = offset
                yield _event("line", line.model_dump_json(), encode_log_cursor(state))
                last_sent = time.monotonic()
            if found.finished:
                yield _event("end", json.dumps({"status": found.status}), encode_log_cursor(state))
                return
            if found.lines and len(found.lines) >= 1000:
                continue  # more waiting: no pause
            if time.monotonic() - last_sent >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await anyio.sleep(POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
