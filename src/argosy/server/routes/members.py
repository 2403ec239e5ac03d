"""A tenant's members: role bindings naming a user (its subject claim) or an IdP group.

Owners list, add and remove them. Group bindings make the identity provider the source of
truth: a user added to a bound group has the role at their next token, with no change here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Response

from argosy import api
from argosy.auth import bindings as tb
from argosy.auth.policy import Action, Role
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import must_utc, tenant_router
from argosy.stores.metadata.tables import RoleBinding

router = tenant_router("members")

BindingIdPath = Annotated[
    str, Path(min_length=26, max_length=26, pattern=r"^[0-9A-Z]+$", description="a binding id")
]


def member_document(row: RoleBinding) -> api.Member:
    return api.Member(
        id=row.id, role=row.role, subject_kind=row.subject_kind,  # type: ignore[arg-type]
        subject=row.subject, created_at=must_utc(row.created_at), created_by=row.created_by,
    )  # fmt: skip


@router.get(
    "/members", response_model=list[api.Member], summary="List role bindings",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def list_members(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MEMBER_READ)],
    context: ContextDep,
) -> list[api.Member]:
    with context.metadata.session() as s:
        return [member_document(r) for r in tb.list_binding_rows(s, tenant)]


@router.post(
    "/members", response_model=api.Member, status_code=201, summary="Add a role binding",
    responses=problem_responses(401, 403, 404, 409),
)  # fmt: skip
def add_member(
    body: api.MemberCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MEMBER_WRITE)],
    context: ContextDep,
) -> api.Member:
    """Give a user or a group a role in the tenant (idempotent)."""
    with context.metadata.session() as s:
        row = tb.add_binding(
            s, tenant, role=Role.parse(body.role), subject_kind=body.subject_kind,
            subject=body.subject, created_by=principal.subject, now=datetime.now(UTC),
        )  # fmt: skip
        return member_document(row)


@router.delete(
    "/members/{binding_id}", status_code=204, summary="Remove a role binding",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def remove_member(
    binding_id: BindingIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.MEMBER_WRITE)],
    context: ContextDep,
) -> Response:
    """The binding's subject loses the role at its next request."""
    with context.metadata.session() as s:
        tb.delete_binding(s, tenant, binding_id)
    return Response(status_code=204)
