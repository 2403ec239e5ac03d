"""The audit log over the API: a tenant's events (its owners), every tenant's (platform admins),
and a JSON-lines export for log pipelines.

Pages are newest first, keyset-paged on the event's ``seq`` (``next_cursor``). The export is
oldest first and streamed, one JSON document per line, each with its ``prev_hash`` and
``hash`` so a log pipeline can re-check the chain.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select, select

from argosy.api import API_PREFIX, Page
from argosy.auth import audit
from argosy.auth.policy import Action
from argosy.server.identity import ContextDep, TenantDep, authorized
from argosy.server.problems import ApiProblem, problem_responses
from argosy.stores.metadata.tables import AuditEvent

tenant_router = APIRouter(
    prefix=f"{API_PREFIX}/tenants/{{tenant}}",
    tags=["audit"],
    dependencies=[Depends(authorized(Action.AUDIT_READ))],
)
admin_router = APIRouter(
    prefix=f"{API_PREFIX}/audit",
    tags=["audit"],
    dependencies=[Depends(authorized(Action.AUDIT_READ_ALL))],
)


class AuditEventDoc(BaseModel):
    """One audit event: who did what to which resource in which tenant, when, from where."""

    seq: int
    id: str
    at: datetime
    tenant: str | None
    actor: str
    actor_kind: str
    action: str
    resource: str | None
    outcome: str
    source: str | None
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str


OutcomeName = Literal["allowed", "denied", "failed"]
LimitQ = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]
CursorQ = Annotated[str | None, Query(max_length=40, description="``next_cursor`` of a page")]
ActorQ = Annotated[str | None, Query(max_length=255, description="only this actor")]
ActionQ = Annotated[str | None, Query(max_length=64, description="only this action")]
OutcomeQ = Annotated[OutcomeName | None, Query(description="only this outcome")]
SinceQ = Annotated[datetime | None, Query(description="only events at or after this time")]
UntilQ = Annotated[datetime | None, Query(description="only events before this time")]


def _encode(seq: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{seq}".encode()).decode().rstrip("=")


def _decode(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        text = ""
    if not text.startswith("audit:") or not text[6:].isdigit():
        raise ApiProblem(
            422, f"invalid cursor {cursor!r}; pass the next_cursor of the previous page",
            code="invalid_cursor",
        )  # fmt: skip
    return int(text[6:])


def _page(
    context: Any,
    query: Select[AuditEvent],
    *,
    actor: str | None,
    action: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[AuditEventDoc]:
    before = _decode(cursor)
    for column, value in ((AuditEvent.actor, actor), (AuditEvent.action, action),
                          (AuditEvent.outcome, outcome)):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    with context.metadata.session() as session:
        rows = session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)).all()
        items = [AuditEventDoc(**audit.document(r)) for r in rows[:limit]]
    more = len(rows) > limit and bool(items)
    return Page[AuditEventDoc](items=items, next_cursor=_encode(items[-1].seq) if more else None)


@tenant_router.get(
    "/audit",
    response_model=Page[AuditEventDoc],
    summary="List a tenant's audit events",
    responses=problem_responses(403),
)
def list_tenant_audit(
    tenant: TenantDep,
    context: ContextDep,
    actor: ActorQ = None,
    action: ActionQ = None,
    outcome: OutcomeQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: LimitQ = 100,
    cursor: CursorQ = None,
) -> Page[AuditEventDoc]:
    """The tenant's events, newest first (tenant owners and platform admins)."""
    return _page(
        context, select(AuditEvent).where(AuditEvent.tenant == tenant), actor=actor,
        action=action, outcome=outcome, since=since, until=until, limit=limit, cursor=cursor,
    )  # fmt: skip


@admin_router.get(
    "",
    response_model=Page[AuditEventDoc],
    summary="List every tenant's audit events",
    responses=problem_responses(403),
)
def list_audit(
    context: ContextDep,
    tenant: Annotated[str | None, Query(max_length=63, description="only this tenant")] = None,
    actor: ActorQ = None,
    action: ActionQ = None,
    outcome: OutcomeQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: LimitQ = 100,
    cursor: CursorQ = None,
) -> Page[AuditEventDoc]:
    """All events (platform admins), newest first; ``tenant`` narrows to one tenant."""
    query = select(AuditEvent)
    if tenant is not None:
        query = query.where(AuditEvent.tenant == tenant)
    return _page(
        context, query, actor=actor, action=action, outcome=outcome, since=since, until=until,
        limit=limit, cursor=cursor,
    )  # fmt: skip


@admin_router.get(
    "/export",
    summary="Export audit events as JSON lines",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "one event per line, oldest first",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        **problem_responses(403),
    },
)
def export_audit(
    context: ContextDep,
    tenant: Annotated[str | None, Query(max_length=63, description="only this tenant")] = None,
    since: SinceQ = None,
) -> StreamingResponse:
    """Every event (platform admins) as JSON lines, streamed oldest first."""

    def lines() -> Iterator[str]:
        with context.metadata.session() as session:
            yield from audit.export(session, since=since, tenant=tenant)

    return StreamingResponse(
        lines(), media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"',
                 "X-Content-Type-Options": "nosniff"},
    )  # fmt: skip


routers = (tenant_router, admin_router)
