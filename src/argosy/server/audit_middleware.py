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

**Refusals are recorded in aggregate** (:class:`Aggregator`), so a flood cannot flood the log:
a failed authentication (401), and a request refused for its rate (429), size (413), media
type (415) or slowness (408) — whatever its method — is written at once only if it is the
first of its kind (status, client address, actor, action) in a window of
:data:`WINDOW_SECONDS`; the rest of the window is counted, and written as one event when the
window closes (``detail.aggregated``: how many, ``detail.paths``: the most frequent paths, the
window's start and end). Windows are closed as requests come and every few seconds by the app's
lifespan (:func:`flushing`), and all at shutdown. The source is the client address admission
worked out (behind a trusted proxy, the forwarded one).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy.auth import audit

log = logging.getLogger("argosy.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIED = frozenset({401, 403})
AGGREGATED = frozenset({401, 408, 413, 415, 429})  # refusals a flood repeats: counted
WINDOW_SECONDS = 60.0
MAX_TALLIES = 1000  # kinds of refusal tracked at once; beyond: one shared tally per status
FLUSH_EVERY_S = 5.0
ARTIFACT_CONTENT = re.compile(r"^/api/v1/tenants/[^/]+/artifacts/[^/]+/content/?$")
TENANT_IN_PATH = re.compile(r"^/api/v1/tenants/([a-z0-9][-a-z0-9]{0,62})(?:/|$)")


def should_record(method: str, path: str, status: int) -> bool:
    return method in MUTATING or status in DENIED or status in AGGREGATED or (
        method == "GET" and ARTIFACT_CONTENT.match(path) is not None
    )  # fmt: skip


@dataclass
class _Tally:
    fields: dict[str, Any]  # the first event of the window
    opened: float  # monotonic
    opened_at: datetime
    count: int = 0  # events after the first, not written
    paths: Counter[str] = field(default_factory=Counter)


class Aggregator:
    """Counts repeated refusals per (status, source, actor, action) and window."""

    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self._clock = clock
        self._tallies: dict[tuple[Any, ...], _Tally] = {}
        self._done: list[dict[str, Any]] = []  # aggregates of windows closed by a new one
        self._next_scan = 0.0
        self._lock = threading.Lock()

    def admit(self, fields: dict[str, Any]) -> bool:
        """True if the event is to be written now; False if it was counted instead."""
        status = fields["detail"].get("status")
        if status not in AGGREGATED:
            return True
        key: tuple[Any, ...] = (status, fields["source"], fields["actor"], fields["action"])
        now = self._clock()
        with self._lock:
            if key not in self._tallies and len(self._tallies) >= MAX_TALLIES:
                key = (status, "*")  # too many kinds at once: one tally per status
            tally = self._tallies.get(key)
            if tally is None or now - tally.opened >= self.window:
                if tally is not None and tally.count:  # its window is over: written next flush
                    self._done.append(self._aggregate(key, tally))
                self._tallies[key] = _Tally(fields, now, datetime.now(UTC))
                return True
            tally.count += 1
            if len(tally.paths) < 20 or fields["resource"] in tally.paths:
                tally.paths[fields["resource"]] += 1
            return False

    def closed(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """The aggregate events of the windows that are over (``everything``: all of them)."""
        now = self._clock()
        if not everything and not self._done and now < self._next_scan:
            return []  # scanned less than a second ago
        with self._lock:
            self._next_scan = now + 1.0
            events, self._done = self._done, []
            for key, tally in list(self._tallies.items()):
                if not everything and now - tally.opened < self.window:
                    continue
                del self._tallies[key]
                if tally.count:
                    events.append(self._aggregate(key, tally))
        return events

    def _aggregate(self, key: tuple[Any, ...], tally: _Tally) -> dict[str, Any]:
        first = dict(tally.fields)
        detail = {k: v for k, v in first["detail"].items() if k in ("method", "status", "reason")}
        detail.update(
            aggregated=tally.count, window_start=tally.opened_at.isoformat(),
            window_end=datetime.now(UTC).isoformat(), paths=dict(tally.paths.most_common(10)),
        )  # fmt: skip
        if key[1] == "*":
            first.update(source=None, actor="various", actor_kind="anonymous")
        first.update(detail=detail, resource=f"{tally.count} more like {first['resource']}")
        return first


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
        self.aggregator: Aggregator | None = getattr(owner.state, "audit_aggregator", None)

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
        if self.aggregator is not None and (closed := self.aggregator.closed()):
            await anyio.to_thread.run_sync(self._write_all, closed)

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
            "source": state.get("client_address") or (client[0] if client else None),
            "detail": detail,
        }
        if self.aggregator is not None and not self.aggregator.admit(fields):
            return  # counted: written with its window
        await anyio.to_thread.run_sync(self._write, fields)

    def _write(self, fields: dict[str, Any]) -> None:
        write(self.owner, [fields])

    def _write_all(self, events: list[dict[str, Any]]) -> None:
        write(self.owner, events)


def write(app: FastAPI, events: list[dict[str, Any]]) -> None:
    """Record ``events`` (a failure is logged: the request's outcome never depends on it)."""
    for fields in events:
        try:
            context = app.state.context
            with context.metadata.session() as session:
                audit.record(session, **fields)
        except Exception as exc:  # the request's outcome must not depend on the audit log
            log.error(
                "audit event not recorded (%s %s by %s, %s): %s: %s",
                fields["action"], fields["resource"], fields["actor"], fields["outcome"],
                type(exc).__name__, exc,
            )  # fmt: skip


@asynccontextmanager
async def flushing(app: FastAPI) -> AsyncIterator[None]:
    """While the app serves: write the aggregate events of closed windows every few seconds;
    at the end, write all that are left (used by the app's lifespan)."""
    aggregator: Aggregator | None = getattr(app.state, "audit_aggregator", None)
    if aggregator is None:
        yield
        return

    async def every_few_seconds() -> None:
        while True:
            await anyio.sleep(FLUSH_EVERY_S)
            if closed := aggregator.closed():
                await anyio.to_thread.run_sync(write, app, closed)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(every_few_seconds)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
    if rest := aggregator.closed(everything=True):
        await anyio.to_thread.run_sync(write, app, rest)


def install(app: FastAPI) -> None:
    """Add the audit middleware to ``app`` (outside the problem handlers: it sees final statuses;
    outside admission: it records admission's refusals, in aggregate)."""
    app.state.audit_aggregator = Aggregator()
    app.add_middleware(AuditMiddleware, owner=app)
