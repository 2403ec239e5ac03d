"""Pipelines and their versions: push a compiled spec, list and read what was pushed.

A version is content-addressed: pushing the same executable content again finds the same
version (200, ``created: false``). A version name (tag) is given with ``version``; tags never
move, so a name already given to different content is a 409 ``version_tag_conflict``.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from fastapi import Path, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses, validation_detail
from argosy.server.routes import (
    CursorQuery,
    LimitQuery,
    decode_cursor,
    must_utc,
    paged,
    spec_document,
    tenant_router,
    version_documents,
)
from argosy.spec.models import PipelineSpec, PythonImplementation
from argosy.spec.validate import validate_spec
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Pipeline, PipelineVersion

router = tenant_router("pipelines")

PipelinePath = Annotated[
    str, Path(pattern=api.NAME_PATTERN, description="the pipeline's name (its spec's `name`)")
]
VersionRefPath = Annotated[
    str,
    Path(min_length=1, max_length=255, description="a version name (tag), a digest or an id"),
]


def referenced_blobs(spec: PipelineSpec) -> set[str]:
    """The sha256 (hex) of every blob ``spec`` needs from the store: its code packages
    (``spec.code`` and each Python step's ``implementation.code``) and environment manifests
    (each Python step's ``implementation.environment``)."""
    found = set(spec.code)
    for step in spec.steps.values():
        impl = step.implementation
        if isinstance(impl, PythonImplementation):
            found.update((impl.code, impl.environment))
    return {ref.removeprefix("sha256:") for ref in found}


def _parse_spec(document: dict[str, object], pipeline: str) -> PipelineSpec:
    try:
        spec = PipelineSpec.model_validate(document)
    except pydantic.ValidationError as exc:
        errors = [dict(e, loc=("body", "spec", *e["loc"])) for e in exc.errors()]
        raise ApiProblem(
            422,
            "the spec is not a valid compiled pipeline (write it with 'argosy compile'): "
            + validation_detail(errors),
            code="invalid_spec",
        ) from None
    if spec.name != pipeline:
        raise ApiProblem(
            422,
            f"the spec is pipeline {spec.name!r} but the URL names {pipeline!r}; push it to "
            f".../pipelines/{spec.name}/versions",
            code="pipeline_name_mismatch",
        )
    for ref in referenced_blobs(spec):
        if len(ref) != 64 or any(c not in "0123456789abcdef" for c in ref):
            raise ApiProblem(
                422,
                f"the spec references blob {ref!r}, which is not a sha256 digest; compile the "
                "pipeline again with 'argosy compile'",
                code="invalid_spec",
            )
    validate_spec(spec)  # PipelineDefinitionError -> 422 with the failing check
    return spec


def _versions_by_pipeline(
    session: Session, pipelines: list[Pipeline]
) -> dict[str, api.PipelineVersion]:
    """The newest version of each pipeline (with its tags)."""
    if not pipelines:
        return {}
    newest = (
        select(func.max(PipelineVersion.id))
        .where(PipelineVersion.pipeline_id.in_([p.id for p in pipelines]))
        .group_by(PipelineVersion.pipeline_id)
    )
    versions = session.scalars(select(PipelineVersion).where(PipelineVersion.id.in_(newest))).all()
    names = {p.id: p.name for p in pipelines}
    docs = version_documents(session, versions, names)
    return {v.pipeline_id: d for v, d in zip(versions, docs, strict=True)}


def _pipeline_document(p: Pipeline, latest: api.PipelineVersion | None) -> api.Pipeline:
    return api.Pipeline(
        id=p.id, name=p.name, created_at=must_utc(p.created_at), created_by=p.created_by,
        latest_version=latest,
    )  # fmt: skip


@router.post(
    "/pipelines/{pipeline}/versions",
    response_model=api.PipelineVersionPushed,
    status_code=201,
    summary="Push a pipeline version",
    responses={
        200: {"model": api.PipelineVersionPushed, "description": "the content was already there"},
        **problem_responses(409, 422),
    },
)
def push_version(
    pipeline: PipelinePath,
    body: api.PipelineVersionCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_PUSH)],
    context: ContextDep,
    response: Response,
) -> api.PipelineVersionPushed:
    """Store a compiled spec as a version of ``pipeline`` (201), or find the identical one
    already stored (200); ``version`` names it (a tag that never moves).

    Every blob the spec references must be uploaded first (422 ``missing_blobs`` lists them).
    """
    spec = _parse_spec(body.spec, pipeline)
    store = context.store(tenant)
    missing = sorted(h for h in referenced_blobs(spec) if not store.has_blob(h))
    if missing:
        raise ApiProblem(
            422,
            f"the spec references {len(missing)} blob(s) not uploaded to tenant {tenant!r} "
            f"({', '.join('sha256:' + m[:12] for m in missing)}); upload each with "
            f"PUT /api/v1/tenants/{tenant}/blobs/{{sha256}} first, then push again",
            code="missing_blobs",
            extra={"missing_blobs": ["sha256:" + m for m in missing]},
        )

    def push(session: Session) -> api.PipelineVersionPushed:
        existed = session.scalar(
            select(PipelineVersion.id)
            .join(Pipeline, Pipeline.id == PipelineVersion.pipeline_id)
            .where(
                Pipeline.tenant == tenant,
                Pipeline.name == pipeline,
                PipelineVersion.digest == spec.digest,
            )
        )
        version = q.ensure_pipeline_version(session, tenant, spec, principal.subject)
        tag_added = bool(body.version) and q.tag_version(
            session, version, body.version or "", principal.subject
        )
        doc = version_documents(session, [version], {version.pipeline_id: pipeline})[0]
        return api.PipelineVersionPushed(version=doc, created=existed is None, tag_added=tag_added)

    for attempt in range(3):
        try:
            with context.metadata.session() as session:
                pushed = push(session)
            break
        except DbIntegrityError:  # pushed at the same moment by someone else: look again
            if attempt == 2:
                raise
    response.status_code = 201 if pushed.created else 200
    return pushed


