"""Schedules: cron rules that create runs (:mod:`argosy.service.schedules`); the leading
server instance's scheduler fires them (``argosy.server.scheduler``), each slot exactly once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import CursorQuery, LimitQuery, service_context, tenant_router
from argosy.service import schedules

router = tenant_router("schedules")

ScheduleNamePath = Annotated[str, Path(pattern=api.NAME_PATTERN, description="the schedule's name")]


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
    return schedules.create_schedule(
        service_context(context, tenant, principal), body, context.clock.now()
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
    return schedules.list_schedules(
        service_context(context, tenant, principal), limit=limit, cursor=cursor
    )


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
    return schedules.get_schedule(service_context(context, tenant, principal), name)


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
    return schedules.set_paused(
        service_context(context, tenant, principal), name, True, context.clock.now()
    )


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
    return schedules.set_paused(
        service_context(context, tenant, principal), name, False, context.clock.now()
    )


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
    schedules.delete_schedule(service_context(context, tenant, principal), name)
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
    return schedules.list_fires(
        service_context(context, tenant, principal), name, limit=limit, cursor=cursor
    )
