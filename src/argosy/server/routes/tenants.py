"""Tenants (create, list, describe, archive, settings) and ``/me`` (who the caller is).

Creating and archiving tenants is for platform admins; listing shows a platform admin every
tenant and anyone else the tenants where they have a role; a tenant's settings are its
owners'. A tenant's name is immutable; archived tenants stay readable and refuse writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter

from argosy import api
from argosy.auth import bindings as tb
from argosy.auth.policy import Action, Role
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import must_utc, utc
from argosy.stores.metadata.tables import Tenant

router = APIRouter(prefix=f"{api.API_PREFIX}/tenants", tags=["tenants"])
me_router = APIRouter(prefix=api.API_PREFIX, tags=["tenants"])


def tenant_document(row: Tenant, role: Role | None = None) -> api.Tenant:
    return api.Tenant(
        name=row.name, display_name=row.display_name, archived=row.archived_at is not None,
        archived_at=utc(row.archived_at), settings=row.settings or {}, quotas=row.quotas or {},
        created_at=must_utc(row.created_at), created_by=row.created_by,
        role=role.name if role is not None else None,  # type: ignore[arg-type]
    )  # fmt: skip


def _sees_all(principal: Principal) -> bool:
    return principal.platform_admin or principal.kind == "local"


@router.post(
    "", response_model=api.Tenant, status_code=201, summary="Create a tenant (platform admins)",
    responses=problem_responses(401, 403, 409),
)  # fmt: skip
def create_tenant(
    body: api.TenantCreate,
    principal: Annotated[Principal, Allowed(Action.TENANT_CREATE)],
    context: ContextDep,
) -> api.Tenant:
    """A new tenant named by a DNS-1123 label (immutable); add its owners with members."""
    with context.metadata.session() as s:
        row = tb.create_tenant(
            s, body.name, display_name=body.display_name, created_by=principal.subject,
            now=datetime.now(UTC),
        )  # fmt: skip
        return tenant_document(row)


@router.get(
    "", response_model=list[api.Tenant], summary="List tenants",
    responses=problem_responses(401),
)  # fmt: skip
def list_tenants(
    principal: Annotated[Principal, Allowed(Action.AUTHENTICATED)], context: ContextDep
) -> list[api.Tenant]:
    """Platform admins: every tenant; anyone else: the tenants where they have a role."""
    with context.metadata.session() as s:
        roles = tb.roles_of(s, principal)
        rows = tb.list_tenants(s, None if _sees_all(principal) else roles)
        return [tenant_document(r, roles.get(r.name)) for r in rows]


@router.get(
    "/{tenant}", response_model=api.Tenant, summary="Describe a tenant",
    responses=problem_responses(401, 403, 404),
)  # fmt: skip
def get_tenant(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_READ)],
    context: ContextDep,
) -> api.Tenant:
    with context.metadata.session() as s:
        row = tb.get_tenant(s, tenant)
        assert row is not None  # authorized() answered 403/404 otherwise
        return tenant_document(row, tb.roles_of(s, principal).get(tenant))


@router.post(
    "/{tenant}/archive", response_model=api.Tenant, summary="Archive a tenant (platform admins)",
    responses=problem_responses(401, 403, 404, 409),
)  # fmt: skip
def archive_tenant(
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_ARCHIVE)],
    context: ContextDep,
) -> api.Tenant:
    """Make the tenant read-only (idempotent); its data stays."""
    with context.metadata.session() as s:
        return tenant_document(tb.archive_tenant(s, tenant, datetime.now(UTC)))


@router.patch(
    "/{tenant}/settings", response_model=api.Tenant, summary="Change a tenant's settings",
    responses=problem_responses(401, 403, 404, 409),
)  # fmt: skip
def update_settings(
    body: api.TenantSettingsUpdate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_SETTINGS_WRITE)],
    context: ContextDep,
) -> api.Tenant:
    """Merge ``settings`` into the tenant's (owners); a ``null`` value removes a key."""
    with context.metadata.session() as s:
        row = tb.get_tenant(s, tenant)
        assert row is not None
        merged = dict(row.settings or {})
        for key, value in body.settings.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        row.settings = merged
        if body.display_name is not None:
            row.display_name = body.display_name
        return tenant_document(row)


@router.put(
    "/{tenant}/quotas", response_model=api.Tenant, summary="Set a tenant's quotas",
    responses=problem_responses(401, 403, 404, 409),
)  # fmt: skip
def set_quotas(
    body: api.TenantQuotas,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.TENANT_QUOTAS_WRITE)],
    context: ContextDep,
) -> api.Tenant:
    """Replace the tenant's quotas (platform admins): running tasks, CPU, memory, GPUs in use
    at once. This instance applies them at once, the others within one heartbeat."""
    with context.metadata.session() as s:
        row = tb.get_tenant(s, tenant)
        assert row is not None
        row.quotas = body.model_dump(exclude_none=True) or None
        document = tenant_document(row)
    if context.coordinator is not None:
        context.coordinator.refresh_tenants()
    return document


@me_router.get("/me", response_model=api.Me, summary="Who am I", responses=problem_responses(401))
def me(
    principal: Annotated[Principal, Allowed(Action.AUTHENTICATED)], context: ContextDep
) -> api.Me:
    """The caller: subject, name, groups, platform admin, and its role in each tenant."""
    with context.metadata.session() as s:
        roles = tb.roles_of(s, principal)
    return api.Me(
        subject=principal.subject, name=principal.name, kind=principal.kind,
        groups=list(principal.groups), platform_admin=principal.platform_admin,
        roles={t: r.name for t, r in sorted(roles.items())},  # type: ignore[misc]
        insecure=principal.kind == "local",
    )  # fmt: skip
