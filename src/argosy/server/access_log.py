"""One structured JSON line per API request on stdout (for a log shipper), and the request
counters of ``/metrics``: request id (``X-Request-Id``, kept from the client or made here and
sent back), method, route template, path, status, latency, tenant and principal."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy.ids import new_id
from argosy.server.metrics import METRICS

access = logging.getLogger("argosy.access")


def _stdout_handler() -> None:
    if not any(getattr(h, "_argosy_access", False) for h in access.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._argosy_access = True  # type: ignore[attr-defined]
        access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


class AccessLog:
    """ASGI middleware: counts and times every HTTP request and logs it as JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _stdout_handler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.isprintable() else new_id()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            method = scope.get("method", "")
            if route != "/metrics":
                METRICS.requests.labels(method, route, str(status)).inc()
                METRICS.latency.labels(method, route).observe(elapsed)
            state: Any = scope.get("state") or {}
            principal = state.get("principal") if isinstance(state, dict) else None
            line = {
                "time": datetime.now(UTC).isoformat(), "level": "info", "event": "request",
                "request_id": request_id, "method": method, "route": route,
                "path": scope.get("path", ""), "status": status,
                "latency_ms": round(elapsed * 1000, 2),
                "tenant": (scope.get("path_params") or {}).get("tenant"),
                "principal": getattr(principal, "subject", None),
            }  # fmt: skip
            access.info(json.dumps(line))
