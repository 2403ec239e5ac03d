"""Schedules: cron rules that create runs. This API stores them; the leading server
instance's scheduler fires them (``argosy.server.scheduler``) and records each slot as a
fire, exactly once.

On create, the cron expression and time zone are checked and ``next_fire_at`` is the first
slot after now (the server clock) in that zone, stored in UTC. Pausing stops firing; resuming
keeps ``next_fire_at`` as it was, so the scheduler applies the schedule's catch-up policy to
the slots missed while paused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.auth.policy import Action
from argosy.errors import NotFoundError
from argosy.ids import new_id
from argosy.ops.schedules import next_fire_after, validate_schedule
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses
from argosy.server.routes import (
    CursorQuery,
    LimitQuery,
    decode_cursor,
    must_utc,
    paged,
    schedule_document,
    tenant_router,
)
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Pipeline, Schedule, ScheduleFire

router = tenant_router("schedules")

ScheduleNamePath = Annotated[str, Path(pattern=api.NAME_PATTERN, description="the schedule's name")]


def _get(session: Session, tenant: str, name: str, *, lock: bool = False) -> Schedule:
    query = select(Schedule).where(Schedule.tenant == tenant, Schedule.name == name)
    if lock:
        query = query.with_for_update()
    found = session.scalar(query)
    if found is None:
        raise NotFoundError(
            f"no schedule {name!r} in tenant {tenant!r}; list them with "
            f"GET /api/v1/tenants/{tenant}/schedules"
        )
    return found


def _document(session: Session, schedule: Schedule) -> api.Schedule:
    pipeline = session.get_one(Pipeline, schedule.pipeline_id)
    return schedule_document(schedule, pipeline.name)


@router.post(
    "/schedules",
    response_model=api.Schedule,
    status_code=201,
    summary="Create a schedule",
    responses=problem_responses(404, 409, 422),
)
def create_schedule(
    body: api.ScheduleCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> api.Schedule:
    """A cron rule that runs ``pipeline`` (at ``version``, default: its newest at each fire)."""
    now = context.clock.now()
    validate_schedule(body.cron, body.timezone, now)  # UsageError -> 422 with the fix
    next_fire = next_fire_after(body.cron, body.timezone, now)
    try:
        with context.metadata.session() as session:
            pipeline = q.get_pipeline(session, tenant, body.pipeline)
            if body.version is not None:
                q.resolve_version(session, tenant, body.pipeline, body.version)
            if session.scalar(
                select(Schedule.id).where(Schedule.tenant == tenant, Schedule.name == body.name)
            ):
                raise _exists(body.name, tenant)
            row = Schedule(
                id=new_id(), tenant=tenant, name=body.name, pipeline_id=pipeline.id,
                version=body.version, cron=body.cron.strip(), timezone=body.timezone,
                parameters=body.parameters, max_concurrent_runs=body.max_concurrent_runs,
                catch_up=body.catch_up, catch_up_limit=body.catch_up_limit, paused=body.paused,
                next_fire_at=next_fire, last_fire_at=None, created_at=q.now(),
                created_by=principal.subject,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return schedule_document(row, pipeline.name)
    except DbIntegrityError:  # created at the same moment by someone else
        raise _exists(body.name, tenant) from None


def _exists(name: str, tenant: str) -> ApiProblem:
    return ApiProblem(
        409,
        f"schedule {name!r} already exists in tenant {tenant!r}; choose another name, or "
        f"delete it first (DELETE /api/v1/tenants/{tenant}/schedules/{name})",
        code="schedule_exists",
    )


@router.get(
    "/schedules",
    response_model=api.Page[api.Schedule],
    summary="List schedules",
    responses=problem_responses(),
)
def list_schedules(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.Schedule]:
    after = decode_cursor(cursor)
    with context.metadata.session() as session:
        query = select(Schedule, Pipeline.name).join(Pipeline, Pipeline.id == Schedule.pipeline_id)
        query = query.where(Schedule.tenant == tenant)
        if after is not None:
            query = query.where(Schedule.id < after)
        rows = session.execute(query.order_by(Schedule.id.desc()).limit(limit + 1)).tuples().all()
        more = len(rows) > limit
        kept = rows[:limit]
        items = [schedule_document(s, name) for s, name in kept]
        next_cursor = paged([s for s, _ in rows], limit)[1] if more else None
    return api.Page[api.Schedule](items=items, next_cursor=next_cursor)


@router.get(
    "/schedules/{name}",
    response_model=api.Schedule,
    summary="Get a schedule",
    responses=problem_responses(404),
)
def get_schedule(
    name: ScheduleNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
) -> api.Schedule:
    with context.metadata.session() as session:
        return _document(session, _get(session, tenant, name))


@router.post(
    "/schedules/{name}/pause",
    response_model=api.Schedule,
    summary="Pause a schedule",
    responses=problem_responses(404),
)
def pause_schedule(
    name: ScheduleNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> api.Schedule:
    """Stop firing (idempotent)."""
    with context.metadata.session() as session:
        row = _get(session, tenant, name, lock=True)
        row.paused = True
        session.flush()
        return _document(session, row)


@router.post(
    "/schedules/{name}/resume",
    response_model=api.Schedule,
    summary="Resume a schedule",
    responses=problem_responses(404),
)
def resume_schedule(
    name: ScheduleNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> api.Schedule:
    """Fire again (idempotent); slots missed while paused follow the catch-up policy."""
    with context.metadata.session() as session:
        row = _get(session, tenant, name, lock=True)
        row.paused = False
        if row.next_fire_at is None:
            row.next_fire_at = next_fire_after(row.cron, row.timezone, context.clock.now())
        session.flush()
        return _document(session, row)


@router.delete(
    "/schedules/{name}",
    status_code=204,
    summary="Delete a schedule",
    response_class=Response,
    responses=problem_responses(404),
)
def delete_schedule(
    name: ScheduleNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> Response:
    """Delete the schedule and its fire history (runs it created are kept)."""
    with context.metadata.session() as session:
        row = _get(session, tenant, name, lock=True)
        session.execute(delete(ScheduleFire).where(ScheduleFire.schedule_id == row.id))
        session.delete(row)
    return Response(status_code=204)


@router.get(
    "/schedules/{name}/fires",
    response_model=api.Page[api.ScheduleFire],
    summary="List a schedule's fires",
    responses=problem_responses(404),
)
def list_fires(
    name: ScheduleNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.ScheduleFire]:
    """The schedule's slots, newest first, and what each became."""
    after = decode_cursor(cursor)
    with context.metadata.session() as session:
        row = _get(session, tenant, name)
        query = select(ScheduleFire).where(
            ScheduleFire.schedule_id == row.id, ScheduleFire.tenant == tenant
        )
        if after is not None:
            query = query.where(ScheduleFire.id < after)
        rows = session.scalars(query.order_by(ScheduleFire.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        items = [
            api.ScheduleFire(
                fire_time=must_utc(f.fire_time),
                run_id=f.run_id,
                outcome=f.outcome,
                detail=f.detail,
            )
            for f in kept
        ]
    return api.Page[api.ScheduleFire](items=items, next_cursor=next_cursor)