@router.get(
    "/pipelines",
    response_model=api.Page[api.Pipeline],
    summary="List pipelines",
    responses=problem_responses(),
)
def list_pipelines(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.Pipeline]:
    """Pipelines of the tenant, newest first, each with its newest version."""
    after = decode_cursor(cursor)
    with context.metadata.session() as session:
        query = select(Pipeline).where(Pipeline.tenant == tenant)
        if after is not None:
            query = query.where(Pipeline.id < after)
        rows = session.scalars(query.order_by(Pipeline.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        latest = _versions_by_pipeline(session, kept)
        items = [_pipeline_document(p, latest.get(p.id)) for p in kept]
    return api.Page[api.Pipeline](items=items, next_cursor=next_cursor)


@router.get(
    "/pipelines/{pipeline}",
    response_model=api.Pipeline,
    summary="Get a pipeline",
    responses=problem_responses(404),
)
def get_pipeline(
    pipeline: PipelinePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
) -> api.Pipeline:
    with context.metadata.session() as session:
        row = q.get_pipeline(session, tenant, pipeline)
        latest = _versions_by_pipeline(session, [row])
        return _pipeline_document(row, latest.get(row.id))


@router.get(
    "/pipelines/{pipeline}/versions",
    response_model=api.Page[api.PipelineVersion],
    summary="List a pipeline's versions",
    responses=problem_responses(404),
)
def list_versions(
    pipeline: PipelinePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.PipelineVersion]:
    """Versions of the pipeline, newest first (without their specs)."""
    after = decode_cursor(cursor)
    with context.metadata.session() as session:
        row = q.get_pipeline(session, tenant, pipeline)
        query = select(PipelineVersion).where(PipelineVersion.pipeline_id == row.id)
        if after is not None:
            query = query.where(PipelineVersion.id < after)
        rows = session.scalars(query.order_by(PipelineVersion.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        items = version_documents(session, kept, {row.id: row.name})
    return api.Page[api.PipelineVersion](items=items, next_cursor=next_cursor)


@router.get(
    "/pipelines/{pipeline}/versions/{ref}",
    response_model=api.PipelineVersion,
    summary="Get a pipeline version with its spec",
    responses=problem_responses(404),
)
def get_version(
    pipeline: PipelinePath,
    ref: VersionRefPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
) -> api.PipelineVersion:
    """One version by name (tag), digest (or a unique prefix of its hex) or id, with its spec."""
    with context.metadata.session() as session:
        version = q.resolve_version(session, tenant, pipeline, ref)
        doc = version_documents(session, [version], {version.pipeline_id: pipeline})[0]
        doc.spec = spec_document(version)
        return doc
