"""Deleting a run (rows and bytes together) and collecting a deployment's garbage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query

from argosy.api import API_PREFIX
from argosy.api import ops as api_ops
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import RunIdPath, service_context, tenant_router
from argosy.service import cleanup

router = tenant_router("runs")
platform_router = APIRouter(prefix=API_PREFIX, tags=["operations"])


@router.delete(
    "/runs/{run_id}", response_model=api_ops.RunsDeleted, summary="Delete a run",
    responses=problem_responses(404, 409),
)  # fmt: skip
def delete_run(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_DELETE)],
    context: ContextDep,
) -> api_ops.RunsDeleted:
    """The run's rows and bytes (blobs nothing else refers to, logs, records), together; a
    running or held run is refused (409)."""
    return cleanup.delete_runs(service_context(context, tenant, principal), [run_id])


@platform_router.post(
    "/gc", response_model=api_ops.GcReport, summary="Collect garbage",
    responses=problem_responses(),
)  # fmt: skip
def collect_garbage(
    principal: Annotated[Principal, Allowed(Action.GC)],
    context: ContextDep,
    dry_run: Annotated[bool, Query(description="report only")] = True,
) -> api_ops.GcReport:
    """Every tenant's unreferenced blobs and records of deleted runs, and this instance's
    leftover attempt folders and download cache: reported, or (``dry_run=false``) removed."""
    from argosy.ops.cleanup import iter_tenants

    total = api_ops.GcReport(dry_run=dry_run)
    cache: Path | None = context.settings.home / "cache"
    for tenant in iter_tenants(context.metadata):
        found = cleanup.gc(service_context(context, tenant, principal), dry_run=dry_run,
                           cache_dir=cache)  # fmt: skip
        cache = None  # once
        for name, value in found.model_dump().items():
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(total, name, getattr(total, name) + value)
    return total
