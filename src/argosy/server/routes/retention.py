"""Retention of a tenant: its policy, legal holds, retrieval requests of archived data and
their decisions (:mod:`argosy.service.retention`); running the lifecycle job now (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from argosy.api import API_PREFIX
from argosy.api import ops as api_ops
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import service_context, tenant_router
from argosy.service import retention

router = tenant_router("retention")
platform_router = APIRouter(prefix=API_PREFIX, tags=["retention"])
IdPath = Annotated[str, Path(min_length=26, max_length=26, pattern=r"^[0-9A-Z]+$")]


@router.get(
    "/retention", response_model=api_ops.RetentionPolicy, summary="Retention policy",
    responses=problem_responses(),
)  # fmt: skip
def get_policy(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_READ)],
    context: ContextDep,
) -> api_ops.RetentionPolicy:
    return retention.get_policy(service_context(context, tenant, principal), context.settings)


@router.put(
    "/retention", response_model=api_ops.RetentionPolicy, summary="Set the retention policy",
    responses=problem_responses(422),
)  # fmt: skip
def set_policy(
    body: api_ops.RetentionPolicyUpdate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.LEGAL_HOLD_WRITE)],
    context: ContextDep,
) -> api_ops.RetentionPolicy:
    """The fields given replace the tenant's (``null``: never)."""
    return retention.set_policy(service_context(context, tenant, principal), body, context.settings)


@router.get(
    "/holds", response_model=list[api_ops.LegalHold], summary="Legal holds",
    responses=problem_responses(),
)  # fmt: skip
def list_holds(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_READ)],
    context: ContextDep,
) -> list[api_ops.LegalHold]:
    return retention.list_holds(service_context(context, tenant, principal))


@router.post(
    "/holds", response_model=api_ops.LegalHold, status_code=201, summary="Place a legal hold",
    responses=problem_responses(404, 422),
)  # fmt: skip
def place_hold(
    body: api_ops.LegalHoldCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.LEGAL_HOLD_WRITE)],
    context: ContextDep,
) -> api_ops.LegalHold:
    """A run or artifact held is never archived or deleted until the hold is released."""
    return retention.place_hold(
        service_context(context, tenant, principal), body, context.clock.now()
    )


@router.post(
    "/holds/{hold_id}/release", response_model=api_ops.LegalHold, summary="Release a hold",
    responses=problem_responses(404),
)  # fmt: skip
def release_hold(
    hold_id: IdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.LEGAL_HOLD_WRITE)],
    context: ContextDep,
) -> api_ops.LegalHold:
    return retention.release_hold(
        service_context(context, tenant, principal), hold_id, context.clock.now()
    )


@router.post(
    "/retrievals", response_model=api_ops.Retrieval, status_code=201,
    summary="Ask for archived data back", responses=problem_responses(404, 409, 422),
)  # fmt: skip
def request_retrieval(
    body: api_ops.RetrievalCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RETRIEVAL_REQUEST)],
    context: ContextDep,
) -> api_ops.Retrieval:
    """A pending request a tenant owner other than the requester decides."""
    return retention.request_retrieval(
        service_context(context, tenant, principal), body, context.clock.now()
    )


@router.get(
    "/retrievals", response_model=list[api_ops.Retrieval], summary="Retrievals",
    responses=problem_responses(),
)  # fmt: skip
def list_retrievals(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RETRIEVAL_REQUEST)],
    context: ContextDep,
    state: Annotated[str | None, Query(pattern="^(pending|approved|denied|expired)$")] = None,
) -> list[api_ops.Retrieval]:
    return retention.list_retrievals(service_context(context, tenant, principal), state)


@router.post(
    "/retrievals/{retrieval_id}/decision", response_model=api_ops.Retrieval,
    summary="Approve or deny a retrieval", responses=problem_responses(404, 409),
)  # fmt: skip
def decide_retrieval(
    retrieval_id: IdPath,
    body: api_ops.RetrievalDecision,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RETRIEVAL_APPROVE)],
    context: ContextDep,
) -> api_ops.Retrieval:
    """Owners (not the requester): approving makes the data readable for the window."""
    return retention.decide_retrieval(
        service_context(context, tenant, principal), retrieval_id, body, context.clock.now(),
        context.settings, context.settings.archive_storage_class,
    )  # fmt: skip


@platform_router.post(
    "/lifecycle", response_model=api_ops.LifecycleReport, summary="Run the lifecycle job now",
)  # fmt: skip
def run_lifecycle(
    principal: Annotated[Principal, Allowed(Action.LIFECYCLE_RUN)],
    context: ContextDep,
) -> api_ops.LifecycleReport:
    """Every tenant's pass now (the leader also runs it every ARGOSY_LIFECYCLE_INTERVAL s)."""
    from argosy.server.lifecycle import run_all

    return run_all(context, still_leading=lambda: True)
