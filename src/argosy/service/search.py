"""Searching a tenant's task logs (:mod:`argosy.stores.logindex` holds the index).

:func:`index_pending` puts the logs of the tenant's ended attempts that are not indexed yet
into the index (a search calls it first, with a bound, so what just ended is found; the
server's lifecycle job calls it for every tenant). :func:`search_logs` answers a page of
matching lines, newest first, each with its run, pipeline, node, step and attempt.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from sqlalchemy import delete, exists, select

from argosy.api import ops as api_ops
from argosy.errors import UsageError
from argosy.executors.logcap import TRUNCATED_KEY
from argosy.service.context import ServiceContext
from argosy.service.logs import attempt_lines
from argosy.states import AttemptState
from argosy.stores.logindex import AttemptSource, Filters, LogIndex, log_index_for
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Attempt, LogIndexMark, Pipeline, Run, Task

INDEX_BATCH = 500  # attempts a search indexes at most before it looks
PAGE = 50


def _index(ctx: ServiceContext) -> LogIndex:
    index = log_index_for(ctx.metadata.engine)
    if index.created:  # a new, empty index: every attempt must be indexed again
        with ctx.metadata.session() as s:
            s.execute(delete(LogIndexMark))
        index.created = False
    return index


def index_pending(ctx: ServiceContext, *, limit: int = INDEX_BATCH) -> int:
    """Index up to ``limit`` ended attempts of the tenant whose logs are not indexed yet."""
    index = _index(ctx)
    with ctx.metadata.session() as s:
        rows = s.execute(
            select(Attempt, Task.node_path, Task.step_name, Pipeline.name)
            .join(Task, Task.id == Attempt.task_id)
            .join(Run, Run.id == Attempt.run_id)
            .join(Pipeline, Pipeline.id == Run.pipeline_id)
            .where(
                Attempt.tenant == ctx.tenant,
                Attempt.state != AttemptState.RUNNING,
                ~exists().where(LogIndexMark.attempt_id == Attempt.id),
            )
            .order_by(Attempt.id)
            .limit(limit)
        ).all()
    done = 0
    for attempt, node_path, step_name, pipeline in rows:
        entries = attempt_lines(ctx, attempt)
        source = AttemptSource(
            ctx.tenant, attempt.run_id, pipeline, node_path, step_name, attempt.id, attempt.number
        )
        count = index.replace(source, entries)
        truncated = any(TRUNCATED_KEY in e for e in entries)
        with ctx.metadata.session() as s:
            s.merge(
                LogIndexMark(
                    attempt_id=attempt.id, tenant=ctx.tenant, run_id=attempt.run_id, lines=count,
                    truncated=truncated, indexed_at=datetime.now(UTC),
                )
            )  # fmt: skip
        done += 1
    return done


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"L{last_id}".encode()).decode().rstrip("=")


def _decode(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith("L") and text[1:].isdigit():
            return int(text[1:])
    except (binascii.Error, ValueError):
        pass
    raise UsageError(
        f"invalid search cursor {cursor[:40]!r}; pass next_cursor of the previous page "
        "unchanged, or omit it for the newest lines",
        code="invalid_cursor",
    )


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (
        value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    ).isoformat()


def search_logs(
    ctx: ServiceContext,
    query: str,
    *,
    run: str | None = None,
    pipeline: str | None = None,
    step: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    stream: str | None = None,
    cursor: str | None = None,
    limit: int = PAGE,
) -> api_ops.LogSearchPage:
    """Lines of the tenant's task logs holding every word of ``query``, newest first."""
    before = _decode(cursor)
    if stream is not None and stream not in ("out", "err"):
        raise UsageError(f"unknown stream {stream!r}; use out or err", code="bad_query")
    run_ids = None
    if run is not None:
        with ctx.metadata.session() as s:
            run_ids = [q.get_run(s, ctx.tenant, run).id]
    indexed = index_pending(ctx)
    index = _index(ctx)
    filters = Filters(
        run_ids=run_ids, pipeline=pipeline, step=step, since=_iso(since), until=_iso(until),
        stream=stream,
    )  # fmt: skip
    found = index.search(ctx.tenant, query, filters, before=before, limit=limit + 1)
    page = found[:limit]
    return api_ops.LogSearchPage(
        items=[
            api_ops.LogHit(
                run_id=h.run_id,
                pipeline=h.pipeline,
                node_path=h.node_path,
                step_name=h.step_name,
                attempt=h.attempt,
                attempt_id=h.attempt_id,
                line_number=h.n,
                time=h.t,
                stream=h.stream,
                line=h.message,
            )
            for h in page
        ],
        next_cursor=_cursor(page[-1].id) if len(found) > limit and page else None,
        query=query,
        indexed_attempts=indexed,
    )


def forget_runs(ctx: ServiceContext, run_ids: list[str]) -> None:
    """Drop deleted runs' lines and marks from the index."""
    if not run_ids:
        return
    _index(ctx).delete_runs(ctx.tenant, run_ids)
    with ctx.metadata.session() as s:
        s.execute(delete(LogIndexMark).where(LogIndexMark.run_id.in_(run_ids)))
