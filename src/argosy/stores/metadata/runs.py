"""Query functions for pipelines, versions, runs, tasks, attempts and artifacts.

Every function takes a session and the caller's tenant; there is no query without a tenant
filter. References given by users (``01J...``, a unique id prefix, or ``RUN/NODE/OUTPUT``)
are resolved here, with errors that list what would have matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from argosy.errors import NotFoundError, VersionConflictError
from argosy.ids import new_id
from argosy.spec.models import PipelineSpec
from argosy.states import RunStatus, TaskState
from argosy.stores.metadata.tables import (
    Artifact,
    Attempt,
    Pipeline,
    PipelineVersion,
    PipelineVersionTag,
    Run,
    Task,
    Tenant,
)


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def ensure_tenant(session: Session, tenant: str, user: str) -> None:
    if session.scalar(select(Tenant.id).where(Tenant.name == tenant)) is None:
        try:
            with session.begin_nested():  # another process may create it at the same moment
                session.add(
                    Tenant(
                        id=new_id(), tenant=tenant, name=tenant, created_at=now(), created_by=user
                    )
                )
        except IntegrityError:
            pass


def ensure_pipeline_version(
    session: Session, tenant: str, spec: PipelineSpec, user: str
) -> PipelineVersion:
    """The pipeline and version rows of ``spec`` (created if new; versions are immutable)."""
    ensure_tenant(session, tenant, user)
    pipeline = session.scalar(
        select(Pipeline).where(Pipeline.tenant == tenant, Pipeline.name == spec.name)
    )
    if pipeline is None:
        pipeline = Pipeline(
            id=new_id(), tenant=tenant, name=spec.name, created_at=now(), created_by=user
        )
        session.add(pipeline)
        session.flush()
    digest = spec.digest
    version = session.scalar(
        select(PipelineVersion).where(
            PipelineVersion.pipeline_id == pipeline.id, PipelineVersion.digest == digest
        )
    )
    if version is None:
        version = PipelineVersion(
            id=new_id(),
            tenant=tenant,
            pipeline_id=pipeline.id,
            digest=digest,
            spec=spec.executable_json(),
            provenance=spec.provenance.model_dump(mode="json") if spec.provenance else None,
            created_at=now(),
            created_by=user,
        )
        session.add(version)
        session.flush()
    return version


def create_run(
    session: Session,
    tenant: str,
    spec: PipelineSpec,
    nodes: list[tuple[str, str]],
    parameters: dict[str, Any],
    options: dict[str, Any],
    user: str,
    *,
    version: PipelineVersion | None = None,
    queue: str | None = None,
    retry_of: str | None = None,
    schedule_id: str | None = None,
) -> Run:
    """A new ``pending`` run of ``spec`` with a ``pending`` task per (node path, step) of its plan.

    ``queue="server"`` leaves it for any server instance to claim; otherwise the submitting
    process executes it.
    """
    version = version or ensure_pipeline_version(session, tenant, spec, user)
    created = now()
    run = Run(
        id=new_id(),
        tenant=tenant,
        pipeline_id=version.pipeline_id,
        pipeline_version_id=version.id,
        status=RunStatus.PENDING,
        parameters=parameters,
        options=options,
        cancel_requested=False,
        engine=None,
        queue=queue,
        retry_of=retry_of,
        schedule_id=schedule_id,
        created_at=created,
        created_by=user,
    )
    session.add(run)
    session.flush()
    for path, step in nodes:
        session.add(
            Task(
                id=new_id(),
                tenant=tenant,
                run_id=run.id,
                node_path=path,
                step_name=step,
                state=TaskState.PENDING,
                attempt_count=0,
                failures=0,
                created_at=created,
                created_by=user,
            )
        )
    if queue is not None:  # server instances wake at this transaction's commit
        from argosy.stores.metadata.wakeups import notify_run_queued

        notify_run_queued(session, tenant)
    return run


def get_pipeline(session: Session, tenant: str, name: str) -> Pipeline:
    pipeline = session.scalar(
        select(Pipeline).where(Pipeline.tenant == tenant, Pipeline.name == name)
    )
    if pipeline is None:
        raise NotFoundError(
            f"no pipeline {name!r} in tenant {tenant!r}; push it with "
            f"'argosy pipelines push FILE:PIPELINE'"
        )
    return pipeline


def version_tags(session: Session, version_ids: Sequence[str]) -> dict[str, list[str]]:
    """Version id -> its tags (oldest first)."""
    tags: dict[str, list[str]] = {v: [] for v in version_ids}
    for tag in session.scalars(
        select(PipelineVersionTag)
        .where(PipelineVersionTag.version_id.in_(list(version_ids)))
        .order_by(PipelineVersionTag.id)
    ):
        tags[tag.version_id].append(tag.name)
    return tags


def tag_version(session: Session, version: PipelineVersion, name: str, user: str) -> bool:
    """Give ``version`` the tag ``name``; False if it already has it.

    Tags never move: a name already on another version of the pipeline is refused.
    """
    existing = session.scalar(
        select(PipelineVersionTag).where(
            PipelineVersionTag.pipeline_id == version.pipeline_id, PipelineVersionTag.name == name
        )
    )
    if existing is None:
        try:
            with session.begin_nested():
                session.add(
                    PipelineVersionTag(
                        id=new_id(), tenant=version.tenant, pipeline_id=version.pipeline_id,
                        version_id=version.id, name=name, created_at=now(), created_by=user,
                    )
                )  # fmt: skip
            return True
        except IntegrityError:  # pushed at the same moment by someone else: check what won
            existing = session.scalar(
                select(PipelineVersionTag).where(
                    PipelineVersionTag.pipeline_id == version.pipeline_id,
                    PipelineVersionTag.name == name,
                )
            )
            assert existing is not None
    if existing.version_id != version.id:
        other = session.get_one(PipelineVersion, existing.version_id)
        raise VersionConflictError(
            f"version name {name!r} is already taken by a different content "
            f"({other.digest[:19]}); versions are immutable: push under a new version name"
        )
    return False


def resolve_version(
    session: Session, tenant: str, pipeline: str, ref: str | None
) -> PipelineVersion:
    """A version of ``pipeline`` by tag, digest (or a prefix of its hex), or id; None: the newest."""
    row = get_pipeline(session, tenant, pipeline)
    base = select(PipelineVersion).where(PipelineVersion.pipeline_id == row.id)
    if ref is None:
        newest = session.scalar(base.order_by(PipelineVersion.id.desc()).limit(1))
        if newest is None:
            raise NotFoundError(f"pipeline {pipeline!r} has no versions; push one first")
        return newest
    tagged = session.scalar(
        select(PipelineVersion)
        .join(PipelineVersionTag, PipelineVersionTag.version_id == PipelineVersion.id)
        .where(PipelineVersionTag.pipeline_id == row.id, PipelineVersionTag.name == ref)
    )
    if tagged is not None:
        return tagged
    by_id = session.scalar(base.where(PipelineVersion.id == ref.upper()))
    if by_id is not None:
        return by_id
    hexpart = ref.removeprefix("sha256:").lower()
    if len(hexpart) >= 6 and all(c in "0123456789abcdef" for c in hexpart):
        found = session.scalars(
            base.where(PipelineVersion.digest.startswith("sha256:" + hexpart)).limit(2)
        ).all()
        if len(found) == 1:
            return found[0]
    raise NotFoundError(
        f"pipeline {pipeline!r} has no version {ref!r}; give a version name, a digest or an id "
        f"(list them with GET .../pipelines/{pipeline}/versions)"
    )


def _by_ref(session: Session, model: Any, tenant: str, ref: str, noun: str) -> Any:
    ref = ref.strip().upper()
    exact = session.scalar(select(model).where(model.tenant == tenant, model.id == ref))
    if exact is not None:
        return exact
    if len(ref) < 4:
        raise NotFoundError(f"{noun} {ref!r} not found; give at least 4 characters of its id")
    matches = session.scalars(
        select(model).where(model.tenant == tenant, model.id.startswith(ref)).limit(6)
    ).all()
    if not matches:
        raise NotFoundError(
            f"no {noun} id starts with {ref!r}; list them with 'argosy {noun}s list'"
        )
    if len(matches) > 1:
        ids = ", ".join(m.id for m in matches[:5])
        raise NotFoundError(f"{ref!r} matches several {noun}s ({ids}); give more characters")
    return matches[0]


def get_run(session: Session, tenant: str, ref: str) -> Run:
    run: Run = _by_ref(session, Run, tenant, ref, "run")
    return run


def get_spec(session: Session, run: Run) -> PipelineSpec:
    version = session.get_one(PipelineVersion, run.pipeline_version_id)
    return PipelineSpec.model_validate(
        dict(version.spec, provenance=version.provenance) if version.provenance else version.spec
    )


def list_runs(
    session: Session,
    tenant: str,
    *,
    limit: int = 20,
    status: str | None = None,
    pipeline: str | None = None,
) -> Sequence[tuple[Run, str]]:
    query = (
        select(Run, Pipeline.name)
        .join(Pipeline, Pipeline.id == Run.pipeline_id)
        .where(Run.tenant == tenant)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(Run.status == status)
    if pipeline:
        query = query.where(Pipeline.name == pipeline)
    return [(r, n) for r, n in session.execute(query).all()]


def tasks_of(session: Session, run_id: str) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.run_id == run_id).order_by(Task.id)).all())


def attempts_of(session: Session, run_id: str) -> list[Attempt]:
    return list(
        session.scalars(
            select(Attempt)
            .where(Attempt.run_id == run_id)
            .order_by(Attempt.task_id, Attempt.number)
        ).all()
    )


def artifacts_of(session: Session, run_id: str) -> list[Artifact]:
    return list(
        session.scalars(
            select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
        ).all()
    )


def get_artifact(session: Session, tenant: str, ref: str) -> Artifact:
    """An artifact by id, id prefix, or ``RUN/NODE/OUTPUT`` (``RUN/NODE`` if it has one output)."""
    if "/" not in ref:
        art: Artifact = _by_ref(session, Artifact, tenant, ref, "artifact")
        return art
    run_ref, _, rest = ref.partition("/")
    run = get_run(session, tenant, run_ref)
    arts = artifacts_of(session, run.id)
    node, _, output = rest.rpartition("/")
    for art in arts:
        if art.node_path == node and art.output_name == output:
            return art
    of_node = [a for a in arts if a.node_path == rest]
    if len(of_node) == 1:
        return of_node[0]
    if of_node:
        names = ", ".join(f"{run.id}/{rest}/{a.output_name}" for a in of_node)
        raise NotFoundError(f"node {rest!r} has {len(of_node)} outputs; name one: {names}")
    nodes = sorted({a.node_path for a in arts})
    shown = ", ".join(nodes[:12]) + (f" (and {len(nodes) - 12} more)" if len(nodes) > 12 else "")
    raise NotFoundError(
        f"no artifact {ref!r} in run {run.id}; nodes with outputs: {shown or '(none)'}; "
        f"list them with: argosy artifacts list {run.id}"
    )


def claim_queued_tasks(
    session: Session,
    tenant: str,
    limit: int,
    *,
    run_id: str | None = None,
    at: datetime | None = None,
) -> list[Task]:
    """Lock up to ``limit`` queued tasks that may start now (oldest first) for this transaction.

    Rows another transaction has locked are skipped (``FOR UPDATE SKIP LOCKED``), so several
    engine processes claiming from one PostgreSQL database at once get disjoint tasks and
    never wait for each other. The claim lasts until the transaction ends: the caller moves
    the tasks on (creates their attempts, marks them running) in the same transaction. On
    SQLite the lock clause is not rendered; ``BEGIN IMMEDIATE`` serializes writers there.
    """
    moment = at or now()
    query = (
        select(Task)
        .where(Task.tenant == tenant, Task.state == TaskState.QUEUED)
        .where((Task.not_before.is_(None)) | (Task.not_before <= moment))
        .order_by(Task.queued_at, Task.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if run_id is not None:
        query = query.where(Task.run_id == run_id)
    return list(session.scalars(query).all())
