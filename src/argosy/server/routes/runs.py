"""Runs: create (idempotently), list, read, cancel, retry, reproduce, diff; a run's tasks.

Runs created here go on the server queue; any server instance's coordinator claims and
executes them. ``Idempotency-Key`` makes creation safe to retry (see
:func:`argosy.service.runs.create_run`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Header, Query, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import (
    CursorQuery,
    LimitQuery,
    RunIdPath,
    service_context,
    tenant_router,
)
from argosy.service import compare, runs

router = tenant_router("runs")

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="a client-chosen key (e.g. a UUID): the same key and body return the same "
        "run instead of creating another",
    ),
]
REPLAYED = "Idempotent-Replayed"


@router.post(
    "/runs",
    response_model=api.Run,
    status_code=201,
    summary="Create a run",
    responses={
        200: {
            "model": api.Run,
            "description": "an earlier request with the same Idempotency-Key created this run "
            "(header `Idempotent-Replayed: true`)",
        },
        **problem_responses(404, 422),
    },
)
def create_run(
    body: api.RunCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_CREATE)],
    context: ContextDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> api.Run:
    """Queue a run of a pushed version (``version``: a tag, digest or id; default: the newest)
    with ``parameters`` (checked against the pipeline's parameters: 422 if they do not fit);
    ``files`` name the uploads that hold the run's local file parameters."""
    created = runs.create_run(
        service_context(context, tenant, principal), body, idempotency_key=idempotency_key
    )
    if created.replayed:
        response.status_code = 200
        response.headers[REPLAYED] = "true"
    return created.run


@router.get(
    "/runs",
    response_model=api.Page[api.Run],
    summary="List runs",
    responses=problem_responses(),
)
def list_runs(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
    pipeline: Annotated[
        str | None, Query(pattern=api.NAME_PATTERN, description="only runs of this pipeline")
    ] = None,
    status: Annotated[
        api.RunStatusName | None, Query(description="only runs in this status")
    ] = None,
    created_by: Annotated[
        str | None, Query(max_length=255, description="only runs started by this principal")
    ] = None,
    schedule: Annotated[
        str | None, Query(pattern=api.NAME_PATTERN, description="only runs of this schedule")
    ] = None,
    since: Annotated[datetime | None, Query(description="only runs created at or after")] = None,
    until: Annotated[datetime | None, Query(description="only runs created before")] = None,
    name: Annotated[str | None, Query(max_length=255, description="only runs of this name")] = None,
    tag: Annotated[
        list[str] | None,
        Query(max_length=20, description="only runs with this tag, as key=value (repeatable)"),
    ] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.Run]:
    """Runs, newest first (keyset pages on the run id)."""
    return runs.list_runs(
        service_context(context, tenant, principal),
        pipeline=pipeline, status=status, created_by=created_by, schedule=schedule,
        since=since, until=until, name=name, tags=runs.parse_tags(tag or []), limit=limit,
        cursor=cursor,
    )  # fmt: skip


@router.get(
    "/runs/{run_id}", response_model=api.Run, summary="Get a run", responses=problem_responses(404)
)
def get_run(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
) -> api.Run:
    return runs.get_run(service_context(context, tenant, principal), run_id)


@router.get(
    "/runs/{run_id}/detail",
    response_model=api.RunDetail,
    summary="Get a run with its tasks and metrics",
    responses=problem_responses(404),
)
def get_run_detail(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
) -> api.RunDetail:
    """The run, each task with its attempts, outputs and log tail, and the metrics outputs:
    the document ``argosy runs show --output json`` prints."""
    return runs.get_run_detail(service_context(context, tenant, principal), run_id)


@router.get(
    "/runs/{run_id}/tasks",
    response_model=list[api.Task],
    summary="List a run's tasks with their attempts",
    responses=problem_responses(404),
)
def list_tasks(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
) -> list[api.Task]:
    return runs.list_tasks(service_context(context, tenant, principal), run_id)


@router.post(
    "/runs/{run_id}/cancel",
    response_model=api.Run,
    summary="Cancel a run",
    responses=problem_responses(404, 409),
)
def cancel_run(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_CANCEL)],
    context: ContextDep,
) -> api.Run:
    """Ask for the run to stop. A pending run no instance has claimed is cancelled at once
    (with its tasks); a running one is stopped by the instance driving it. Cancelling a run
    already cancelled on request answers the run again; any other finished run is a 409."""
    return runs.cancel_run(service_context(context, tenant, principal), run_id)[0]


@router.post(
    "/runs/{run_id}/retry",
    response_model=api.Run,
    status_code=201,
    summary="Retry a failed or cancelled run",
    responses=problem_responses(404, 409),
)
def retry_run(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_RETRY)],
    context: ContextDep,
) -> api.Run:
    """A new run of the same version and parameters (``retry_of`` links it); its tasks reuse
    the outputs of the original's succeeded tasks whose inputs are unchanged."""
    return runs.retry_run(service_context(context, tenant, principal), run_id)


@router.post(
    "/runs/{run_id}/reproduce",
    response_model=api.Run,
    status_code=201,
    summary="Reproduce a finished run",
    responses=problem_responses(404, 409),
)
def reproduce_run(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_CREATE)],
    context: ContextDep,
) -> api.Run:
    """A new run of the same version and parameters with caching off, reading the same input
    files (``reproduce_of`` links it); compare the two with ``.../diff/{other}``."""
    return runs.reproduce_run(service_context(context, tenant, principal), run_id)


@router.get(
    "/runs/{run_id}/diff/{other_run_id}",
    response_model=api.RunDiff,
    summary="Compare two runs",
    responses=problem_responses(404),
)
def diff_runs(
    run_id: RunIdPath,
    other_run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
) -> api.RunDiff:
    """Parameters, code, packages, input data, outputs and metrics of two runs, row by row."""
    return compare.diff(service_context(context, tenant, principal), run_id, other_run_id)
