"""Records API requests in the audit log (:mod:`argosy.auth.audit`).

Recorded: every mutating request (POST, PUT, PATCH, DELETE) with its outcome, every denial
(401/403) whatever the method, and every read of artifact content
(``GET .../artifacts/{id}/content``). The outcome is ``allowed`` below status 400, ``denied``
for 401/403 (or a refusing ``request.state.decision``), ``failed`` otherwise.

Who: ``request.state.principal`` (set by the authorization dependency), else ``anonymous``;
what: ``request.state.action`` if a route declared one, else ``http.<method>``; where: the
URL path (never the query string, which could carry a secret) and the tenant in it; from:
the client's address.

The event is written in its own short transaction just before the response starts, so a
client that sees a response can rely on its event being stored. An audit write that fails
(the database is down) is logged and does not fail the request.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy.auth import audit

log = logging.getLogger("argosy.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIED = frozenset({401, 403})
ARTIFACT_CONTENT = re.compile(r"^/api/v1/tenants/[^/]+/artifacts/[^/]+/content/?$")
TENANT_IN_PATH = re.compile(r"^/api/v1/tenants/([a-z0-9][-a-z0-9]{0,62})(?:/|$)")


def should_record(method: str, path: str, status: int) -> bool:
    return method in MUTATING or status in DENIED or (
        method == "GET" and ARTIFACT_CONTENT.match(path) is not None
    )  # fmt: skip


def outcome_of(status: int, decision: Any) -> str:
    if status in DENIED or (decision is not None and getattr(decision, "allowed", True) is False):
        return "denied"
    return "allowed" if status < 400 else "failed"


def actor_of(principal: Any) -> tuple[str, str]:
    """(actor, actor_kind) of a principal, or of nobody."""
    if principal is None:
        return "anonymous", "anonymous"
    actor = getattr(principal, "subject", None) or getattr(principal, "name", None) or "unknown"
    kind = str(getattr(principal, "kind", "user") or "user")
    return str(actor), kind


def action_of(method: str, path: str, declared: Any) -> str:
    if declared is not None:
        return str(getattr(declared, "value", declared))
    if method == "GET" and ARTIFACT_CONTENT.match(path):
        return "artifact.read"
    return f"http.{method.lower()}"


class AuditMiddleware:
    """Pure ASGI middleware (no body buffering: uploads and downloads keep streaming)."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        done = False

        async def recording_send(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.start" and not done:
                done = True
                status = int(message["status"])
                if should_record(method, path, status):
                    await self._record(scope, state, method, path, status)
            await send(message)

        await self.app(scope, receive, recording_send)

    async def _record(
        self, scope: Scope, state: dict[str, Any], method: str, path: str, status: int
    ) -> None:
        actor, kind = actor_of(state.get("principal"))
        match = TENANT_IN_PATH.match(path)
        tenant = state.get("audit_tenant") or (match.group(1) if match else None)
        client = scope.get("client")
        route = scope.get("route")
        detail: dict[str, Any] = {"method": method, "status": status}
        template = getattr(route, "path", None)
        if isinstance(template, str):
            detail["route"] = template
        decision = state.get("decision")
        reason = getattr(decision, "reason", None)
        if reason:
            detail["reason"] = str(reason)[:500]
        fields = {
            "actor": actor,
            "actor_kind": kind,
            "action": action_of(method, path, state.get("action")),
            "tenant": tenant,
            "resource": path,
            "outcome": outcome_of(status, decision),
            "source": client[0] if client else None,
            "detail": detail,
        }
        await anyio.to_thread.run_sync(self._write, fields)

    def _write(self, fields: dict[str, Any]) -> None:
        try:
            context = self.owner.state.context
            with context.metadata.session() as session:
                audit.record(session, **fields)
        except Exception as exc:  # the request's outcome must not depend on the audit log
            log.error(
                "audit event not recorded (%s %s by %s, %s): %s: %s",
                fields["action"], fields["resource"], fields["actor"], fields["outcome"],
                type(exc).__name__, exc,
            )  # fmt: skip


def install(app: FastAPI) -> None:
    """Add the audit middleware to ``app`` (outside the problem handlers: it sees final statuses)."""
    app.add_middleware(AuditMiddleware, owner=app)
