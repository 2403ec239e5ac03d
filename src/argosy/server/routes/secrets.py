"""A tenant's secrets: owners set and delete them; nobody reads a value back.

Steps that declare a secret (``@step(secrets=["HF_TOKEN"])``) receive it as an environment
variable when they run on the server; the value is encrypted at rest under the tenant's data
key and redacted from captured logs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import must_utc, tenant_router
from argosy.stores.metadata.tables import Secret
from argosy.stores.secrets import NAME_PATTERN, TenantSecrets

router = tenant_router("secrets")

SecretNamePath = Annotated[
    str, Path(pattern=NAME_PATTERN, description="an environment-variable name, e.g. HF_TOKEN")
]


def secret_document(row: Secret) -> api.SecretInfo:
    return api.SecretInfo(
        name=row.name, created_at=must_utc(row.created_at), created_by=row.created_by,
        updated_at=must_utc(row.updated_at), updated_by=row.updated_by,
    )  # fmt: skip


def _secrets(context: ContextDep) -> TenantSecrets:
    return TenantSecrets(context.metadata, context.tenant_keys())


@router.put(
    "/secrets/{name}", response_model=api.SecretInfo, summary="Set a secret (create or replace)",
    responses=problem_responses(401, 403, 404, 422),
)  # fmt: skip
def set_secret(
    name: SecretNamePath,
    body: api.SecretSet,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SECRET_WRITE)],
    context: ContextDep,
) -> api.SecretInfo:
    """Store ``value`` encrypted; the answer has the name and times only."""
    return secret_document(_secrets(context).put(tenant, name, body.value, principal.subject))


@router.get(
    "/secrets", response_model=list[api.SecretInfo], summary="List secrets (names only)",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def list_secrets(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SECRET_READ)],
    context: ContextDep,
) -> list[api.SecretInfo]:
    return [secret_document(r) for r in _secrets(context).list(tenant)]


@router.delete(
    "/secrets/{name}", status_code=204, summary="Delete a secret",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def delete_secret(
    name: SecretNamePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.SECRET_WRITE)],
    context: ContextDep,
) -> Response:
    _secrets(context).delete(tenant, name)
    return Response(status_code=204)
