"""Browser login (OIDC authorization code flow with PKCE), logout, and the login settings the
CLI reads for device login.

- ``GET /auth/login?next=/path``: redirects (302) to the issuer's ``authorization_endpoint``
  with a random ``state``, a ``nonce`` and a PKCE S256 ``code_challenge``. The pending login
  (verifier, nonce, next, redirect URI) is kept server-side, in the database, as a
  :class:`BrowserSession` row keyed by sha256(state) with an empty subject (so every server
  instance can finish it); the browser gets a short-lived ``argosy_login`` cookie whose hash
  binds the state to that browser (login CSRF). ``next`` must be a relative path on this site.
- ``GET /auth/callback?code&state``: consumes the state (single use, 10 minutes), exchanges
  the code at the ``token_endpoint`` (with the verifier; client secret if configured),
  validates the ID token (signature through the issuer's JWKS, ``iss``, ``aud`` = client id,
  ``nonce``, ``exp``), takes the user from the access token (or the ID token when the access
  token is not a JWT for this server) by the configured claims, refuses deactivated users,
  stores a session (sha256 of the cookie, the name and groups at login, sha256 of the CSRF
  token) and sets ``argosy_session`` (HttpOnly, SameSite=Lax, 8 h) and ``argosy_csrf``
  (readable by the page: the double-submit CSRF token). Both are ``Secure`` unless
  ``session_cookie_secure`` is off *and* the request is to localhost.
- ``POST /auth/logout`` (CSRF-checked like every cookie-authenticated change): revokes the
  session and clears the cookies.
- ``GET /api/v1/auth/config``: the issuer, client id and endpoints (device login for the CLI).

Logins (success and failure) and logouts are audited (``auth.login``, ``auth.logout``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from jwt import PyJWK
from sqlalchemy import select, update

from argosy.api import API_PREFIX
from argosy.auth import audit
from argosy.auth.oidc import InvalidToken, IssuerUnavailable, VerifiedToken, groups_of
from argosy.auth.policy import Action
from argosy.auth.principal import Principal
from argosy.auth.standing import remember_groups
from argosy.config import Settings
from argosy.server.identity import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Allowed,
    ContextDep,
    context_of,
    sha256_hex,
    verifier_of,
)
from argosy.server.problems import ApiProblem, problem_responses
from argosy.stores.metadata.tables import BrowserSession, User

log = logging.getLogger("argosy.auth")

router = APIRouter(tags=["login"])
api_router = APIRouter(prefix=API_PREFIX, tags=["login"])

LOGIN_COOKIE = "argosy_login"
SCOPE = "openid profile groups"
SESSION_LIFETIME = timedelta(hours=8)
LOGIN_LIFETIME = timedelta(minutes=10)
DISCOVERY_MAX_AGE = 3600.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

_discovery_lock = threading.Lock()


# -- helpers --------------------------------------------------------------------------------------
def _settings(request: Request) -> Settings:
    return context_of(request).settings


def _client_id(settings: Settings) -> str:
    if not settings.oidc_issuer or not settings.oidc_client_id:
        raise ApiProblem(
            404, "browser login is not configured on this server (set ARGOSY_OIDC_ISSUER and "
            "ARGOSY_OIDC_CLIENT_ID); use an API token instead", code="not_found",
        )  # fmt: skip
    return settings.oidc_client_id


def discovery(request: Request) -> dict[str, Any]:
    """The issuer's discovery document (cached for an hour per app); 503 when unreachable."""
    settings = _settings(request)
    issuer = (settings.oidc_issuer or "").rstrip("/")
    state = request.app.state
    with _discovery_lock:
        cached: tuple[float, dict[str, Any]] | None = getattr(state, "oidc_discovery", None)
        if cached is not None and time.monotonic() - cached[0] < DISCOVERY_MAX_AGE:
            return cached[1]
    try:
        response = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=5)
        response.raise_for_status()
        doc = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("OIDC discovery failed: %s", exc)
        raise ApiProblem(
            503, "the identity provider cannot be reached; retry later", code="unavailable",
            headers={"Retry-After": "5"},
        ) from None  # fmt: skip
    if not isinstance(doc, dict) or str(doc.get("issuer", "")).rstrip("/") != issuer:
        raise ApiProblem(503, "the identity provider's discovery document names another "
                         "issuer; fix ARGOSY_OIDC_ISSUER", code="unavailable")  # fmt: skip
    with _discovery_lock:
        state.oidc_discovery = (time.monotonic(), doc)
    return doc


