"""A user's standing now, when the user is not the one calling: what their API tokens may do.

An API token acts for the user who created it (directly, or through the tokens that minted it),
so its authority is checked against that user's *current* role at every use, not the role the
user had when the token was made. The user is not in the request, so their groups come from
what the server last knew of them:

- with SCIM configured and the user provisioned by it: the SCIM groups holding the user (a
  group is named by its ``displayName`` and its ``externalId``);
- otherwise: the groups of the user's latest login or access token seen by this deployment
  (:class:`~argosy.stores.metadata.tables.KnownGroups`, written by :func:`remember_groups`).

A user's role in a tenant is then the highest role of the bindings naming the user or one of
those groups; a platform admin (by subject, or by one of those groups) counts as owner. A user
deactivated by SCIM has no standing at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from argosy.auth.policy import Role
from argosy.stores.metadata.tables import KnownGroups, RoleBinding, ScimGroup, User


@dataclass(frozen=True)
class Admins:
    """Who is a platform admin (the server's settings) and whether SCIM manages users."""

    users: Collection[str] = ()
    groups: Collection[str] = ()
    scim: bool = False


def remember_groups(session: Session, subject: str, groups: Iterable[str], now: datetime) -> None:
    """Record ``groups`` as the latest known groups of ``subject`` (written only on change)."""
    wanted = sorted(set(groups))
    row = session.get(KnownGroups, subject)
    if row is None:
        session.add(KnownGroups(subject=subject, groups=wanted, seen_at=now))
    elif list(row.groups or []) != wanted:
        row.groups = wanted
        row.seen_at = now


def known_groups(session: Session, subject: str, *, scim: bool) -> tuple[str, ...] | None:
    """The groups the server last knew for ``subject``; None if the user is deactivated."""
    user = session.scalar(select(User).where(User.external_id == subject))
    if user is not None and not user.active:
        return None
    if scim and user is not None:
        names: set[str] = set()
        for name, external, members in session.execute(
            select(ScimGroup.display_name, ScimGroup.external_id, ScimGroup.members)
        ):
            if user.id in (members or []):
                names.add(name)
                if external:
                    names.add(external)
        return tuple(sorted(names))
    row = session.get(KnownGroups, subject)
    return tuple(row.groups or ()) if row is not None else ()


def current_role(session: Session, subject: str, tenant: str, admins: Admins) -> Role | None:
    """``subject``'s role in ``tenant`` now (owner for a platform admin); None: no access
    (no binding, or deactivated)."""
    groups = known_groups(session, subject, scim=admins.scim)
    if groups is None:
        return None
    if subject in admins.users or set(groups) & set(admins.groups):
        return Role.owner
    conditions = [(RoleBinding.subject_kind == "user") & (RoleBinding.subject == subject)]
    if groups:
        conditions.append(
            (RoleBinding.subject_kind == "group") & RoleBinding.subject.in_(list(groups))
        )
    roles = session.scalars(
        select(RoleBinding.role).where(RoleBinding.tenant == tenant, or_(*conditions))
    )
    found = [Role.parse(r) for r in roles]
    return max(found) if found else None
