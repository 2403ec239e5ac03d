"""Cost: a tenant's attempts priced by the price list (:mod:`argosy.service.costs`), grouped
by tenant, pipeline, run, user, day or task; its budget; every tenant's cost for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from argosy.api import API_PREFIX
from argosy.api import ops as api_ops
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import service_context, tenant_router
from argosy.service import costs

router = tenant_router("costs")
platform_router = APIRouter(prefix=API_PREFIX, tags=["costs"])

ByQuery = Annotated[
    str, Query(pattern="^(tenant|pipeline|run|user|day|task)$", description="group by")
]
SinceQuery = Annotated[datetime | None, Query(description="attempts ended at or after")]
UntilQuery = Annotated[datetime | None, Query(description="attempts ended before")]


@router.get(
    "/costs", response_model=api_ops.CostReport, summary="The tenant's cost",
    responses=problem_responses(404, 422),
)  # fmt: skip
def tenant_costs(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.COST_READ)],
    context: ContextDep,
    by: ByQuery = "run",
    since: SinceQuery = None,
    until: UntilQuery = None,
    run: Annotated[str | None, Query(max_length=26, description="only this run")] = None,
) -> api_ops.CostReport:
    """Measured use x the price list, charged on max(requested, used) per resource."""
    return costs.cost_report(
        service_context(context, tenant, principal), by, since=since, until=until, run=run,
        prices_file=context.settings.prices_file,
    )  # fmt: skip


@router.get(
    "/costs/budget", response_model=api_ops.Budget, summary="The tenant's budget",
    responses=problem_responses(),
)  # fmt: skip
def tenant_budget(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.COST_READ)],
    context: ContextDep,
) -> api_ops.Budget:
    """This month's cost against the tenant's ``budget`` setting."""
    return costs.budget(
        service_context(context, tenant, principal), prices_file=context.settings.prices_file,
        now=context.clock.now(),
    )  # fmt: skip


@platform_router.get(
    "/costs", response_model=api_ops.CostReport, summary="Every tenant's cost",
    responses=problem_responses(422),
)  # fmt: skip
def all_costs(
    principal: Annotated[Principal, Allowed(Action.COST_READ_ALL)],
    context: ContextDep,
    by: ByQuery = "tenant",
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> api_ops.CostReport:
    """Platform admins: the cost of every tenant's attempts."""
    return costs.cost_report_all(
        context.metadata, by, since=since, until=until, prices_file=context.settings.prices_file
    )