def _endpoint(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ApiProblem(503, f"the identity provider advertises no {name}", code="unavailable")
    return value


def safe_next(value: str | None) -> str:
    """``value`` if it is a relative path on this site (no open redirect); 400 otherwise."""
    target = value or "/"
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or "\\" in target
        or parts.scheme
        or parts.netloc
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        raise ApiProblem(
            400, f"'next' must be a path on this site (such as /runs), not {target[:100]!r}",
            code="validation_error",
        )  # fmt: skip
    return target


def secure_cookies(request: Request) -> bool:
    """Secure cookies unless turned off for a localhost server."""
    if _settings(request).session_cookie_secure:
        return True
    return (request.url.hostname or "") not in LOCAL_HOSTS


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _audit(
    request: Request, action: str, outcome: str, actor: str = "anonymous", **detail: Any
) -> None:
    """One audit event in its own transaction (a failure is logged, not raised)."""
    client = request.client
    try:
        with context_of(request).metadata.session() as session:
            audit.record(
                session, actor=actor, actor_kind="user" if actor != "anonymous" else "anonymous",
                action=action, resource=request.url.path, outcome=outcome,
                source=client.host if client else None, detail=detail or None,
            )  # fmt: skip
    except Exception as exc:
        log.error("audit event %s (%s) not recorded: %s", action, outcome, exc)


def _fail(request: Request, status: int, message: str, actor: str = "anonymous") -> ApiProblem:
    _audit(request, "auth.login", "denied" if status in (401, 403) else "failed", actor,
           reason=message)  # fmt: skip
    code = {400: "bad_request", 401: "unauthenticated", 403: "forbidden"}.get(status, "failed")
    return ApiProblem(status, message, code=code)


def _cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int,
    http_only: bool = True, path: str = "/",
) -> None:  # fmt: skip
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=http_only,
        secure=secure_cookies(request), samesite="lax",
    )  # fmt: skip


def _clear(response: Response, request: Request, name: str, path: str = "/") -> None:
    response.delete_cookie(
        name, path=path, secure=secure_cookies(request), httponly=name != CSRF_COOKIE,
        samesite="lax",
    )  # fmt: skip


# -- login ----------------------------------------------------------------------------------------
@router.get(
    "/auth/login", status_code=302, summary="Start a browser login (redirects to the issuer)",
    response_class=RedirectResponse, responses=problem_responses(400),
)  # fmt: skip
def login(
    request: Request,
    _: Annotated[Principal, Allowed(Action.PUBLIC)],
    context: ContextDep,
    next: Annotated[str | None, Query(description="where to go after login (a path)")] = None,
    login_hint: Annotated[str | None, Query(description="passed to the issuer")] = None,
) -> Response:
    """Redirect to the identity provider (authorization code flow with PKCE S256)."""
    client_id = _client_id(context.settings)
    target = safe_next(next)
    authorization_endpoint = _endpoint(discovery(request), "authorization_endpoint")
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    nonce = secrets.token_urlsafe(32)
    binding = secrets.token_urlsafe(32)
    redirect_uri = str(request.url_for("auth_callback"))
    now = datetime.now(UTC)
    pending = {"verifier": verifier, "nonce": nonce, "next": target, "redirect_uri": redirect_uri}
    with context.metadata.session() as session:
        session.add(BrowserSession(
            id=sha256_hex(state), subject="", claims={"pending_login": pending},
            csrf_hash=sha256_hex(binding), created_at=now, expires_at=now + LOGIN_LIFETIME,
            revoked_at=None,
        ))  # fmt: skip
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": SCOPE, "state": state, "nonce": nonce, "code_challenge": _s256(verifier),
        "code_challenge_method": "S256",
    }  # fmt: skip
    if login_hint:
        params["login_hint"] = login_hint
    separator = "&" if urlsplit(authorization_endpoint).query else "?"
    response = RedirectResponse(f"{authorization_endpoint}{separator}{urlencode(params)}", 302)
    response.headers["Cache-Control"] = "no-store"
    _cookie(response, request, LOGIN_COOKIE, binding,
            max_age=int(LOGIN_LIFETIME.total_seconds()), path="/auth/callback")  # fmt: skip
    return response


