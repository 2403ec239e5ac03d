"""A tenant's API tokens (for CI and service accounts): create (shown once), list, revoke.

Owners manage them. A token's role is never above its creator's role in the tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Path, Request

from argosy import api
from argosy.auth import tokens
from argosy.auth.policy import Action, Decision, Role
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import must_utc, tenant_router, utc
from argosy.stores.metadata.tables import ApiToken

router = tenant_router("tokens")

TokenIdPath = Annotated[
    str, Path(min_length=26, max_length=26, pattern=r"^[0-9A-Z]+$", description="a token id")
]


def token_document(row: ApiToken) -> api.ApiToken:
    return api.ApiToken(
        id=row.id, name=row.name, role=row.role, prefix=row.prefix,  # type: ignore[arg-type]
        created_at=must_utc(row.created_at), created_by=row.created_by,
        expires_at=must_utc(row.expires_at), revoked_at=utc(row.revoked_at),
        last_used_at=utc(row.last_used_at),
    )  # fmt: skip


@router.post(
    "/tokens", response_model=api.ApiTokenCreated, status_code=201,
    summary="Create an API token (shown once)", responses=problem_responses(401, 403, 404),
)  # fmt: skip
def create_token(
    body: api.ApiTokenCreate,
    tenant: TenantDep,
    request: Request,
    principal: Annotated[Principal, Allowed(Action.TOKEN_WRITE)],
    context: ContextDep,
) -> api.ApiTokenCreated:
    """A token with ``role`` in this tenant until ``expires_in_days``; its value is in this
    answer only. The role may not exceed the creator's."""
    decision: Decision = request.state.decision
    creator_role: Role | None = decision.role
    if principal.platform_admin or principal.kind == "local":
        creator_role = None
    with context.metadata.session() as s:
        row, token = tokens.create_token(
            s, tenant=tenant, name=body.name, role=Role.parse(body.role),
            lifetime=timedelta(days=body.expires_in_days), created_by=principal.subject,
            creator_role=creator_role, now=datetime.now(UTC),
        )  # fmt: skip
        return api.ApiTokenCreated(**token_document(row).model_dump(), token=token)


@router.get(
    "/tokens", response_model=list[api.ApiToken], summary="List API tokens",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def list_tokens(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TOKEN_READ)],
    context: ContextDep,
) -> list[api.ApiToken]:
    """The tenant's tokens (never their values), newest first."""
    with context.metadata.session() as s:
        return [token_document(r) for r in tokens.list_tokens(s, tenant)]


@router.delete(
    "/tokens/{token_id}", response_model=api.ApiToken, summary="Revoke an API token",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def revoke_token(
    token_id: TokenIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TOKEN_WRITE)],
    context: ContextDep,
) -> api.ApiToken:
    """The token is refused from its next request on (idempotent)."""
    with context.metadata.session() as s:
        return token_document(tokens.revoke_token(s, tenant, token_id, datetime.now(UTC)))
