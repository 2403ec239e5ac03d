"""Runs: create (idempotently), list, read, cancel and retry; a run's tasks with attempts.

Runs are created on the server queue; any server instance's coordinator claims and executes
them. ``Idempotency-Key`` makes creation safe to retry: the key is stored in the same
transaction as the run, so concurrent requests with one key create exactly one run (the
losers' transactions fail on the key's unique constraint, roll back, and answer the winner's
run with ``Idempotent-Replayed: true``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import Header, Path, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.auth.policy import Action
from argosy.engine import submission
from argosy.errors import NotFoundError, UsageError
from argosy.ids import new_id
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses
from argosy.server.routes import (
    CursorQuery,
    LimitQuery,
    decode_cursor,
    paged,
    run_document,
    run_documents,
    task_documents,
    tenant_router,
)
from argosy.states import RUN_DONE, TASK_DONE, Reason, RunStatus, TaskState
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import IdempotencyKey, Pipeline, Run

router = tenant_router("runs")

RunIdPath = Annotated[
    str,
    Path(
        min_length=4,
        max_length=26,
        pattern=r"^[0-9A-Za-z]+$",
        description="a run id, or a unique prefix of it (at least 4 characters)",
    ),
]
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


def request_hash(body: api.RunCreate) -> str:
    """sha256 of the canonical JSON of a run request (what an idempotency key is bound to)."""
    canonical = json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(session: Session, tenant: str, key: str, digest: str) -> api.Run | None:
    """The run an earlier request with ``key`` created (None: the key is new)."""
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.tenant == tenant, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.request_hash != digest:
        raise ApiProblem(
            422,
            f"Idempotency-Key {key!r} was already used for a different request (it created run "
            f"{row.run_id}); use a new key for a new run",
            code="idempotency_key_reused",
        )
    return run_document(session, session.get_one(Run, row.run_id))


def _replayed(response: Response, run: api.Run) -> api.Run:
    response.status_code = 200
    response.headers[REPLAYED] = "true"
    return run


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
    with ``parameters`` (checked against the pipeline's parameters: 422 if they do not fit)."""
    digest = request_hash(body)
    if idempotency_key is not None:
        with context.metadata.session() as session:
            earlier = _replay(session, tenant, idempotency_key, digest)
        if earlier is not None:
            return _replayed(response, earlier)
    try:
        with context.metadata.session() as session:
            version = q.resolve_version(session, tenant, body.pipeline, body.version)
            try:
                run = submission.queue_run(
                    session, version, body.parameters, principal.subject,
                    fail_fast=body.fail_fast, no_cache=body.no_cache,
                )  # fmt: skip
            except UsageError as exc:
                if isinstance(exc, NotFoundError):
                    raise
                raise ApiProblem(422, str(exc), code="invalid_parameters") from None
            if idempotency_key is not None:
                session.add(
                    IdempotencyKey(
                        id=new_id(), tenant=tenant, key=idempotency_key, request_hash=digest,
                        run_id=run.id, created_at=q.now(), created_by=principal.subject,
                    )
                )  # fmt: skip
                session.flush()  # a concurrent request with this key fails here, or waits
            created = run_document(session, run)
    except DbIntegrityError:
        if idempotency_key is None:
            raise
        with context.metadata.session() as session:
            winner = _replay(session, tenant, idempotency_key, digest)
        if winner is None:
            raise
        return _replayed(response, winner)
    return created


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
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.Run]:
    """Runs, newest first (keyset pages on the run id)."""
    after = decode_cursor(cursor)
    with context.metadata.session() as session:
        query = select(Run).where(Run.tenant == tenant)
        if pipeline is not None:
            pipeline_id = session.scalar(
                select(Pipeline.id).where(Pipeline.tenant == tenant, Pipeline.name == pipeline)
            )
            if pipeline_id is None:
                return api.Page[api.Run](items=[], next_cursor=None)
            query = query.where(Run.pipeline_id == pipeline_id)
        if status is not None:
            query = query.where(Run.status == status)
        if after is not None:
            query = query.where(Run.id < after)
        rows = session.scalars(query.order_by(Run.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        return api.Page[api.Run](items=run_documents(session, kept), next_cursor=next_cursor)


@router.get(
    "/runs/{run_id}", response_model=api.Run, summary="Get a run", responses=problem_responses(404)
)
def get_run(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.RUN_READ)],
    context: ContextDep,
) -> api.Run:
    with context.metadata.session() as session:
        return run_document(session, q.get_run(session, tenant, run_id))


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
    with context.metadata.session() as session:
        run = q.get_run(session, tenant, run_id)
        return task_documents(q.tasks_of(session, run.id), q.attempts_of(session, run.id))


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
    with context.metadata.session() as session:
        found = q.get_run(session, tenant, run_id)
        run = session.scalars(
            select(Run)
            .where(Run.id == found.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if run.status == RunStatus.CANCELLED and run.cancel_requested:
            return run_document(session, run)
        if run.status in RUN_DONE:
            raise ApiProblem(
                409,
                f"run {run.id} has already finished ({run.status}); there is nothing to cancel",
                code="run_finished",
            )
        run.cancel_requested = True
        if run.status == RunStatus.PENDING and run.owner is None and run.engine is None:
            moment = q.now()
            run.status = RunStatus.CANCELLED
            run.finished_at = moment
            for task in q.tasks_of(session, run.id):
                if task.state not in TASK_DONE:
                    task.state = TaskState.CANCELLED
                    task.reason = Reason.CANCELLED
                    task.finished_at = moment
        session.flush()
        return run_document(session, run)


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
    with context.metadata.session() as session:
        run = q.get_run(session, tenant, run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ApiProblem(
                409,
                f"run {run.id} is {run.status}; only a failed or cancelled run can be retried "
                "(create a new run instead)",
                code="run_not_retryable",
            )
        new = submission.retry_run(session, run, principal.subject)
        return run_document(session, new)