def _consume(request: Request, state: str) -> dict[str, Any]:
    """The pending login of ``state``, used up now (400 when unknown, used, expired, or
    started in another browser)."""
    context = context_of(request)
    binding = request.cookies.get(LOGIN_COOKIE, "")
    now = datetime.now(UTC)
    key = sha256_hex(state)
    with context.metadata.session() as session:
        row = session.get(BrowserSession, key)
        pending = (row.claims or {}).get("pending_login") if row is not None else None
        valid = (
            row is not None and not row.subject and isinstance(pending, dict)
            and row.revoked_at is None and _utc(row.expires_at) > now
        )  # fmt: skip
        if valid:
            taken = session.execute(
                update(BrowserSession)
                .where(BrowserSession.id == key, BrowserSession.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            valid = getattr(taken, "rowcount", 0) == 1
        csrf_hash = row.csrf_hash if row is not None else ""
    if not valid or not isinstance(pending, dict):
        raise _fail(request, 400, "unknown, used or expired login state; start again at "
                    "/auth/login")  # fmt: skip
    if not binding or not hmac.compare_digest(sha256_hex(binding), csrf_hash):
        raise _fail(request, 400, "this login was started in another browser (no or wrong "
                    f"{LOGIN_COOKIE} cookie); start again at /auth/login")  # fmt: skip
    return pending


def _exchange(request: Request, code: str, pending: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(request)
    token_endpoint = _endpoint(discovery(request), "token_endpoint")
    form = {
        "grant_type": "authorization_code", "code": code,
        "redirect_uri": pending["redirect_uri"], "code_verifier": pending["verifier"],
        "client_id": settings.oidc_client_id or "",
    }  # fmt: skip
    auth = (
        httpx.BasicAuth(settings.oidc_client_id or "", settings.oidc_client_secret)
        if settings.oidc_client_secret
        else None
    )
    try:
        response = httpx.post(token_endpoint, data=form, auth=auth, timeout=10)
    except httpx.HTTPError as exc:
        log.warning("OIDC token endpoint failed: %s", exc)
        raise _fail(request, 503, "the identity provider cannot be reached; retry") from None
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if response.status_code != 200 or not isinstance(doc, dict) or "id_token" not in doc:
        error = doc.get("error", response.status_code) if isinstance(doc, dict) else "?"
        raise _fail(request, 400, f"the identity provider refused the login code ({error}); "
                    "start again at /auth/login")  # fmt: skip
    return doc


def _id_token_claims(request: Request, id_token: str, nonce: str) -> dict[str, Any]:
    """The claims of a valid ID token (signature, iss, aud = client id, exp, nonce)."""
    settings = _settings(request)
    verifier = verifier_of(request)
    if verifier is None:
        raise _fail(request, 503, "OIDC is not configured (issuer and audience)")
    try:
        header = jwt.get_unverified_header(id_token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in verifier.algorithms:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        jwk = verifier._jwk(kid if isinstance(kid, str) else None)
        if jwk.get("alg", alg) != alg:
            raise InvalidToken(f"algorithm {alg} does not fit its key")
        claims: dict[str, Any] = jwt.decode(
            id_token, key=PyJWK(jwk, algorithm=alg).key, algorithms=[alg],
            audience=settings.oidc_client_id, issuer=verifier.issuer,
            leeway=settings.oidc_leeway_seconds,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )  # fmt: skip
    except (InvalidToken, jwt.PyJWTError) as exc:
        raise _fail(request, 400, f"the identity provider's ID token is invalid: {exc}") from None
    except IssuerUnavailable as exc:
        log.warning("OIDC issuer unavailable: %s", exc)
        raise _fail(request, 503, "the identity provider cannot be reached; retry") from None
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, nonce):
        raise _fail(request, 400, "the ID token's nonce does not match this login")
    return claims


def _user(request: Request, tokens: dict[str, Any], id_claims: dict[str, Any]) -> VerifiedToken:
    """The user: from the access token when it is a valid JWT for this server, else from the
    ID token, both by the configured claims."""
    s = _settings(request)
    verifier = verifier_of(request)
    access = tokens.get("access_token")
    if verifier is not None and isinstance(access, str):
        try:
            found = verifier.verify(access)
        except (InvalidToken, IssuerUnavailable):
            found = None
        if found is not None:
            if found.claims.get("sub") != id_claims.get("sub"):
                raise _fail(request, 400, "the access token and ID token name different users")
            return found
    subject = id_claims.get(s.oidc_user_claim)
    if not isinstance(subject, str) or not subject:
        raise _fail(request, 400, f"the ID token has no {s.oidc_user_claim!r} claim")
    name = id_claims.get(s.oidc_name_claim)
    try:
        groups = groups_of(id_claims.get(s.oidc_groups_claim))
    except InvalidToken as exc:
        raise _fail(request, 400, str(exc)) from None
    return VerifiedToken(
        subject=subject, name=name if isinstance(name, str) and name else subject,
        groups=groups, claims=id_claims,
    )  # fmt: skip


@router.get(
    "/auth/callback", name="auth_callback", status_code=302, response_class=RedirectResponse,
    summary="Finish a browser login (the issuer redirects here)",
    responses=problem_responses(400, 403),
)  # fmt: skip
def callback(
    request: Request,
    _: Annotated[Principal, Allowed(Action.PUBLIC)],
    context: ContextDep,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
) -> Response:
    """Check the login, start a session (cookies) and go to the page the login was for."""
    if not state:
        raise _fail(request, 400, "the login has no state; start again at /auth/login")
    pending = _consume(request, state)
    if error:
        status = 403 if error == "access_denied" else 400
        raise _fail(request, status, f"the identity provider refused the login ({error[:100]})")
    if not code:
        raise _fail(request, 400, "the identity provider sent no code; start again")
    tokens = _exchange(request, code, pending)
    id_claims = _id_token_claims(request, str(tokens["id_token"]), str(pending["nonce"]))
    user = _user(request, tokens, id_claims)
    now = datetime.now(UTC)
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with context.metadata.session() as session:
        active = session.scalar(select(User.active).where(User.external_id == user.subject))
        if active is not False:
            remember_groups(session, user.subject, user.groups, now)
            session.add(BrowserSession(
                id=sha256_hex(cookie), subject=user.subject,
                claims={"name": user.name, "groups": list(user.groups)},
                csrf_hash=sha256_hex(csrf), created_at=now, expires_at=now + SESSION_LIFETIME,
                revoked_at=None,
            ))  # fmt: skip
    if active is False:
        raise _fail(request, 403, f"user {user.subject!r} is deactivated", actor=user.subject)
    _audit(request, "auth.login", "allowed", user.subject, method="browser",
           groups=list(user.groups))  # fmt: skip
    response = RedirectResponse(safe_next(str(pending.get("next") or "/")), 302)
    response.headers["Cache-Control"] = "no-store"
    max_age = int(SESSION_LIFETIME.total_seconds())
    _cookie(response, request, SESSION_COOKIE, cookie, max_age=max_age)
    _cookie(response, request, CSRF_COOKIE, csrf, max_age=max_age, http_only=False)
    _clear(response, request, LOGIN_COOKIE, path="/auth/callback")
    return response


@router.post("/auth/logout", status_code=204, summary="End the browser session")
def logout(
    request: Request,
    principal: Annotated[Principal, Allowed(Action.AUTHENTICATED)],
    context: ContextDep,
) -> Response:
    """Revoke the session of the cookie (CSRF-checked) and clear the cookies."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with context.metadata.session() as session:
            session.execute(
                update(BrowserSession)
                .where(BrowserSession.id == sha256_hex(cookie), BrowserSession.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
    _audit(request, "auth.logout", "allowed", principal.subject, session=bool(cookie))
    response = Response(status_code=204)
    _clear(response, request, SESSION_COOKIE)
    _clear(response, request, CSRF_COOKIE)
    return response


@api_router.get("/auth/config", summary="How to log in (issuer, client id, endpoints)")
def auth_config(
    request: Request, _: Annotated[Principal, Allowed(Action.PUBLIC)], context: ContextDep
) -> dict[str, Any]:
    """The issuer and client id for browser and CLI (device) login; nulls when not set up."""
    s = context.settings
    doc: dict[str, Any] = {}
    if s.oidc_issuer and s.oidc_client_id:
        doc = discovery(request)
    return {
        "issuer": s.oidc_issuer, "client_id": s.oidc_client_id, "audience": s.oidc_audience,
        "scope": SCOPE, "browser_login": "/auth/login" if doc else None,
        "authorization_endpoint": doc.get("authorization_endpoint"),
        "token_endpoint": doc.get("token_endpoint"),
        "device_authorization_endpoint": doc.get("device_authorization_endpoint"),
    }  # fmt: skip
