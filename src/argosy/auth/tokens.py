"""API tokens for CI and service accounts: a role in one tenant until an expiry.

A token is ``argosy_`` followed by 32 random bytes (URL-safe base64). It is shown once, at
creation; only its sha256 is stored (``ApiToken.token_hash``), with its first 12 characters
(``prefix``) so people can recognise it in a list. Used as a bearer token it authenticates
the service principal ``token:<id>`` in its one tenant.

**Authority is transitive and live.** A token may be created by a user or by another token
(``created_by`` is then ``token:<id>``): its *chain* runs from it through the tokens that
minted it up to one user. At every use the whole chain is checked — each token unrevoked,
unexpired and of the same tenant, the user not deactivated — and the token acts with the
lowest role along it: its own role, each parent's role, and the user's role in the tenant
*now* (:mod:`argosy.auth.standing`). So deactivating a user voids every token in their chains,
demoting them lowers what those tokens may do, and revoking a token voids what it minted
(:func:`revoke_token` also marks those revoked), all from the next request on. A chain whose
user has no role left still authenticates, with no role (403 on every tenant action).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from argosy.auth.policy import Role
from argosy.auth.principal import Principal
from argosy.auth.standing import Admins, current_role
from argosy.errors import NotFoundError, UsageError
from argosy.ids import new_id
from argosy.stores.metadata.tables import ApiToken, User

TOKEN_PREFIX = "argosy_"
PREFIX_LENGTH = 12
MAX_LIFETIME = timedelta(days=365)
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_CHAIN = 16  # tokens minted by tokens, at most this deep (longer chains are refused)
TOKEN_SUBJECT = "token:"


class InvalidApiToken(Exception):
    """An API token that authenticates no one; the message says why."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_api_token(bearer: str) -> bool:
    return bearer.startswith(TOKEN_PREFIX)


def parse_lifetime(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m`` or a number of days -> a lifetime (at most 365 days)."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    value = text.strip().lower()
    try:
        if value and value[-1] in units:
            seconds = float(value[:-1]) * units[value[-1]]
        else:
            seconds = float(value) * 86400
    except ValueError:
        raise UsageError(f"invalid expiry {text!r}; write e.g. 30d, 12h or 90m") from None
    lifetime = timedelta(seconds=seconds)
    check_lifetime(lifetime)
    return lifetime


def check_lifetime(lifetime: timedelta) -> None:
    if lifetime <= timedelta(0):
        raise UsageError("a token's expiry must be in the future; write e.g. 30d")
    if lifetime > MAX_LIFETIME:
        raise UsageError("a token may live at most 365 days; choose a shorter expiry")


def create_token(
    session: Session,
    *,
    tenant: str,
    name: str,
    role: Role,
    lifetime: timedelta,
    created_by: str,
    creator_role: Role | None,
    now: datetime,
) -> tuple[ApiToken, str]:
    """A new token row and the token itself (the only time it exists in clear).

    ``creator_role``: the creator's role in ``tenant`` (None: unlimited, a platform admin or
    local mode). A token never carries a role above its creator's."""
    check_lifetime(lifetime)
    if creator_role is not None and role > creator_role:
        raise UsageError(
            f"you are {creator_role.name} in tenant {tenant!r} and cannot create a token with "
            f"the {role.name} role; choose {creator_role.name} or lower"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=new_id(), tenant=tenant, created_at=now, created_by=created_by, name=name,
        role=role.name, token_hash=hash_token(token), prefix=token[:PREFIX_LENGTH],
        expires_at=now + lifetime, revoked_at=None, last_used_at=None,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row, token


def list_tokens(session: Session, tenant: str) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.tenant == tenant).order_by(ApiToken.id.desc())
        )
    )


