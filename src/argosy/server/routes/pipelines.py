"""Pipelines and their versions: push a compiled spec, list and read what was pushed.

A version is content-addressed: pushing the same executable content again finds the same
version (200, ``created: false``). A version name (tag) is given with ``version``; tags never
move, so a name already given to different content is a 409 ``version_tag_conflict``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import CursorQuery, LimitQuery, service_context, tenant_router
from argosy.service import pipelines

router = tenant_router("pipelines")

PipelinePath = Annotated[
    str, Path(pattern=api.NAME_PATTERN, description="the pipeline's name (its spec's `name`)")
]
VersionRefPath = Annotated[
    str,
    Path(min_length=1, max_length=255, description="a version name (tag), a digest or an id"),
]


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
    pushed = pipelines.push_version(
        service_context(context, tenant, principal), pipeline, body.spec, body.version
    )
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
    return pipelines.list_pipelines(
        service_context(context, tenant, principal), limit=limit, cursor=cursor
    )


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
    return pipelines.get_pipeline(service_context(context, tenant, principal), pipeline)


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
    return pipelines.list_versions(
        service_context(context, tenant, principal), pipeline, limit=limit, cursor=cursor
    )


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
    return pipelines.get_version(service_context(context, tenant, principal), pipeline, ref)
