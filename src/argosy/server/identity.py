"""Who is calling, and may they: the dependencies every API route uses.

:func:`current_principal` turns the request's bearer token into a :class:`Principal`:

- an API token (``argosy_...``): the service principal ``token:<id>`` with its one tenant
  and the lowest role along its chain now (:mod:`argosy.auth.tokens`);
- anything else: an OIDC access token, verified against the issuer (:mod:`argosy.auth.oidc`);
  a user whose SCIM ``User`` row is inactive is refused; a subject in
  ``platform_admin_users`` or a group in ``platform_admin_groups`` is a platform admin; the
  token's groups are remembered as the user's latest known groups
  (:mod:`argosy.auth.standing`: what the user's API tokens are checked against);
- no token but a browser session cookie (``argosy_session``, set by ``/auth/callback``): the
  user stored with the session (:class:`BrowserSession`, looked up by the cookie's sha256;
  revoked, expired or of a deactivated user: anonymous). A state-changing request (POST, PUT,
  PATCH, DELETE) authenticated by the cookie must carry ``X-CSRF-Token`` equal to the
  ``argosy_csrf`` cookie and to the session's token (double submit), else 403; bearer
  requests are not subject to CSRF;
- no token: :data:`ANONYMOUS`.

With ``insecure_dev`` every request is the local principal (the server's ``settings.user``),
which may do anything; the server announces it in its log and in an ``X-Argosy-Insecure``
header on every response.

:func:`authorized` is the ONE authorization dependency: every route declares its
:class:`Action` through it (``principal: Annotated[Principal, Depends(authorized(A))]``).
Admission (:mod:`argosy.server.admission`) runs it before the request's body is read; the route
then reuses that decision (:func:`already_admitted`). It
resolves the tenant from the path, loads its role bindings and asks
:func:`argosy.auth.policy.authorize`; it answers 401 (no or invalid credentials, with
``WWW-Authenticate``) or 403 (problem+json with the decision's reason). An unknown tenant
looks exactly like a forbidden one (403) to anyone but a platform admin, who gets a 404.
Archived tenants refuse writes (409). Before answering, it stores ``request.state.principal``,
``request.state.action`` and ``request.state.decision`` (the audit log reads them), also on
denial. :func:`route_actions` lists each route's declared action (tests enumerate it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from argosy.auth import bindings as tb
from argosy.auth import tokens
from argosy.auth.oidc import InvalidToken, IssuerUnavailable, OidcVerifier
from argosy.auth.policy import MINIMUM_ROLE, Action, Decision, Role, authorize
from argosy.auth.principal import ANONYMOUS, Principal
from argosy.auth.standing import Admins, remember_groups
from argosy.server.context import ServerContext
from argosy.server.problems import ApiProblem
from argosy.stores.metadata.tables import BrowserSession, User

TENANT_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
INSECURE_HEADER = "X-Argosy-Insecure"
SESSION_COOKIE = "argosy_session"
CSRF_COOKIE = "argosy_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTION_ATTRIBUTE = "__argosy_action__"

log = logging.getLogger("argosy.server")

# documents bearer auth in OpenAPI; auto_error=False: a missing header means anonymous
_bearer = HTTPBearer(
    auto_error=False,
    description="an OIDC access token from the configured issuer, or an Argosy API token "
    "(argosy_...)",
)

READ_ACTIONS = frozenset(
    {a for a, r in MINIMUM_ROLE.items() if r is Role.viewer}
    | {Action.MEMBER_READ, Action.TOKEN_READ, Action.SECRET_READ, Action.AUDIT_READ,
       Action.AUDIT_READ_ALL, Action.TENANT_LIST_ALL, Action.PUBLIC, Action.AUTHENTICATED}
)  # fmt: skip
"""Actions that change nothing (allowed in archived tenants)."""


__all__ = [
    "ANONYMOUS",
    "ContextDep",
    "Principal",
    "TenantDep",
    "authorized",
    "context_of",
    "current_principal",
    "declares",
    "route_actions",
]


class Unauthenticated(ApiProblem):
    """401 with ``WWW-Authenticate: Bearer`` (RFC 6750)."""

    def __init__(self, detail: str, *, invalid: bool = True) -> None:
        quoted = detail.replace("\\", "\\\\").replace('"', "'")
        value = (
            f'Bearer error="invalid_token", error_description="{quoted}"'
            if invalid
            else 'Bearer realm="argosy"'
        )
        super().__init__(
            401, detail, code="invalid_token" if invalid else "unauthenticated",
            headers={"WWW-Authenticate": value},
        )  # fmt: skip


def context_of(request: Request) -> ServerContext:
    """The server's shared context (settings, database, stores, clock)."""
    context: ServerContext = request.app.state.context
    return context


_verifier_lock = threading.Lock()


