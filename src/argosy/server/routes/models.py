"""The model registry (:mod:`argosy.service.models`): register a run's artifact as a model
version, read models and versions, move aliases (promote, demote) and read their history;
promotion requests for aliases the tenant's policy reserves for approval
(:mod:`argosy.service.promotions`).

Registering and moving aliases need the editor role (``model.write``, ``model.promote``);
reading needs viewer; deciding a promotion request and setting the policy need owner
(``model.approve``, ``tenant.settings.write``), and the requester never decides their own.
Every change is in the audit log (the middleware records it) and, with who, when and why, in
the model's alias history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query, Response
from fastapi.responses import JSONResponse

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import CursorQuery, LimitQuery, service_context, tenant_router
from argosy.service import models, promotions

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
RequestIdPath = Annotated[str, Path(min_length=26, max_length=26, pattern=r"^[0-9A-Z]+$")]
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
    responses={
        202: {"model": api.PromotionRequest, "description": "the alias needs approval: a "
              "pending request another owner decides"},
        **problem_responses(404, 422),
    },
)  # fmt: skip
def promote(
    model: ModelPath,
    alias: AliasPath,
    body: api.ModelPromote,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_PROMOTE)],
    context: ContextDep,
) -> api.AliasEvent | JSONResponse:
    """Point ``alias`` at ``version``; the move (from which version, who, when, why) is kept.
    An alias the tenant's promotion policy reserves answers 202 with a pending request."""
    done = promotions.promote(
        service_context(context, tenant, principal), model, alias, body, context.clock.now()
    )
    if isinstance(done, api.PromotionRequest):
        return JSONResponse(done.model_dump(mode="json"), status_code=202)
    return done


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


# -- promotion requests and the policy ----------------------------------------------------------
@router.get(
    "/promotions",
    response_model=list[api.PromotionRequest],
    summary="Promotion requests",
    responses=problem_responses(),
)
def list_promotions(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
    state: Annotated[str | None, Query(pattern="^(pending|approved|denied|expired)$")] = None,
) -> list[api.PromotionRequest]:
    """Newest first; undecided requests past their deadline read ``expired``."""
    return promotions.list_requests(
        service_context(context, tenant, principal), context.clock.now(), state
    )


@router.get(
    "/promotions/{request_id}",
    response_model=api.PromotionRequest,
    summary="Get a promotion request",
    responses=problem_responses(404),
)
def get_promotion(
    request_id: RequestIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
) -> api.PromotionRequest:
    return promotions.get(
        service_context(context, tenant, principal), request_id, context.clock.now()
    )


@router.post(
    "/promotions/{request_id}/decision",
    response_model=api.PromotionRequest,
    summary="Approve or deny a promotion request",
    responses=problem_responses(404, 409),
)
def decide_promotion(
    request_id: RequestIdPath,
    body: api.PromotionDecision,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_APPROVE)],
    context: ContextDep,
) -> api.PromotionRequest:
    """Owners other than the requester: approving moves the alias at once (its history names
    the requester and the approver); denying moves nothing."""
    return promotions.decide(
        service_context(context, tenant, principal), request_id, body, context.clock.now()
    )


@router.get(
    "/promotion-policy",
    response_model=api.PromotionPolicy,
    summary="Which aliases need an approved request",
    responses=problem_responses(),
)
def get_promotion_policy(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MODEL_READ)],
    context: ContextDep,
) -> api.PromotionPolicy:
    return promotions.get_policy(service_context(context, tenant, principal))


@router.put(
    "/promotion-policy",
    response_model=api.PromotionPolicy,
    summary="Set which aliases need an approved request",
    responses=problem_responses(422),
)
def set_promotion_policy(
    body: api.PromotionPolicyUpdate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_SETTINGS_WRITE)],
    context: ContextDep,
) -> api.PromotionPolicy:
    """The fields given replace the tenant's (``approval: []``: every alias moves at once)."""
    return promotions.set_policy(service_context(context, tenant, principal), body)
