"""Triggers (:mod:`argosy.service.triggers`): rules that run a pipeline on an event. They are
governed like schedules (``schedule.read``, ``schedule.write``).

``POST .../triggers/{name}/webhook`` takes no bearer token: the delivery is authenticated by
its HMAC signature with the tenant secret the trigger names (401 when it does not hold), is
acted on once per delivery id, and is in the audit log like every POST.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses
from argosy.server.routes import CursorQuery, LimitQuery, service_context, tenant_router
from argosy.service import triggers
from argosy.webhooks import SignatureError

router = tenant_router("triggers")

TriggerNamePath = Annotated[str, Path(pattern=api.NAME_PATTERN, description="the trigger's name")]
MAX_WEBHOOK_BYTES = 1024 * 1024


@router.post(
    "/triggers",
    response_model=api.Trigger,
    status_code=201,
    summary="Create a trigger",
    responses=problem_responses(404, 409, 422),
)
def create_trigger(
    body: api.TriggerCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> api.Trigger:
    """A rule that runs ``pipeline`` when a run succeeds, a webhook arrives or a model
    version is registered; events before now do not fire it."""
    return triggers.create_trigger(
        service_context(context, tenant, principal), body, context.clock.now()
    )


@router.get(
    "/triggers",
    response_model=api.Page[api.Trigger],
    summary="List triggers",
    responses=problem_responses(),
)
def list_triggers(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.Trigger]:
    return triggers.list_triggers(
        service_context(context, tenant, principal), limit=limit, cursor=cursor
    )


@router.get(
    "/triggers/{name}",
    response_model=api.Trigger,
    summary="Get a trigger",
    responses=problem_responses(404),
)
def get_trigger(
    name: TriggerNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
) -> api.Trigger:
    return triggers.get_trigger(service_context(context, tenant, principal), name)


@router.post(
    "/triggers/{name}/pause",
    response_model=api.Trigger,
    summary="Pause a trigger",
    responses=problem_responses(404),
)
def pause_trigger(
    name: TriggerNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> api.Trigger:
    """Act on no event (idempotent); webhook deliveries are refused with 409 meanwhile."""
    return triggers.set_paused(
        service_context(context, tenant, principal), name, True, context.clock.now()
    )


@router.post(
    "/triggers/{name}/resume",
    response_model=api.Trigger,
    summary="Resume a trigger",
    responses=problem_responses(404),
)
def resume_trigger(
    name: TriggerNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> api.Trigger:
    """Act on events again (idempotent); events from while it was paused never fire it."""
    return triggers.set_paused(
        service_context(context, tenant, principal), name, False, context.clock.now()
    )


@router.delete(
    "/triggers/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete a trigger",
    responses=problem_responses(404),
)
def delete_trigger(
    name: TriggerNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_WRITE)],
    context: ContextDep,
) -> Response:
    triggers.delete_trigger(service_context(context, tenant, principal), name)
    return Response(status_code=204)


@router.get(
    "/triggers/{name}/fires",
    response_model=api.Page[api.TriggerFire],
    summary="List a trigger's fires",
    responses=problem_responses(404),
)
def list_fires(
    name: TriggerNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SCHEDULE_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.TriggerFire]:
    """The events the trigger acted on, newest first, and the run each started."""
    return triggers.list_fires(
        service_context(context, tenant, principal), name, limit=limit, cursor=cursor
    )


@router.post(
    "/triggers/{name}/webhook",
    response_model=api.TriggerFire,
    status_code=201,
    summary="Deliver a signed webhook to a trigger",
    responses={
        200: {"model": api.TriggerFire, "description": "a delivery acted on before (replayed)"},
        **problem_responses(401, 404, 409, 413, 422),
    },
)
async def webhook(
    name: TriggerNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PUBLIC)],
    context: ContextDep,
    request: Request,
    response: Response,
) -> api.TriggerFire:
    """Start the trigger's run for this delivery (201), or answer the run of the same delivery
    id started before (200). The body is JSON (its fields bind parameters)."""
    from starlette.concurrency import run_in_threadpool

    from argosy.stores.secrets import TenantSecrets

    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ApiProblem(413, f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes")
    headers = {k.lower(): v for k, v in request.headers.items()}

    def secret_of(secret: str) -> str | None:
        found = TenantSecrets(context.metadata, context.tenant_keys()).open(tenant, [secret])
        return found.get(secret)

    try:
        fired = await run_in_threadpool(
            triggers.webhook, service_context(context, tenant, principal), name, body, headers,
            secret_of,
        )  # fmt: skip
    except SignatureError as exc:
        raise ApiProblem(
            401, str(exc), code=exc.code, headers={"WWW-Authenticate": 'Signature realm="argosy"'}
        ) from None
    response.status_code = 200 if fired.replayed else 201
    return fired
