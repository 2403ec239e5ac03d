"""How the web UI is kept safe: one authorization gate, error pages, response headers, and
the local-mode guard.

- :func:`Page` is the gate of every page, fragment and form route: the API's own
  :func:`argosy.server.identity.authorized` (so :func:`argosy.auth.policy.authorize` decides,
  admission runs it before a body is read, the audit log sees it), whose refusals become
  :class:`PageProblem` — rendered as an HTML error page for a browser and as the API's
  ``application/problem+json`` for anything else. A tenant the user has no role in and a
  tenant that does not exist answer the same 403; a run or artifact of another tenant and one
  that does not exist answer the same 404 (every read is filtered by the tenant in the URL).
- :class:`SecurityHeaders` puts a strict Content-Security-Policy on every response (pages:
  scripts, styles, images and connections from this origin only — no inline script or style,
  no ``eval``; everything else: ``default-src 'none'; sandbox``), ``frame-ancestors 'none'``
  and ``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy: same-origin``, and
  ``Cache-Control: no-store`` on pages (they hold tenant data).
- :class:`LocalGuard` is ``argosy ui``'s front door (local mode has no identity provider):
  it answers only requests whose ``Host`` is exactly the one it printed, exchanges the
  printed one-time token for a session cookie, refuses any request without that cookie, and
  checks ``X-CSRF-Token`` against the ``argosy_csrf`` cookie on every state change.

CSRF in server mode is the API's: a cookie-authenticated POST/PUT/PATCH/DELETE must carry
``X-CSRF-Token`` equal to the session's token (:mod:`argosy.server.identity`); the UI's
script sends it with every change, and forms only ever change state through that script.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy import errors
from argosy.auth.policy import Action
from argosy.server import identity
from argosy.server.problems import STATUS_OF, ApiProblem, problem_response

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
SECURITY_HEADERS = {
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
}
LOCAL_SESSION_COOKIE = "argosy_local"
# FastAPI's interactive API reference loads its script and style from a CDN: it keeps its own
# headers (every other page and answer gets the policies above)
OWN_POLICY_PATHS = ("/api/v1/docs",)


class PageProblem(ApiProblem):
    """A refusal or error of a UI route: an HTML page for browsers, problem+json otherwise."""


def wants_html(request: Request) -> bool:
    """Whether the client asked for a page (a browser navigation) rather than data."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and request.headers.get("x-requested-with") != "fetch"


def Page(action: Action) -> Any:
    """The gate of a UI route: ``principal: Annotated[Principal, Page(Action.RUN_READ)]``."""
    inner = identity.authorized(action)

    def dependency(
        request: Request,
        credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(identity.bearer_credentials)
        ] = None,
    ) -> identity.Principal:
        done, principal = identity.already_admitted(request, dependency)
        if done:
            return principal  # type: ignore[no-any-return]
        try:
            return inner(request, credentials)
        except ApiProblem as exc:
            raise PageProblem(
                exc.status, exc.detail, code=exc.code, headers=exc.headers, extra=exc.extra
            ) from None

    identity.declares(action)(dependency)
    dependency.__name__ = f"page_{action.name.lower()}"
    return Depends(dependency)


def status_of(exc: errors.ArgosyError) -> tuple[int, str]:
    for cls, status, code in STATUS_OF:
        if isinstance(exc, cls):
            return status, exc.code or code
    return 500, "internal_error"


@contextmanager
def as_page_errors() -> Any:
    """Errors of the application layer as :class:`PageProblem` (the same statuses as the
    API's, rendered as pages for browsers)."""
    try:
        yield
    except errors.ArgosyError as exc:
        status, code = status_of(exc)
        if status >= 500:
            raise
        raise PageProblem(status, str(exc), code=code, extra=dict(exc.extra)) from None


def install_error_pages(app: Any, render_error: Callable[[Request, int, str], Response]) -> None:
    """Answer :class:`PageProblem` with ``render_error`` for browsers (a 401 becomes a
    redirect to the login page where there is one), problem+json otherwise."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageProblem)
        if not wants_html(request):
            return problem_response(
                exc.status, exc.detail, code=exc.code, instance=request.url.path,
                headers=exc.headers, extra=exc.extra,
            )  # fmt: skip
        settings = identity.context_of(request).settings
        if exc.status == 401 and settings.oidc_issuer and settings.oidc_client_id:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/auth/login?next={quote(target, safe='/')}", 303)
        return render_error(request, exc.status, exc.detail)

    app.add_exception_handler(PageProblem, handler)


# -- response headers ------------------------------------------------------------------------------
class SecurityHeaders:
    """Security headers on every response (see the module's documentation)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(OWN_POLICY_PATHS):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                page = ctype.startswith(b"text/html")
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy",
                                    (PAGE_CSP if page else OTHER_CSP).encode()))  # fmt: skip
                for name, value in SECURITY_HEADERS.items():
                    if name not in present:
                        headers.append((name, value))
                if page and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- local mode -------------------------------------------------------------------------------------
