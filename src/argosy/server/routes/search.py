"""Log search: the lines of a tenant's task logs that hold every word of a query
(:mod:`argosy.service.search`), newest first, each with its run, step and attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from argosy.api import ops as api_ops
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import service_context, tenant_router
from argosy.service import search

router = tenant_router("logs")


@router.get(
    "/logs/search",
    response_model=api_ops.LogSearchPage,
    summary="Search the tenant's task logs",
    responses=problem_responses(404, 422),
)
def search_logs(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.LOG_READ)],
    context: ContextDep,
    q: Annotated[str, Query(min_length=1, max_length=500, description="words to find")],
    run: Annotated[str | None, Query(max_length=26, description="only this run")] = None,
    pipeline: Annotated[str | None, Query(max_length=255, description="only this pipeline")] = None,
    step: Annotated[
        str | None, Query(max_length=512, description="only this node path or step name")
    ] = None,
    since: Annotated[datetime | None, Query(description="lines written at or after")] = None,
    until: Annotated[datetime | None, Query(description="lines written before")] = None,
    stream: Annotated[str | None, Query(pattern="^(out|err)$")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="lines at most")] = 50,
) -> api_ops.LogSearchPage:
    """Matching lines, newest first; ``next_cursor`` pages to older ones."""
    return search.search_logs(
        service_context(context, tenant, principal), q, run=run, pipeline=pipeline, step=step,
        since=since, until=until, stream=stream, cursor=cursor, limit=limit,
    )  # fmt: skip
