"""Task logs of a run: pages of lines (:mod:`argosy.service.logs`), and a live
Server-Sent Events stream of its lines and task states.

Any instance serves live logs within seconds: the instance running an attempt reads its live
file, the others its log record (copied every few seconds while it runs). The stream sends
each line as ``event: line`` with the page cursor after it as its ``id`` (a reconnecting
client sends it back as ``Last-Event-ID``), each task's state as ``event: task`` (a
:class:`~argosy.api.TaskEvent`: node path, state, attempt, reason; every task when the stream
starts, then each change) and the run's status as ``event: run`` (at the start and at each
change), a comment every 10 s to keep proxies from closing an idle stream, and ``event: end``
once the run is done and every line and state has been sent. ``events`` picks what is sent
(``line``, ``task`` or both; default both): the web UI's graph asks for ``task`` only.
Task and run events carry no ``id``: a reconnecting stream sends every task's state again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Header, Query
from fastapi.responses import StreamingResponse

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import RunIdPath, service_context, tenant_router
from argosy.service import events as task_events
from argosy.service import logs
from argosy.states import RUN_DONE

router = tenant_router("logs")
log = logging.getLogger("argosy.server")

POLL_S = 0.5
HEARTBEAT_S = 10.0
MAX_POLL_FAILURES = 20  # consecutive failed polls (about 10 s) before the stream is closed

NodeQuery = Annotated[
    str | None,
    Query(
        max_length=512,
        description="only this node path's lines (e.g. `train`; a mapped node: every iteration)",
    ),
]
LogCursorQuery = Annotated[
    str | None,
    Query(max_length=100_000, description="``cursor`` of the previous page (omit: from the start)"),
]
AttemptQuery = Annotated[int | None, Query(ge=1, description="only this attempt number")]
EventsQuery = Annotated[
    str,
    Query(
        pattern=r"^(line|task)(,(line|task))?$",
        description="what to send: `line` (log lines), `task` (task states and the run's "
        "status), or `line,task`",
    ),
]


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
    attempt: AttemptQuery = None,
    cursor: LogCursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="lines at most")] = 1000,
) -> api.LogPage:
    """Lines in time order after ``cursor``; ``finished`` says the run is done and this page
    holds its last lines."""
    return logs.read(
        service_context(context, tenant, principal), run_id, node=node, attempt=attempt,
        cursor=cursor, limit=limit,
    )  # fmt: skip


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
            "`event: task` (data: a TaskEvent) per task state change; `event: run` (data: "
            '`{"status"}`) per run status change; `event: end` when the run is done; a comment '
            "every 10 s",
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
    attempt: AttemptQuery = None,
    cursor: LogCursorQuery = None,
    events: EventsQuery = "line,task",
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=100_000, description="resume after this event"),
    ] = None,
) -> StreamingResponse:
    """Lines and task states as they change, until the run ends."""
    ctx = service_context(context, tenant, principal)
    start = last_event_id or cursor
    logs.decode_cursor(start)  # a 422 and a 404 before the stream starts
    resolved = logs.resolve(ctx, run_id, node)
    wanted = set(events.split(","))

    def page(after: str | None) -> api.LogPage:
        return logs.read(ctx, resolved, node=node, attempt=attempt, cursor=after)

    def states() -> api.RunState:
        return task_events.run_state(ctx, resolved)

    async def stream() -> AsyncIterator[str]:
        state = start
        last_sent = time.monotonic()
        failures = 0
        seen: dict[str, api.TaskEvent] = {}
        status: str | None = None
        yield "retry: 2000\n\n"
        while True:
            try:
                now = await anyio.to_thread.run_sync(states) if "task" in wanted else None
                found = await anyio.to_thread.run_sync(page, state) if "line" in wanted else None
                failures = 0
            except Exception as exc:  # the database or store is away: keep trying a while
                failures += 1
                log.warning("log stream of run %s: %s", resolved, exc)
                if failures >= MAX_POLL_FAILURES:
                    return  # the client reconnects with Last-Event-ID
                await anyio.sleep(POLL_S)
                continue
            if now is not None:
                for changed in task_events.changes(seen, now):
                    seen[changed.node_path] = changed
                    yield _event("task", changed.model_dump_json())
                    last_sent = time.monotonic()
                if now.status != status:
                    status = now.status
                    yield _event("run", json.dumps({"status": status}))
            if found is not None:
                for i, line in enumerate(found.items, 1):  # the page's last line: its cursor
                    last = i == len(found.items)
                    yield _event("line", line.model_dump_json(), found.cursor if last else None)
                    last_sent = time.monotonic()
                state = found.cursor
                if found.finished:
                    if now is not None and now.status not in RUN_DONE:
                        continue  # read the final task states before the end
                    yield _event("end", json.dumps({"status": found.status}), state)
                    return
                if len(found.items) >= logs.PAGE_LINES:
                    continue  # more waiting: no pause
            elif now is not None and now.status in RUN_DONE:
                yield _event("end", json.dumps({"status": now.status}))
                return
            if time.monotonic() - last_sent >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await anyio.sleep(POLL_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
