"""The API's routes, one module per resource, and what they share: cursor pagination and
the conversion of table rows into API documents (``argosy.api``).

Pagination is keyset pagination on the row id (ULIDs sort by creation time): a page holds
the ``limit`` newest rows older than the cursor, and ``next_cursor`` is an opaque token for
the last row returned (``None`` on the last page). Keyset pages stay fast at any depth and
never skip or repeat a row when rows are added meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from argosy import api
from argosy.server.problems import ApiProblem
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import (
    Artifact,
    Attempt,
    Pipeline,
    PipelineVersion,
    Run,
    Schedule,
    Task,
)

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

LimitQuery = Annotated[
    int, Query(ge=1, le=200, description="page size: how many items at most (1-200)")
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=200, description="``next_cursor`` of the previous page (omit for the first)"),
]


def tenant_router(tag: str) -> APIRouter:
    """A router for a tenant-scoped resource. Each of its routes declares its action with
    ``principal: Annotated[Principal, Allowed(Action.X)]`` (see ``server.identity``)."""
    return APIRouter(prefix=f"{api.API_PREFIX}/tenants/{{tenant}}", tags=[tag])


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The row id a cursor stands for; a 422 problem for anything this API did not hand out."""
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        value = ""
    if not _ULID.match(value):
        raise ApiProblem(
            422,
            f"invalid cursor {cursor!r}; pass the next_cursor of the previous page unchanged, "
            "or omit cursor for the first page",
            code="invalid_cursor",
        )
    return value


def paged(rows: Sequence[Any], limit: int) -> tuple[list[Any], str | None]:
    """Rows fetched with ``limit + 1`` -> (this page's rows, the next page's cursor or None)."""
    kept = list(rows[:limit])
    more = len(rows) > limit and bool(kept)
    return kept, encode_cursor(kept[-1].id) if more else None


def utc(value: datetime | None) -> datetime | None:
    return q.as_utc(value)


def must_utc(value: datetime) -> datetime:
    found = q.as_utc(value)
    assert found is not None
    return found


# -- documents --------------------------------------------------------------------------------
def version_documents(
    session: Session, versions: Sequence[PipelineVersion], pipeline_names: dict[str, str]
) -> list[api.PipelineVersion]:
    tags = q.version_tags(session, [v.id for v in versions])
    return [
        api.PipelineVersion(
            id=v.id,
            pipeline=pipeline_names[v.pipeline_id],
            digest=v.digest,
            tags=tags[v.id],
            created_at=must_utc(v.created_at),
            created_by=v.created_by,
        )
        for v in versions
    ]


def spec_document(version: PipelineVersion) -> dict[str, Any]:
    """The stored spec with its provenance (as ``argosy compile`` wrote it)."""
    doc = dict(version.spec)
    if version.provenance:
        doc["provenance"] = version.provenance
    return doc


def run_documents(session: Session, runs: Sequence[Run]) -> list[api.Run]:
    """API documents of runs (pipeline names, digests and schedule names in three queries)."""
    if not runs:
        return []
    names = dict(
        session.execute(
            select(Pipeline.id, Pipeline.name).where(Pipeline.id.in_({r.pipeline_id for r in runs}))
        )
        .tuples()
        .all()
    )
    digests = dict(
        session.execute(
            select(PipelineVersion.id, PipelineVersion.digest).where(
                PipelineVersion.id.in_({r.pipeline_version_id for r in runs})
            )
        )
        .tuples()
        .all()
    )
    schedule_ids = {r.schedule_id for r in runs if r.schedule_id}
    schedules = (
        dict(
            session.execute(select(Schedule.id, Schedule.name).where(Schedule.id.in_(schedule_ids)))
            .tuples()
            .all()
        )
        if schedule_ids
        else {}
    )
    return [
        api.Run(
            id=r.id,
            pipeline=names.get(r.pipeline_id, ""),
            pipeline_version_id=r.pipeline_version_id,
            digest=digests.get(r.pipeline_version_id, ""),
            status=r.status,  # type: ignore[arg-type]
            parameters=r.parameters or {},
            created_at=must_utc(r.created_at),
            created_by=r.created_by,
            started_at=utc(r.started_at),
            finished_at=utc(r.finished_at),
            error=r.error,
            cancel_requested=bool(r.cancel_requested),
            retry_of=r.retry_of,
            schedule=schedules.get(r.schedule_id) if r.schedule_id else None,
            outputs=r.outputs or {},
        )
        for r in runs
    ]


def run_document(session: Session, run: Run) -> api.Run:
    return run_documents(session, [run])[0]


def attempt_document(a: Attempt) -> api.Attempt:
    return api.Attempt(
        id=a.id, number=a.number, state=a.state, reason=a.reason, cause=a.cause, error=a.error,
        host=a.host, started_at=utc(a.started_at), finished_at=utc(a.finished_at),
        exit_code=a.exit_code, wall_time=a.wall_time, peak_memory=a.peak_memory,
    )  # fmt: skip


def task_documents(tasks: Sequence[Task], attempts: Sequence[Attempt]) -> list[api.Task]:
    by_task: dict[str, list[api.Attempt]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(attempt_document(a))
    return [
        api.Task(
            id=t.id,
            node_path=t.node_path,
            step=t.step_name,
            state=t.state,
            reason=t.reason,
            cache=t.cache,
            queued_at=utc(t.queued_at),
            started_at=utc(t.started_at),
            finished_at=utc(t.finished_at),
            attempts=by_task.get(t.id, []),
        )
        for t in tasks
    ]


INLINE_VALUE_BYTES = 64 * 1024  # small JSON values are shown in artifact documents


def artifact_document(a: Artifact, store: ArtifactStore | None = None) -> api.Artifact:
    """An artifact's document; a small JSON value is included (from the row, or, when the
    tenant's artifacts are encrypted and nothing is kept inline, from its blob)."""
    value = a.value.get("json") if a.value else None
    if value is None and store is not None and a.format == "json" and a.size <= INLINE_VALUE_BYTES:
        value = json.loads(store.read_blob(a.sha256))
    return api.Artifact(
        id=a.id, run_id=a.run_id, node_path=a.node_path, output_name=a.output_name, type=a.type,
        format=a.format, sha256=a.sha256, size=a.size, created_at=must_utc(a.created_at),
        value=value,
    )  # fmt: skip


def schedule_document(s: Schedule, pipeline: str) -> api.Schedule:
    return api.Schedule(
        id=s.id, name=s.name, pipeline=pipeline, version=s.version, cron=s.cron,
        timezone=s.timezone, parameters=s.parameters or {},
        max_concurrent_runs=s.max_concurrent_runs, catch_up=s.catch_up,  # type: ignore[arg-type]
        catch_up_limit=s.catch_up_limit, paused=bool(s.paused), next_fire_at=utc(s.next_fire_at),
        last_fire_at=utc(s.last_fire_at), created_at=must_utc(s.created_at),
        created_by=s.created_by,
    )  # fmt: skip
