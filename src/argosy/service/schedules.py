"""Schedules: cron rules that create runs. Stored here; the leading server instance's
scheduler fires them (``argosy.server.scheduler``) and records each slot as a fire, once.

On create, the cron expression and time zone are checked and ``next_fire_at`` is the first
slot after ``now`` in that zone, stored in UTC. Pausing stops firing; resuming keeps
``next_fire_at`` as it was, so the scheduler applies the schedule's catch-up policy to the
slots missed while paused.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.errors import ConflictError, NotFoundError
from argosy.ids import new_id
from argosy.ops.schedules import next_fire_after, validate_schedule
from argosy.service.context import ServiceContext
from argosy.service.documents import must_utc, schedule_document
from argosy.service.paging import decode_cursor, paged
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Pipeline, Schedule, ScheduleFire


def _get(session: Session, tenant: str, name: str, *, lock: bool = False) -> Schedule:
    query = select(Schedule).where(Schedule.tenant == tenant, Schedule.name == name)
    if lock:
        query = query.with_for_update()
    found: Schedule | None = session.scalar(query)
    if found is None:
        raise NotFoundError(
            f"no schedule {name!r} in tenant {tenant!r}; list them with 'argosy schedules list'"
        )
    return found


def _document(session: Session, schedule: Schedule) -> api.Schedule:
    return schedule_document(schedule, session.get_one(Pipeline, schedule.pipeline_id).name)


def _exists(name: str, tenant: str) -> ConflictError:
    return ConflictError(
        f"schedule {name!r} already exists in tenant {tenant!r}; choose another name, or "
        f"delete it first ('argosy schedules delete {name}')",
        code="schedule_exists",
    )


def create_schedule(ctx: ServiceContext, body: api.ScheduleCreate, now: datetime) -> api.Schedule:
    """A cron rule that runs ``pipeline`` (at ``version``, default: its newest at each fire)."""
    validate_schedule(body.cron, body.timezone, now)  # UsageError with the fix
    next_fire = next_fire_after(body.cron, body.timezone, now)
    try:
        with ctx.metadata.session() as session:
            pipeline = q.get_pipeline(session, ctx.tenant, body.pipeline)
            if body.version is not None:
                q.resolve_version(session, ctx.tenant, body.pipeline, body.version)
            taken = select(Schedule.id).where(
                Schedule.tenant == ctx.tenant, Schedule.name == body.name
            )
            if session.scalar(taken):
                raise _exists(body.name, ctx.tenant)
            row = Schedule(
                id=new_id(),
                tenant=ctx.tenant,
                name=body.name,
                pipeline_id=pipeline.id,
                version=body.version,
                cron=body.cron.strip(),
                timezone=body.timezone,
                parameters=body.parameters,
                max_concurrent_runs=body.max_concurrent_runs,
                catch_up=body.catch_up,
                catch_up_limit=body.catch_up_limit,
                paused=body.paused,
                next_fire_at=next_fire,
                last_fire_at=None,
                created_at=q.now(),
                created_by=ctx.actor,
            )
            session.add(row)
            session.flush()
            return schedule_document(row, pipeline.name)
    except DbIntegrityError:  # created at the same moment by someone else
        raise _exists(body.name, ctx.tenant) from None


def list_schedules(
    ctx: ServiceContext, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.Schedule]:
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        query = select(Schedule, Pipeline.name).join(Pipeline, Pipeline.id == Schedule.pipeline_id)
        query = query.where(Schedule.tenant == ctx.tenant)
        if after is not None:
            query = query.where(Schedule.id < after)
        rows = [
            (s, name)
            for s, name in session.execute(query.order_by(Schedule.id.desc()).limit(limit + 1))
        ]
        _, next_cursor = paged([s for s, _ in rows], limit)
        items = [schedule_document(s, name) for s, name in rows[:limit]]
    return api.Page[api.Schedule](items=items, next_cursor=next_cursor)


def get_schedule(ctx: ServiceContext, name: str) -> api.Schedule:
    with ctx.metadata.session() as session:
        return _document(session, _get(session, ctx.tenant, name))


def set_paused(ctx: ServiceContext, name: str, paused: bool, now: datetime) -> api.Schedule:
    """Pause (stop firing) or resume (slots missed meanwhile follow the catch-up policy);
    idempotent."""
    with ctx.metadata.session() as session:
        row = _get(session, ctx.tenant, name, lock=True)
        row.paused = paused
        if not paused and row.next_fire_at is None:
            row.next_fire_at = next_fire_after(row.cron, row.timezone, now)
        session.flush()
        return _document(session, row)


def delete_schedule(ctx: ServiceContext, name: str) -> None:
    """Delete the schedule and its fire history (runs it created are kept)."""
    with ctx.metadata.session() as session:
        row = _get(session, ctx.tenant, name, lock=True)
        session.execute(delete(ScheduleFire).where(ScheduleFire.schedule_id == row.id))
        session.delete(row)


def list_fires(
    ctx: ServiceContext, name: str, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.ScheduleFire]:
    """The schedule's slots, newest first, and what each became."""
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        row = _get(session, ctx.tenant, name)
        query = select(ScheduleFire).where(
            ScheduleFire.schedule_id == row.id, ScheduleFire.tenant == ctx.tenant
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