class LocalGuard:
    """``argosy ui``'s front door: exact Host, one-time token -> session cookie, CSRF.

    ``host`` is the ``Host`` header the browser sends for the printed URL (``127.0.0.1:PORT``);
    ``token`` the one-time token in it. The app inside serves every request as the local user,
    so this guard is the only thing between other local users or web pages and the state.
    """

    def __init__(self, app: ASGIApp, *, host: str, token: str, secure: bool = False) -> None:
        self.app = app
        self.host = host
        self._token: str | None = token
        self._sessions: dict[str, str] = {}  # session cookie -> its CSRF token
        self._lock = threading.Lock()
        self.secure = secure

    def _header(self, scope: Scope, name: bytes) -> str:
        for key, value in scope.get("headers", []):
            if key.lower() == name:
                return str(value.decode("latin-1"))
        return ""

    def _cookies(self, scope: Scope) -> dict[str, str]:
        found: dict[str, str] = {}
        for part in self._header(scope, b"cookie").split(";"):
            name, _, value = part.strip().partition("=")
            if name:
                found.setdefault(name, value)
        return found

    def exchange(self, token: str) -> tuple[str, str] | None:
        """A new (session, csrf) for the one-time token; None if it is wrong or used."""
        with self._lock:
            if self._token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
                return None
            self._token = None  # one time
            session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            self._sessions[session] = csrf
            return session, csrf

    def _csrf_of(self, session: str) -> str | None:
        with self._lock:
            for known, csrf in self._sessions.items():
                if hmac.compare_digest(known.encode(), session.encode()):
                    return csrf
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = self.check(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> Response | None:
        """The refusal (or the token exchange's redirect) for ``scope``; None to let it in."""
        if self._header(scope, b"host") != self.host:
            return PlainTextResponse(
                f"this Argosy UI answers only at http://{self.host}/ (the address "
                "'argosy ui' printed)", status_code=403,
            )  # fmt: skip
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in query:
            found = self.exchange(query.pop("token"))
            if found is None:
                return _local_page(
                    403, "This sign-in link was already used, or is not the one 'argosy ui' "
                    "printed. Stop 'argosy ui' and start it again for a new link.",
                )  # fmt: skip
            session, csrf = found
            rest = urlencode(query)
            target = str(scope.get("path") or "/") + (f"?{rest}" if rest else "")
            redirect = RedirectResponse(target, 303)
            for name, value, http_only in ((LOCAL_SESSION_COOKIE, session, True),
                                           (identity.CSRF_COOKIE, csrf, False)):  # fmt: skip
                redirect.set_cookie(
                    name, value, httponly=http_only, samesite="strict", secure=self.secure,
                    path="/",
                )  # fmt: skip
            redirect.headers["Cache-Control"] = "no-store"
            return redirect
        cookies = self._cookies(scope)
        expected = self._csrf_of(cookies.get(LOCAL_SESSION_COOKIE, "")) if cookies else None
        if expected is None:
            return _local_page(
                401, "Open the link 'argosy ui' printed in your terminal (it signs this browser "
                "in once), or start 'argosy ui' again for a new one.",
            )  # fmt: skip
        if str(scope.get("method", "GET")).upper() in identity.CSRF_METHODS:
            sent = self._header(scope, identity.CSRF_HEADER.lower().encode())
            if not (sent and hmac.compare_digest(sent.encode(), expected.encode())
                    and hmac.compare_digest(cookies.get(identity.CSRF_COOKIE, "").encode(),
                                            expected.encode())):  # fmt: skip
                return problem_response(
                    403, f"missing or wrong CSRF token: send the {identity.CSRF_COOKIE} "
                    f"cookie's value in the {identity.CSRF_HEADER} header", code="csrf",
                )  # fmt: skip
        return None


def _local_page(status: int, message: str) -> HTMLResponse:
    from html import escape

    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Argosy</title>"
        f"<main><h1>Argosy</h1><p>{escape(message)}</p></main></html>"
    )
    return HTMLResponse(body, status_code=status)
