"""Pipelines and their versions: push a compiled spec, list and read what was pushed.

A version is content-addressed: pushing the same executable content again finds the same
version (``created: false``). A version name (tag) never moves, so a name already given to
different content is a ``VersionConflictError`` (``version_tag_conflict``).
"""

from __future__ import annotations

from typing import Any

import pydantic
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.errors import UsageError
from argosy.service.context import ServiceContext
from argosy.service.documents import pipeline_document, spec_document, version_documents
from argosy.service.paging import decode_cursor, paged
from argosy.spec.models import PipelineSpec, PythonImplementation
from argosy.spec.validate import validate_spec
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Pipeline, PipelineVersion


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


def parse_spec(document: dict[str, Any], pipeline: str) -> PipelineSpec:
    """A pushed spec document, validated; ``UsageError`` (``invalid_spec``) says what is wrong."""
    try:
        spec = PipelineSpec.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("spec", *first.get("loc", ())))
        raise UsageError(
            f"the spec is not a valid compiled pipeline (write it with 'argosy compile'): "
            f"{where}: {first['msg']} ({exc.error_count()} error(s))",
            code="invalid_spec",
        ) from None
    if spec.name != pipeline:
        raise UsageError(
            f"the spec is pipeline {spec.name!r} but the request names {pipeline!r}; push it "
            f"as pipeline {spec.name!r}",
            code="pipeline_name_mismatch",
        )
    for ref in referenced_blobs(spec):
        if len(ref) != 64 or any(c not in "0123456789abcdef" for c in ref):
            raise UsageError(
                f"the spec references blob {ref!r}, which is not a sha256 digest; compile the "
                "pipeline again with 'argosy compile'",
                code="invalid_spec",
            )
    validate_spec(spec)  # PipelineDefinitionError names the failing check
    return spec


def push_version(
    ctx: ServiceContext, pipeline: str, document: dict[str, Any], version: str | None
) -> api.PipelineVersionPushed:
    """Store a compiled spec as a version of ``pipeline`` (or find the identical one already
    stored); ``version`` tags it. Every blob the spec references must be in the tenant's
    store first (``UsageError`` ``missing_blobs`` lists them)."""
    spec = parse_spec(document, pipeline)
    missing = sorted(h for h in referenced_blobs(spec) if not ctx.store.has_blob(h))
    if missing:
        raise UsageError(
            f"the spec references {len(missing)} blob(s) not uploaded to tenant {ctx.tenant!r} "
            f"({', '.join('sha256:' + m[:12] for m in missing)}); upload each with "
            f"PUT /api/v1/tenants/{ctx.tenant}/blobs/{{sha256}} first, then push again",
            code="missing_blobs",
            extra={"missing_blobs": ["sha256:" + m for m in missing]},
        )

    def push(session: Session) -> api.PipelineVersionPushed:
        existed = session.scalar(
            select(PipelineVersion.id)
            .join(Pipeline, Pipeline.id == PipelineVersion.pipeline_id)
            .where(
                Pipeline.tenant == ctx.tenant,
                Pipeline.name == pipeline,
                PipelineVersion.digest == spec.digest,
            )
        )
        row = q.ensure_pipeline_version(session, ctx.tenant, spec, ctx.actor)
        tag_added = bool(version) and q.tag_version(session, row, version or "", ctx.actor)
        doc = version_documents(session, [row], {row.pipeline_id: pipeline})[0]
        return api.PipelineVersionPushed(version=doc, created=existed is None, tag_added=tag_added)

    for attempt in range(3):
        try:
            with ctx.metadata.session() as session:
                return push(session)
        except DbIntegrityError:  # pushed at the same moment by someone else: look again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _latest_versions(session: Session, pipelines: list[Pipeline]) -> dict[str, api.PipelineVersion]:
    """The newest version of each pipeline (with its tags)."""
    if not pipelines:
        return {}
    newest = (
        select(func.max(PipelineVersion.id))
        .where(PipelineVersion.pipeline_id.in_([p.id for p in pipelines]))
        .group_by(PipelineVersion.pipeline_id)
    )
    versions = session.scalars(select(PipelineVersion).where(PipelineVersion.id.in_(newest))).all()
    docs = version_documents(session, versions, {p.id: p.name for p in pipelines})
    return {v.pipeline_id: d for v, d in zip(versions, docs, strict=True)}


def list_pipelines(
    ctx: ServiceContext, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.Pipeline]:
    """Pipelines of the tenant, newest first, each with its newest version."""
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        query = select(Pipeline).where(Pipeline.tenant == ctx.tenant)
        if after is not None:
            query = query.where(Pipeline.id < after)
        rows = session.scalars(query.order_by(Pipeline.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        latest = _latest_versions(session, kept)
        items = [pipeline_document(p, latest.get(p.id)) for p in kept]
    return api.Page[api.Pipeline](items=items, next_cursor=next_cursor)


def get_pipeline(ctx: ServiceContext, name: str) -> api.Pipeline:
    with ctx.metadata.session() as session:
        row = q.get_pipeline(session, ctx.tenant, name)
        return pipeline_document(row, _latest_versions(session, [row]).get(row.id))


def list_versions(
    ctx: ServiceContext, pipeline: str, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.PipelineVersion]:
    """Versions of the pipeline, newest first (without their specs)."""
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        row = q.get_pipeline(session, ctx.tenant, pipeline)
        query = select(PipelineVersion).where(PipelineVersion.pipeline_id == row.id)
        if after is not None:
            query = query.where(PipelineVersion.id < after)
        rows = session.scalars(query.order_by(PipelineVersion.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        items = version_documents(session, kept, {row.id: row.name})
    return api.Page[api.PipelineVersion](items=items, next_cursor=next_cursor)


def get_version(ctx: ServiceContext, pipeline: str, ref: str | None) -> api.PipelineVersion:
    """One version by name (tag), digest (or a unique prefix of its hex) or id, with its spec;
    ``None``: the newest."""
    with ctx.metadata.session() as session:
        version = q.resolve_version(session, ctx.tenant, pipeline, ref)
        doc = version_documents(session, [version], {version.pipeline_id: pipeline})[0]
        doc.spec = spec_document(version)
        return doc


def run_spec(ctx: ServiceContext, run_ref: str) -> PipelineSpec:
    """The spec a run ran (with provenance)."""
    with ctx.metadata.session() as session:
        return q.get_spec(session, q.get_run(session, ctx.tenant, run_ref))
