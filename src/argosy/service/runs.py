"""Runs: create (idempotently), list, read, cancel, retry, reproduce; a run's tasks.

``queue`` says who executes a created run: ``"server"`` (any server instance claims it) or
``None`` (the calling process executes it: local mode). Everything else is the same in both
homes. ``Idempotency-Key`` makes creation safe to retry: the key is stored in the same
transaction as the run, so concurrent requests with one key create exactly one run (the
losers' transactions fail on the key's unique constraint, roll back, and get the winner's).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.engine import submission
from argosy.engine.cancellation import CancelOutcome, request_cancel
from argosy.errors import ConflictError, NotFoundError, UsageError
from argosy.ids import new_id
from argosy.service.context import ServiceContext
from argosy.service.documents import run_detail, run_document, run_documents, task_documents
from argosy.service.paging import decode_cursor, paged
from argosy.states import RunStatus
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import IdempotencyKey, Pipeline, Run, RunTag, Schedule, Upload

SERVER_QUEUE = submission.SERVER_QUEUE


@dataclass(frozen=True)
class Created:
    """A created run, and whether an earlier request with the same idempotency key made it."""

    run: api.Run
    replayed: bool = False


def request_hash(body: api.RunCreate) -> str:
    """sha256 of the canonical JSON of a run request (what an idempotency key is bound to)."""
    doc = body.model_dump(mode="json")
    for label in ("name", "description", "tags"):  # labels count only when given, so that a
        if not doc.get(label):  # key stored before they existed still replays
            doc.pop(label, None)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(ctx: ServiceContext, session: Session, key: str, digest: str) -> api.Run | None:
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.tenant == ctx.tenant, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.request_hash != digest:
        raise UsageError(
            f"Idempotency-Key {key!r} was already used for a different request (it created run "
            f"{row.run_id}); use a new key for a new run",
            code="idempotency_key_reused",
        )
    return run_document(session, session.get_one(Run, row.run_id))


def _files(ctx: ServiceContext, session: Session, body: api.RunCreate) -> dict[str, dict[str, str]]:
    """The uploads a run's path parameters name, checked to be this tenant's finished ones."""
    found: dict[str, dict[str, str]] = {}
    for value, upload in body.files.items():
        sha = upload.sha256.removeprefix("sha256:")
        done = session.scalar(
            select(Upload.id).where(
                Upload.tenant == ctx.tenant, Upload.sha256 == sha, Upload.completed_at.is_not(None)
            )
        )
        if done is None and not ctx.store.has_blob(sha):
            raise UsageError(
                f"file parameter {value!r} names sha256:{sha[:12]}, which was not uploaded to "
                f"tenant {ctx.tenant!r}; upload it first (POST .../uploads)",
                code="missing_upload",
            )
        entry = {"sha256": sha, "format": upload.format}
        if upload.filename:
            entry["filename"] = upload.filename
        found[value] = entry
    return found


def create_run(
    ctx: ServiceContext,
    body: api.RunCreate,
    *,
    idempotency_key: str | None = None,
    queue: str | None = SERVER_QUEUE,
    cwd: str | None = None,
) -> Created:
    """A new pending run of a pushed version with checked parameters (``UsageError`` naming
    the parameter otherwise), or the run an earlier request with the same key created."""
    digest = request_hash(body)
    if idempotency_key is not None:
        with ctx.metadata.session() as session:
            earlier = _replay(ctx, session, idempotency_key, digest)
        if earlier is not None:
            return Created(earlier, replayed=True)
    try:
        with ctx.metadata.session() as session:
            version = q.resolve_version(session, ctx.tenant, body.pipeline, body.version)
            try:
                run = submission.queue_run(
                    session, version, body.parameters, ctx.actor, fail_fast=body.fail_fast,
                    no_cache=body.no_cache, queue=queue, cwd=cwd,
                    files=_files(ctx, session, body), max_parameter_bytes=ctx.max_parameter_bytes,
                )  # fmt: skip
            except UsageError as exc:  # the parameters do not fit the pipeline's
                if exc.code is not None or isinstance(exc, NotFoundError):
                    raise
                raise UsageError(str(exc), code="invalid_parameters") from None
            label_run(session, run, body.name, body.description, body.tags, ctx.actor)
            if idempotency_key is not None:
                session.add(
                    IdempotencyKey(
                        id=new_id(), tenant=ctx.tenant, key=idempotency_key, request_hash=digest,
                        run_id=run.id, created_at=q.now(), created_by=ctx.actor,
                    )
                )  # fmt: skip
                session.flush()  # a concurrent request with this key fails here, or waits
            return Created(run_document(session, run))
    except DbIntegrityError:
        if idempotency_key is None:
            raise
        with ctx.metadata.session() as session:
            winner = _replay(ctx, session, idempotency_key, digest)
        if winner is None:
            raise
        return Created(winner, replayed=True)


def parse_tags(items: list[str]) -> dict[str, str]:
    """``key=value`` items -> tags (``UsageError`` naming a malformed one)."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"tag {item!r} is not KEY=VALUE; write it as --tag git_sha=abc123")
        tags[key.strip()] = value
    return tags


def label_run(
    session: Session,
    run: Run,
    name: str | None,
    description: str | None,
    tags: dict[str, str],
    actor: str,
) -> None:
    """Give a new run its name, description and tags (``key=value`` rows, filtered on)."""
    run.name, run.description = name, description
    for key, value in sorted(tags.items()):
        session.add(
            RunTag(
                id=new_id(), tenant=run.tenant, run_id=run.id, key=key, value=value,
                created_at=run.created_at, created_by=actor,
            )
        )  # fmt: skip
    if tags:
        session.flush()


