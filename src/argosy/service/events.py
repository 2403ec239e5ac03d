"""Task-state events: what a live view of a run (the web UI's graph, ``argosy logs --follow``)
needs to know, read cheaply and compared between two reads.

:func:`run_state` reads the run's status and every task's state, latest attempt number, reason
and cache outcome in two queries (no blob, no log is read), so a stream can poll it twice a
second for a 200-step run. :func:`changes` says which tasks differ from an earlier read; the
stream sends those as ``event: task`` (see :mod:`argosy.server.routes.logs`).
"""

from __future__ import annotations

from collections.abc import Mapping

from argosy import api
from argosy.service.context import ServiceContext
from argosy.service.documents import utc
from argosy.stores.metadata import runs as q

Seen = Mapping[str, api.TaskEvent]


def run_state(ctx: ServiceContext, ref: str) -> api.RunState:
    """The run's status and each task's state, in plan order (``NotFoundError`` for a run that
    is not the tenant's)."""
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, ref)
        tasks = [
            api.TaskEvent(
                node_path=t.node_path,
                state=t.state,
                attempt=t.attempt_count or 0,
                reason=t.reason,
                cache=(t.cache or {}).get("status"),
                started_at=utc(t.started_at),
                finished_at=utc(t.finished_at),
            )
            for t in q.tasks_of(session, run.id)
        ]
        return api.RunState(run_id=run.id, status=run.status, tasks=tasks)  # type: ignore[arg-type]


def _key(event: api.TaskEvent) -> tuple[object, ...]:
    return (event.state, event.attempt, event.reason, event.cache, event.started_at,
            event.finished_at)  # fmt: skip


def changes(seen: Seen, now: api.RunState) -> list[api.TaskEvent]:
    """The tasks of ``now`` that are new or changed since ``seen`` (node path -> last sent)."""
    return [t for t in now.tasks if t.node_path not in seen or _key(seen[t.node_path]) != _key(t)]
