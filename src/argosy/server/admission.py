"""Admission: what happens to a request before its route reads a byte of its body.

For every HTTP request (health probes aside) this middleware, in order:

1. finds the route that will serve it, and that route's **body policy**
   (:class:`argosy.server.limits.BodyPolicy`: decided by the route, never by the headers);
2. runs the route's **gate** — the dependency that declares its action
   (:func:`argosy.server.identity.authorized`, the task-store token check, the SCIM token
   check) — so the caller is authenticated and authorized *before any body is read*; a refusal
   is answered at once (``Connection: close`` if a body was coming). The gate's result is kept
   on the request, and the route's own dependency reuses it. Only a route whose body *is* its
   credential (``signed``, a webhook) skips this, and reads at most 64 KiB;
3. takes one token from the **rate** bucket of the authenticated principal, or of the client
   address for anonymous and failed requests (429 with ``Retry-After``);
4. refuses a body of a media type the route does not read (415) or declared larger than the
   route's limit (413), before reading it;
5. reads the body under the route's limit (413 as soon as it is passed, however it is sent) and
   a deadline (408): a JSON or form body is read whole, within ``request_body_timeout``, its
   nesting checked against ``max_json_depth`` (422, naming the limit) and handed to the route;
   an upload streams through, each chunk due within ``request_body_timeout``.

The time to receive a request's headers is bounded by the HTTP protocol
(:mod:`argosy.server.connections`). Refusals are audited in aggregate
(:mod:`argosy.server.audit_middleware`).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request, routing
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy.server import identity, limits
from argosy.server.problems import internal_error, problem_response
from argosy.units import format_bytes

log = logging.getLogger("argosy.server")

EXEMPT = frozenset({"/healthz", "/readyz", "/livez"})
GATE_PARAMETERS = frozenset({"request", "credentials", "context"})


def _uses(dependant: Any, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _uses(d, call) for d in dependant.dependencies)


def derived_kind(route: Any) -> limits.BodyKind:
    """The body kind a route's signature implies (see :mod:`argosy.server.limits`); ``route``
    is one of FastAPI's route contexts (the route as included, under its router's prefix)."""
    if not isinstance(getattr(route, "original_route", route), APIRoute):
        return "none"
    from argosy.server.routes.blobs import upload_body

    if _uses(route.dependant, upload_body):
        return "upload"
    if route.body_field is not None:
        from fastapi import params

        info = getattr(route.body_field, "field_info", None)
        return "form" if isinstance(info, params.Form) else "json"
    return "none"


def gate_of(route: Any) -> Callable[..., Any] | None:
    """The dependency of ``route`` that declares its action (None: a route outside the API)."""
    if route is None or not isinstance(getattr(route, "original_route", route), APIRoute):
        return None

    def find(dependant: Any) -> Callable[..., Any] | None:
        for dep in dependant.dependencies:
            if identity.action_of(dep.call) is not None:
                return dep.call  # type: ignore[no-any-return]
            found = find(dep)
            if found is not None:
                return found
        return None

    return find(route.dependant)


def _refusal(
    status: int, detail: str, code: str, path: str, *, close: bool, **headers: str
) -> Response:
    if close:
        headers["Connection"] = "close"
    return problem_response(status, detail, code=code, instance=path, headers=headers)


def _has_nul(scope: Scope) -> bool:
    """Whether the path or query string holds a NUL (as sent, or %00-escaped): PostgreSQL
    refuses NUL in text, so such a value would otherwise reach the database as a 500."""
    raw = bytes(scope.get("query_string", b"")) + str(scope.get("path", "")).encode()
    return b"\x00" in raw or b"%00" in raw.lower()


class Admission:
    """The admission middleware (pure ASGI: uploads keep streaming)."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner
        settings = owner.state.context.settings
        self.settings = settings
        self.trusted = limits.parse_networks(settings.trusted_proxies)
        per_minute = settings.rate_limit_per_minute
        self.limiter = limits.RateLimiter(per_minute) if per_minute > 0 else None
        self._routes: dict[int, tuple[limits.BodyPolicy, Callable[..., Any] | None]] = {}
        self._contexts: list[Any] | None = None

    # -- the route ----------------------------------------------------------------------------
    def match(self, scope: Scope) -> tuple[Any, Any]:
        """The route (as FastAPI included it) that will serve ``scope``, and its path params."""
        if self._contexts is None:  # the routes are final once the app serves
            self._contexts = list(routing.iter_route_contexts(self.owner.router.routes))
        for route in self._contexts:
            found, child = route.matches(scope)
            if found is Match.FULL:
                return route, child
        return None, {}

    def rules(self, route: Any) -> tuple[limits.BodyPolicy, Callable[..., Any] | None]:
        """(body policy, gate) of ``route``, worked out once per route."""
        key = id(route)  # route contexts live as long as the app: their ids are stable
        found = self._routes.get(key)
        if found is None:
            endpoint = getattr(route, "endpoint", None)
            declared = getattr(endpoint, limits.BODY_ATTRIBUTE, None)
            policy = limits.body_policy(
                declared, derived_kind(route),
                max_request_bytes=self.settings.max_request_bytes,
                max_json_bytes=self.settings.max_json_bytes,
            )  # fmt: skip
            gate = gate_of(route)
            if gate is not None and not set(inspect.signature(gate).parameters) <= GATE_PARAMETERS:
                raise RuntimeError(
                    f"the gate of {route.path} takes parameters admission cannot give"
                )
            found = self._routes[key] = (policy, gate)
        return found

    # -- the gate -----------------------------------------------------------------------------
    async def admit(self, request: Request, gate: Callable[..., Any]) -> Response | None:
        """Run ``gate`` now; None if it lets the request through, else the refusal."""
        wanted = inspect.signature(gate).parameters
        kwargs: dict[str, Any] = {}
        if "request" in wanted:
            kwargs["request"] = request
        if "credentials" in wanted:
            kwargs["credentials"] = await identity.bearer_credentials(request)
        if "context" in wanted:
            kwargs["context"] = identity.context_of(request)
        try:
            result = await run_in_threadpool(gate, **kwargs)
        except Exception as exc:
            return await self._answer(request, exc)
        identity.admitted(request, gate, result)
        return None

    async def _answer(self, request: Request, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            handler = self.owner.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                return response
        log.error("%s %s: admission failed", request.method, request.url.path, exc_info=exc)
        return internal_error(request.url.path)

    # -- the request --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        path = str(scope.get("path", ""))
        address = limits.client_address(scope, self.trusted)
        state["client_address"] = address
        route, child = self.match(scope)
        policy, gate = self.rules(route)
        length = limits.header(scope, b"content-length")
        declared = int(length) if length is not None and length.strip().isdigit() else None
        has_body = (declared or 0) > 0 or limits.header(scope, b"transfer-encoding") is not None

        refusal: Response | None = None
        if gate is not None and policy.kind != "signed":
            refusal = await self.admit(Request({**scope, **child}), gate)
        if self.limiter is not None:
            wait = self.limiter.take(limits.rate_key(state.get("principal"), address))
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                refusal = _refusal(
                    429, f"too many requests: at most {int(self.limiter.capacity)} a minute; "
                    f"retry in {seconds} s", "rate_limited", path, close=has_body,
                    **{"Retry-After": str(seconds)},
                )  # fmt: skip
        if refusal is None and has_body and policy.kind != "none":
            ctype = limits.header(scope, b"content-type")
            if not policy.accepts_type(ctype):
                wanted = ", ".join(t or "none" for t in policy.media_types)
                refusal = _refusal(
                    415, f"this route does not read {ctype or 'a body without a Content-Type'}; "
                    f"send {wanted}", "unsupported_media_type", path, close=True,
                )  # fmt: skip
        if refusal is None and declared is not None and declared > policy.max_bytes:
            refusal = self._too_large(path, policy, declared)
        if refusal is None and _has_nul(scope):
            refusal = _refusal(
                422, "the request's path or query holds a NUL character, which no name, id or "
                "filter holds: fix the request and send it again", "invalid_text", path,
                close=has_body,
            )  # fmt: skip
        if refusal is not None:
            if refusal.status_code >= 400 and has_body:
                refusal.headers["Connection"] = "close"
            await refusal(scope, receive, send)
            return
        if has_body and policy.kind in ("json", "form", "signed"):
            await self._buffered(scope, receive, send, policy, path)
        else:
            await self._streamed(scope, receive, send, policy, path)

    def _too_large(self, path: str, policy: limits.BodyPolicy, size: int | None) -> Response:
        what = f"is {format_bytes(size)}" if size is not None else "is larger than that"
        return _refusal(
            413, f"the request body {what}; this route accepts at most "
            f"{format_bytes(policy.max_bytes)}: send less", "request_too_large", path, close=True,
        )  # fmt: skip

    def _timeout(self, path: str) -> Response:
        return _refusal(
            408, f"the request body did not arrive within {self.settings.request_body_timeout:g} s; "
            "send it again, faster", "request_timeout", path, close=True,
        )  # fmt: skip

    async def _buffered(
        self, scope: Scope, receive: Receive, send: Send, policy: limits.BodyPolicy, path: str
    ) -> None:
        """Read a small body whole (limit, deadline), check its JSON nesting, pass it on."""
        chunks: list[bytes] = []
        size = 0
        refusal: Response | None = None
        with anyio.move_on_after(self.settings.request_body_timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left: nobody to answer
                body = message.get("body", b"")
                size += len(body)
                if size > policy.max_bytes:
                    refusal = self._too_large(path, policy, None)
                    break
                chunks.append(body)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            refusal = self._timeout(path)
        data = b"".join(chunks)
        limit = self.settings.max_json_depth
        if refusal is None and policy.kind == "json" and limits.json_depth_over(data, limit):
            refusal = _refusal(
                422, f"the JSON body nests deeper than {limit} levels (arrays and objects); "
                "flatten it", "json_too_deep", path, close=False,
            )  # fmt: skip
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _streamed(
        self, scope: Scope, receive: Receive, send: Send, policy: limits.BodyPolicy, path: str
    ) -> None:
        """Pass the body through as it comes, cut at the limit or when a chunk is late."""
        received = 0
        complete = False
        cut: int | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, complete, cut
            if cut is not None:
                return {"type": "http.disconnect"}
            if complete:  # the body is in: only a disconnect can come, whenever it does
                return await receive()
            message: Message | None = None
            with anyio.move_on_after(self.settings.request_body_timeout):
                message = await receive()
            if message is None:
                cut = 408  # the app sees a client that left; the 408 is answered below
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > policy.max_bytes:
                    cut = 413
                    return {"type": "http.disconnect"}
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut is not None and not started:
                return  # whatever the app answers to the cut body, the client gets the refusal
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if cut is None or started:
                raise
        if cut is not None and not started:
            refusal = self._too_large(path, policy, None) if cut == 413 else self._timeout(path)
            await refusal(scope, receive, send)


def install(app: FastAPI) -> None:
    """Add admission to ``app`` (inside the audit middleware, which records its refusals)."""
    app.add_middleware(Admission, owner=app)