def list_runs(
    ctx: ServiceContext,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    created_by: str | None = None,
    schedule: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> api.Page[api.Run]:
    """Runs, newest first, in keyset pages on the run id; ``created_by`` (who started it),
    ``schedule`` (the schedule's name), ``since``/``until`` (created in ``[since, until)``),
    ``name`` and ``tags`` (every ``key: value`` given) narrow the list like ``pipeline`` and
    ``status``."""
    if status is not None and status not in set(RunStatus):
        raise UsageError(
            f"unknown run status {status!r}; use one of: {', '.join(s.value for s in RunStatus)}"
        )
    texts = {
        "created_by": created_by,
        "name": name,
        **{f"tag {k}": f"{k}={v}" for k, v in (tags or {}).items()},
    }
    for what, text in texts.items():
        if text is not None and any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise UsageError(
                f"filter {what} holds a control character; names and tags never do: fix the filter",
                code="invalid_filter",
            )
    after = decode_cursor(cursor)
    empty = api.Page[api.Run](items=[], next_cursor=None)
    with ctx.metadata.session() as session:
        query = select(Run).where(Run.tenant == ctx.tenant)
        if pipeline is not None:
            pipeline_id = session.scalar(
                select(Pipeline.id).where(Pipeline.tenant == ctx.tenant, Pipeline.name == pipeline)
            )
            if pipeline_id is None:
                return empty
            query = query.where(Run.pipeline_id == pipeline_id)
        if schedule is not None:
            schedule_id = session.scalar(
                select(Schedule.id).where(Schedule.tenant == ctx.tenant, Schedule.name == schedule)
            )
            if schedule_id is None:
                return empty
            query = query.where(Run.schedule_id == schedule_id)
        if status is not None:
            query = query.where(Run.status == status)
        if created_by is not None:
            query = query.where(Run.created_by == created_by)
        if name is not None:
            query = query.where(Run.name == name)
        for key, value in (tags or {}).items():
            tagged = select(RunTag.run_id).where(
                RunTag.tenant == ctx.tenant, RunTag.key == key, RunTag.value == value
            )
            query = query.where(Run.id.in_(tagged))
        if since is not None:
            query = query.where(Run.created_at >= _as_utc(since))
        if until is not None:
            query = query.where(Run.created_at < _as_utc(until))
        if after is not None:
            query = query.where(Run.id < after)
        rows = session.scalars(query.order_by(Run.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        return api.Page[api.Run](items=run_documents(session, kept), next_cursor=next_cursor)


def _as_utc(value: datetime) -> datetime:
    """``value`` in UTC (a naive value is taken as UTC already)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def get_run(ctx: ServiceContext, ref: str) -> api.Run:
    """A run by id or unique id prefix."""
    with ctx.metadata.session() as session:
        return run_document(session, q.get_run(session, ctx.tenant, ref), ctx.store)


def get_run_detail(ctx: ServiceContext, ref: str) -> api.RunDetail:
    """A run with its tasks (attempts, outputs, log tails) and metrics."""
    with ctx.metadata.session() as session:
        return run_detail(session, q.get_run(session, ctx.tenant, ref), ctx.store)


def list_tasks(ctx: ServiceContext, ref: str) -> list[api.Task]:
    with ctx.metadata.session() as session:
        return task_documents(session, q.get_run(session, ctx.tenant, ref), ctx.store)


def get_task(ctx: ServiceContext, ref: str, node_path: str) -> api.Task:
    """One task of a run by node path (``train[2]``), with its attempts, outputs and log tail."""
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, ref)
        found = [t for t in task_documents(session, run, ctx.store) if t.node_path == node_path]
        if not found:
            raise NotFoundError(
                f"run {run.id} has no task {node_path!r}; see its tasks with "
                f"'argosy runs show {run.id}'"
            )
        return found[0]


def cancel_run(ctx: ServiceContext, ref: str) -> tuple[api.Run, CancelOutcome]:
    """Ask for the run to stop (see :mod:`argosy.engine.cancellation`). A run that already
    finished other than by a cancel request is a ``ConflictError`` (``run_finished``)."""
    with ctx.metadata.session() as session:
        run, outcome = request_cancel(session, q.get_run(session, ctx.tenant, ref).id)
        if outcome is CancelOutcome.FINISHED:
            raise ConflictError(
                f"run {run.id} has already finished ({run.status}); there is nothing to cancel",
                code="run_finished",
            )
        return run_document(session, run), outcome


def retry_run(ctx: ServiceContext, ref: str, *, queue: str | None = SERVER_QUEUE) -> api.Run:
    """A new run of a failed or cancelled run's version and parameters (``retry_of`` links
    it); its tasks reuse the original's succeeded outputs whose inputs are unchanged."""
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, ref)
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ConflictError(
                f"run {run.id} is {run.status}; only a failed or cancelled run can be retried "
                "(start a new run instead)",
                code="run_not_retryable",
            )
        return run_document(session, submission.retry_run(session, run, ctx.actor, queue=queue))


def reproduce_run(ctx: ServiceContext, ref: str, *, queue: str | None = SERVER_QUEUE) -> api.Run:
    """A new run of a finished run's version and parameters with caching off, reading the
    input files the original imported; its code packages must still be stored."""
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, ref)
        if run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
            raise ConflictError(
                f"run {run.id} is {run.status}; reproduce it once it has finished",
                code="run_not_finished",
            )
        spec = q.get_spec(session, run)
        missing = [d for d in spec.code if not ctx.store.has_blob(d.removeprefix("sha256:"))]
        if missing:
            raise NotFoundError(
                f"the code package {missing[0]} of run {run.id} is no longer stored, so it "
                "cannot be reproduced; restore the artifact store from a backup"
            )
        return run_document(session, submission.reproduce_run(session, run, ctx.actor, queue=queue))