def verifier_of(request: Request) -> OidcVerifier | None:
    """The app's OIDC verifier (created at first use; None without OIDC settings)."""
    state = request.app.state
    found: OidcVerifier | None = getattr(state, "oidc_verifier", None)
    if found is not None:
        return found
    settings = context_of(request).settings
    if not settings.oidc_issuer or not settings.oidc_audience:
        return None
    with _verifier_lock:
        found = getattr(state, "oidc_verifier", None)
        if found is None:
            found = OidcVerifier(settings)
            state.oidc_verifier = found
    return found


def admins_of(context: ServerContext) -> Admins:
    """Who is a platform admin, and whether SCIM manages users (for API token chains)."""
    s = context.settings
    return Admins(s.platform_admin_users, s.platform_admin_groups, scim=bool(s.scim_token))


def _is_admin(context: ServerContext, subject: str, groups: tuple[str, ...]) -> bool:
    s = context.settings
    return subject in s.platform_admin_users or bool(set(groups) & set(s.platform_admin_groups))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def session_principal(request: Request, cookie: str) -> Principal:
    """The user of a browser session cookie (anonymous when it is no live session); checks
    the CSRF token of state-changing requests (403)."""
    context = context_of(request)
    now = datetime.now(UTC)
    with context.metadata.session() as session:
        row = session.get(BrowserSession, sha256_hex(cookie))
        if row is None or not row.subject or "pending_login" in (row.claims or {}):
            return ANONYMOUS
        if row.revoked_at is not None or _utc(row.expires_at) <= now:
            return ANONYMOUS
        active = session.scalar(select(User.active).where(User.external_id == row.subject))
        subject, claims, csrf_hash = row.subject, dict(row.claims or {}), row.csrf_hash
    if active is False:
        return ANONYMOUS
    if request.method.upper() in CSRF_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        cookie_token = request.cookies.get(CSRF_COOKIE, "")
        if not (
            sent
            and hmac.compare_digest(sent.encode(), cookie_token.encode())
            and hmac.compare_digest(sha256_hex(sent), csrf_hash)
        ):
            raise ApiProblem(
                403, f"missing or wrong CSRF token: send the {CSRF_COOKIE} cookie's value in "
                f"the {CSRF_HEADER} header", code="csrf",
            )  # fmt: skip
    name = claims.get("name")
    groups = tuple(str(g) for g in claims.get("groups") or () if isinstance(g, str))
    return Principal(
        subject=subject, name=name if isinstance(name, str) and name else subject,
        kind="user", groups=groups, platform_admin=_is_admin(context, subject, groups),
        claims=claims,
    )  # fmt: skip


