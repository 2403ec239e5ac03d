"""The model registry (:mod:`argosy.service.models`): register a run's artifact as a model
version, read models and versions, move aliases (promote, demote) and read their history.

Registering and moving aliases need the editor role (``model.write``, ``model.promote``);
reading needs viewer. Every change is in the audit log (the middleware records it) and, with
who, when and why, in the model's alias history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import CursorQuery, LimitQuery, service_context, tenant_router
from argosy.service import models

router = tenant_router("models")

ModelPath = Annotated[str, Path(pattern=api.NAME_PATTERN, description="the model's name")]
AliasPath = Annotated[
    str, Path(pattern=api.ALIAS_PATTERN, description="an alias, e.g. staging or production")
]
VersionRefPath = Annotated[
    str,
    Path(
        pattern=r"^([0-9]{1,9}|[a-z][a-z0-9_-]{0,62})$",
        description="a version number, an alias, or latest",
    ),
]
ReasonQuery = Annotated[str | None, Query(max_length=2000, description="why (kept in the history)")]


@router.post(
    "/models/{model}/versions",
    response_model=api.ModelVersionRegistered,
    status_code=201,
    summary="Register a model version",
    responses={
        200: {"model": api.ModelVersionRegistered, "description": "already registered"},
        **problem_responses(404, 409, 422),
    },
)
def register_version(
    model: ModelPath,
    body: api.ModelVersionCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_WRITE)],
    context: ContextDep,
    response: Response,
) -> api.ModelVersionRegistered:
    """A run's artifact as the next version of ``model`` (201; the model is created on first
    use), or its existing version (200) when it was registered before."""
    registered = models.register(service_context(context, tenant, principal), model, body)
    response.status_code = 201 if registered.created else 200
    return registered


@router.get(
    "/models",
    response_model=api.Page[api.Model],
    summary="List models",
    responses=problem_responses(),
)
def list_models(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.Model]:
    return models.list_models(
        service_context(context, tenant, principal), limit=limit, cursor=cursor
    )


@router.get(
    "/models/{model}",
    response_model=api.Model,
    summary="Get a model",
    responses=problem_responses(404),
)
def get_model(
    model: ModelPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
) -> api.Model:
    return models.get_model(service_context(context, tenant, principal), model)


@router.get(
    "/models/{model}/versions",
    response_model=api.Page[api.ModelVersion],
    summary="List a model's versions",
    responses=problem_responses(404),
)
def list_versions(
    model: ModelPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.ModelVersion]:
    return models.list_versions(
        service_context(context, tenant, principal), model, limit=limit, cursor=cursor
    )


@router.get(
    "/models/{model}/versions/{ref}",
    response_model=api.ModelVersion,
    summary="Get a model version",
    responses=problem_responses(404),
)
def get_version(
    model: ModelPath,
    ref: VersionRefPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
) -> api.ModelVersion:
    """A version by number, by alias, or ``latest``."""
    return models.get_version(service_context(context, tenant, principal), model, ref)


@router.put(
    "/models/{model}/aliases/{alias}",
    response_model=api.AliasEvent,
    summary="Promote a version to an alias",
    responses=problem_responses(404, 422),
)
def promote(
    model: ModelPath,
    alias: AliasPath,
    body: api.ModelPromote,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_PROMOTE)],
    context: ContextDep,
) -> api.AliasEvent:
    """Point ``alias`` at ``version``; the move (from which version, who, when, why) is kept."""
    return models.promote(service_context(context, tenant, principal), model, alias, body)


@router.delete(
    "/models/{model}/aliases/{alias}",
    response_model=api.AliasEvent,
    summary="Demote: remove an alias",
    responses=problem_responses(404),
)
def demote(
    model: ModelPath,
    alias: AliasPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_PROMOTE)],
    context: ContextDep,
    reason: ReasonQuery = None,
) -> api.AliasEvent:
    return models.demote(service_context(context, tenant, principal), model, alias, reason)


@router.get(
    "/models/{model}/aliases/{alias}",
    response_model=api.AliasState,
    summary="Which version an alias points at (now, or at a time)",
    responses=problem_responses(404),
)
def alias_at(
    model: ModelPath,
    alias: AliasPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
    at: Annotated[datetime | None, Query(description="a time (ISO 8601); default: now")] = None,
) -> api.AliasState:
    """What the alias pointed at, at ``at``: "what was in production on the 3rd?"."""
    return models.alias_at(service_context(context, tenant, principal), model, alias, at)


@router.get(
    "/models/{model}/history",
    response_model=api.Page[api.AliasEvent],
    summary="A model's promotions and demotions",
    responses=problem_responses(404),
)
def history(
    model: ModelPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
    alias: Annotated[str | None, Query(pattern=api.ALIAS_PATTERN)] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> api.Page[api.AliasEvent]:
    """Every alias move, newest first (of one alias with ``alias``)."""
    return models.history(
        service_context(context, tenant, principal), model, alias=alias, limit=limit, cursor=cursor
    )
