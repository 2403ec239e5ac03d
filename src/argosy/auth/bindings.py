"""Tenants and their role bindings, as rows: what the policy function reads and the tenant
and member routes change.

A tenant's ``name`` is an immutable DNS-1123 label (it prefixes artifact keys and becomes a
Kubernetes namespace ``argosy-<tenant>``). Archived tenants stay readable and refuse writes.
Bindings are read from the database at every request (one indexed query): a binding removed
takes effect at the caller's next request, on every server instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy.auth.policy import Binding, Role
from argosy.auth.principal import Principal
from argosy.errors import ConflictError, NotFoundError, UsageError
from argosy.ids import new_id
from argosy.stores.metadata.tables import RoleBinding, Tenant

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBJECT_KINDS = ("user", "group")


def check_tenant_name(name: str) -> str:
    if not DNS_LABEL.match(name):
        raise UsageError(
            f"invalid tenant name {name!r}: use a DNS-1123 label (at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit)"
        )
    return name


def get_tenant(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def create_tenant(
    session: Session, name: str, *, display_name: str | None, created_by: str, now: datetime
) -> Tenant:
    check_tenant_name(name)
    if get_tenant(session, name) is not None:
        raise ConflictError(f"tenant {name!r} already exists; tenant names are unique")
    row = Tenant(
        id=new_id(), tenant=name, name=name, display_name=display_name, created_at=now,
        created_by=created_by, archived_at=None, settings={}, quotas=None,
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(row)
    except DbIntegrityError:
        raise ConflictError(f"tenant {name!r} already exists; tenant names are unique") from None
    return row


def list_tenants(session: Session, names: Iterable[str] | None = None) -> list[Tenant]:
    """All tenants (``names``: only these), by name."""
    query = select(Tenant).order_by(Tenant.name)
    if names is not None:
        query = query.where(Tenant.name.in_(list(names)))
    return list(session.scalars(query))


def archive_tenant(session: Session, name: str, now: datetime) -> Tenant:
    row = get_tenant(session, name)
    if row is None:
        raise NotFoundError(f"no tenant {name!r}; see 'argosy tenants list'")
    if name == "default":
        raise ConflictError("the default tenant cannot be archived")
    if row.archived_at is None:
        row.archived_at = now
    return row


def load_bindings(session: Session, tenant: str) -> list[Binding]:
    rows = session.execute(
        select(RoleBinding.role, RoleBinding.subject_kind, RoleBinding.subject).where(
            RoleBinding.tenant == tenant
        )
    )
    return [Binding(role, kind, subject) for role, kind, subject in rows]


def list_binding_rows(session: Session, tenant: str) -> list[RoleBinding]:
    return list(
        session.scalars(
            select(RoleBinding).where(RoleBinding.tenant == tenant).order_by(RoleBinding.id)
        )
    )


def add_binding(
    session: Session,
    tenant: str,
    *,
    role: Role,
    subject_kind: str,
    subject: str,
    created_by: str,
    now: datetime,
) -> RoleBinding:
    if subject_kind not in SUBJECT_KINDS:
        raise UsageError(f"subject_kind must be user or group, not {subject_kind!r}")
    if not subject.strip():
        raise UsageError("name the user (its subject claim) or the group to bind")
    existing = session.scalar(
        select(RoleBinding).where(
            RoleBinding.tenant == tenant, RoleBinding.role == role.name,
            RoleBinding.subject_kind == subject_kind, RoleBinding.subject == subject,
        )
    )  # fmt: skip
    if existing is not None:
        return existing
    row = RoleBinding(
        id=new_id(), tenant=tenant, created_at=now, created_by=created_by, role=role.name,
        subject_kind=subject_kind, subject=subject,
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(row)
    except DbIntegrityError:
        raise ConflictError(f"{subject_kind} {subject!r} is already {role.name}") from None
    return row


def delete_binding(session: Session, tenant: str, binding_id: str) -> RoleBinding:
    row = session.scalar(
        select(RoleBinding).where(RoleBinding.tenant == tenant, RoleBinding.id == binding_id)
    )
    if row is None:
        raise NotFoundError(
            f"no role binding {binding_id!r} in tenant {tenant!r}; see 'argosy members list'"
        )
    session.delete(row)
    return row


def roles_of(session: Session, principal: Principal) -> dict[str, Role]:
    """Every tenant where ``principal`` has a role, with its highest role there."""
    if principal.anonymous:
        return {}
    if principal.kind == "service":
        if principal.token_tenant and principal.token_role:
            return {principal.token_tenant: Role.parse(principal.token_role)}
        return {}
    conditions = [(RoleBinding.subject_kind == "user") & (RoleBinding.subject == principal.subject)]
    if principal.groups:
        conditions.append(
            (RoleBinding.subject_kind == "group") & RoleBinding.subject.in_(principal.groups)
        )
    found: dict[str, Role] = {}
    for tenant, role in session.execute(
        select(RoleBinding.tenant, RoleBinding.role).where(or_(*conditions))
    ):
        r = Role.parse(role)
        if tenant not in found or r > found[tenant]:
            found[tenant] = r
    return found