def resolve_principal(request: Request, bearer: str | None) -> Principal:
    """The caller of ``request`` (``bearer``: the token, if any); raises 401/403/503 problems."""
    context = context_of(request)
    settings = context.settings
    if settings.insecure_dev:
        return Principal(subject=settings.user, name=settings.user, kind="local")
    if not bearer:
        cookie = request.cookies.get(SESSION_COOKIE)
        return session_principal(request, cookie) if cookie else ANONYMOUS
    now = datetime.now(UTC)
    if tokens.is_api_token(bearer):
        try:
            with context.metadata.session() as session:
                return tokens.resolve(session, bearer, now, admins_of(context))
        except tokens.InvalidApiToken as exc:
            raise Unauthenticated(str(exc)) from None
    verifier = verifier_of(request)
    if verifier is None:
        raise Unauthenticated(
            "this server accepts only Argosy API tokens (no OIDC issuer is configured)"
        )
    try:
        token = verifier.verify(bearer)
    except InvalidToken as exc:
        raise Unauthenticated(str(exc)) from None
    except IssuerUnavailable as exc:
        log.warning("OIDC issuer unavailable: %s", exc)
        raise ApiProblem(
            503, "the identity provider cannot be reached to check the token; retry later",
            code="unavailable", headers={"Retry-After": "5"},
        ) from None  # fmt: skip
    with context.metadata.session() as session:
        active = session.scalar(select(User.active).where(User.external_id == token.subject))
        if active is not False:  # what the user's API tokens are checked against
            remember_groups(session, token.subject, token.groups, now)
    if active is False:
        raise Unauthenticated(f"user {token.subject!r} is deactivated")
    return Principal(
        subject=token.subject, name=token.name, kind="user", groups=token.groups,
        platform_admin=_is_admin(context, token.subject, token.groups), claims=token.claims,
    )  # fmt: skip


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    """The caller (see the module's documentation); cached on the request."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = resolve_principal(request, credentials.credentials if credentials else None)
    request.state.principal = principal
    return principal


async def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """The request's bearer credentials, parsed as the routes' security scheme does."""
    return await _bearer(request)


def admitted(request: Request, gate: Callable[..., Any], result: Any) -> None:
    """Record that ``gate`` (a route's declared-action dependency) let the request through with
    ``result``, before its body was read (:mod:`argosy.server.admission`)."""
    request.state.admitted = (gate, result)


def already_admitted(request: Request, gate: Callable[..., Any]) -> tuple[bool, Any]:
    """(True, its result) if admission already ran ``gate`` for this request."""
    found = getattr(request.state, "admitted", None)
    if found is not None and found[0] is gate:
        return True, found[1]
    return False, None


def _deny(request: Request, principal: Principal, decision: Decision) -> ApiProblem:
    request.state.decision = decision
    if principal.anonymous:
        return Unauthenticated(decision.reason, invalid=False)
    return ApiProblem(403, decision.reason, code="forbidden")


def authorized(action: Action) -> Callable[..., Principal]:
    """The dependency of a route that does ``action``: the allowed caller, or 401/403."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    ) -> Principal:
        done, principal = already_admitted(request, dependency)
        if done:  # decided before the body was read (admission): the same request
            return principal  # type: ignore[no-any-return]
        request.state.action = action
        if action is Action.PUBLIC:
            request.state.principal = getattr(request.state, "principal", None) or ANONYMOUS
            request.state.decision = Decision(True, "public")
            return ANONYMOUS
        try:
            principal = current_principal(request, credentials)
        except ApiProblem as exc:
            request.state.principal = ANONYMOUS
            request.state.decision = Decision(False, exc.detail)
            raise
        tenant = request.path_params.get("tenant")
        if tenant is not None and not tb.DNS_LABEL.match(str(tenant)):
            request.state.decision = Decision(False, "invalid tenant")
            raise ApiProblem(
                422, f"path field 'tenant': {tenant!r} is not a DNS-1123 label (lowercase "
                "letters, digits and '-'); fix the request and send it again",
                code="validation_error",
            )  # fmt: skip
        if principal.anonymous:
            raise _deny(request, principal, authorize(principal, tenant, action))
        if tenant is None:
            decision = authorize(principal, None, action)
            if not decision.allowed:
                raise _deny(request, principal, decision)
            request.state.decision = decision
            return principal
        context = context_of(request)
        with context.metadata.session() as session:
            row = tb.get_tenant(session, tenant)
            found = tb.load_bindings(session, tenant) if row is not None else []
            archived = row is not None and row.archived_at is not None
        decision = authorize(principal, tenant, action, found)
        if row is None and decision.allowed:
            # only those who may act everywhere learn that a tenant does not exist
            request.state.decision = Decision(False, f"no tenant {tenant!r}")
            raise ApiProblem(
                404, f"no tenant {tenant!r}; create it with 'argosy tenants create {tenant}'",
                code="not_found",
            )  # fmt: skip
        if not decision.allowed:
            raise _deny(request, principal, decision)
        if archived and action not in READ_ACTIONS and action is not Action.TENANT_ARCHIVE:
            request.state.decision = Decision(False, f"tenant {tenant!r} is archived")
            raise ApiProblem(
                409, f"tenant {tenant!r} is archived: it is read-only", code="tenant_archived"
            )
        request.state.decision = decision
        return principal

    setattr(dependency, ACTION_ATTRIBUTE, action)
    dependency.__name__ = f"authorized_{action.name.lower()}"
    return dependency


F = TypeVar("F", bound=Callable[..., Any])


def declares(action: Action) -> Callable[[F], F]:
    """Mark a dependency that authenticates by other means (a task token, the SCIM token) as
    deciding ``action``, so :func:`route_actions` counts its routes as declared."""

    def mark(dependency: F) -> F:
        setattr(dependency, ACTION_ATTRIBUTE, action)
        return dependency

    return mark


def action_of(call: Any) -> Action | None:
    found = getattr(call, ACTION_ATTRIBUTE, None)
    return found if isinstance(found, Action) else None


@dataclass(frozen=True)
class RouteAction:
    method: str
    path: str
    action: Action | None


def route_actions(app: FastAPI) -> list[RouteAction]:
    """Every (method, path) of ``app``'s API routes with the action it declares (None: none)."""
    from fastapi import routing
    from fastapi.routing import APIRoute

    def declared(dependant: Any) -> Action | None:
        for dep in dependant.dependencies:
            found = action_of(dep.call) or declared(dep)
            if found is not None:
                return found
        return None

    found: list[RouteAction] = []
    # FastAPI >= 0.16x keeps included routers as such: walk their effective routes
    for c in routing.iter_route_contexts(app.routes):
        if isinstance(c.original_route, APIRoute):
            for method in sorted(c.methods or ()):
                found.append(RouteAction(method, c.path or "", declared(c.dependant)))
    return found


def tenant_path(
    tenant: Annotated[
        str,
        Path(
            pattern=TENANT_PATTERN,
            max_length=63,
            description="the tenant: a DNS-1123 label (lowercase letters, digits, '-')",
            examples=["default"],
        ),
    ],
) -> str:
    """The ``{tenant}`` path segment, validated as a DNS-1123 label (422 otherwise)."""
    return tenant


def Allowed(action: Action) -> Any:
    """``principal: Annotated[Principal, Allowed(Action.RUN_READ)]``."""
    return Depends(authorized(action))


TenantDep = Annotated[str, Depends(tenant_path)]
ContextDep = Annotated[ServerContext, Depends(context_of)]