def revoke_token(session: Session, tenant: str, token_id: str, now: datetime) -> ApiToken:
    row = session.scalar(select(ApiToken).where(ApiToken.tenant == tenant, ApiToken.id == token_id))
    if row is None:
        raise NotFoundError(
            f"no API token {token_id!r} in tenant {tenant!r}; see 'argosy tokens list'"
        )
    if row.revoked_at is None:
        row.revoked_at = now
    revoke_minted(session, [row.id], now)
    return row


def revoke_minted(session: Session, token_ids: list[str], now: datetime) -> int:
    """Revoke every token minted, directly or not, by ``token_ids``; how many were revoked.
    (A minted token is refused anyway once a parent is revoked: this keeps lists truthful.)"""
    revoked = 0
    frontier = [TOKEN_SUBJECT + i for i in token_ids]
    for _ in range(MAX_CHAIN):
        if not frontier:
            break
        children = list(session.scalars(select(ApiToken).where(ApiToken.created_by.in_(frontier))))
        for child in children:
            if child.revoked_at is None:
                child.revoked_at = now
                revoked += 1
        frontier = [TOKEN_SUBJECT + c.id for c in children]
    session.flush()
    return revoked


def _check_link(row: ApiToken, now: datetime, *, of: ApiToken) -> None:
    """Raise unless ``row`` (``of`` itself or one of its parents) is live."""
    whose = f" (token {row.prefix}... of the chain that created it "
    if row.revoked_at is not None:
        if row is of:
            raise InvalidApiToken(f"API token {row.prefix}... was revoked; create a new one")
        raise InvalidApiToken(f"API token {of.prefix}... is void{whose}was revoked)")
    expires = _utc(row.expires_at)
    assert expires is not None
    if expires <= now:
        if row is of:
            raise InvalidApiToken(
                f"API token {row.prefix}... expired at {expires:%Y-%m-%d %H:%M} UTC"
            )
        raise InvalidApiToken(f"API token {of.prefix}... is void{whose}has expired)")
    if row.tenant != of.tenant:
        raise InvalidApiToken(f"API token {of.prefix}... is void{whose}is of another tenant)")


def chain_role(session: Session, row: ApiToken, now: datetime, admins: Admins) -> Role | None:
    """The role ``row`` may act with now: the lowest along its chain (None: no role left).
    Raises :class:`InvalidApiToken` if any token of the chain is revoked or expired, the chain
    is too long or broken, or its user is deactivated."""
    role: Role | None = Role.parse(row.role)
    link = row
    seen = {row.id}
    while True:
        _check_link(link, now, of=row)
        if role is not None:
            role = min(role, Role.parse(link.role))
        creator = link.created_by
        if not creator.startswith(TOKEN_SUBJECT):
            break
        parent = session.get(ApiToken, creator.removeprefix(TOKEN_SUBJECT))
        if parent is None or parent.id in seen or len(seen) >= MAX_CHAIN:
            raise InvalidApiToken(
                f"API token {row.prefix}... is void (the token that created it is gone)"
            )
        seen.add(parent.id)
        link = parent
    active = session.scalar(select(User.active).where(User.external_id == creator))
    if active is False:
        raise InvalidApiToken(f"API token {row.prefix}... belongs to a deactivated user")
    standing = current_role(session, creator, row.tenant, admins)
    if standing is None or role is None:
        return None
    return min(role, standing)


def resolve(
    session: Session, bearer: str, now: datetime, admins: Admins | None = None
) -> Principal:
    """The service principal of a valid API token, with the role its chain allows now;
    :class:`InvalidApiToken` otherwise. ``admins``: who counts as a platform admin."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(bearer)))
    if row is None:
        raise InvalidApiToken("unknown API token; create one with 'argosy tokens create'")
    role = chain_role(session, row, now, admins or Admins())
    last = _utc(row.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return Principal(
        subject=f"{TOKEN_SUBJECT}{row.id}",
        name=f"token {row.name} ({row.prefix}...)",
        kind="service",
        token_tenant=row.tenant,
        token_role=role.name if role is not None else None,
    )
