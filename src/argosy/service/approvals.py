"""One approval service: a request that someone other than its requester decides.

Every approval is a row of ``approvals`` (its kind, what it is about, why, who asked, who
decided, when, and until when what it grants lasts) and each step is an audit event. The
rule is the same for every kind: the route lets only those who may decide call
:func:`decide` (tenant owners and platform admins for retrievals), and the requester never
decides their own request, so a tenant whose only owner asks needs a platform admin.
Retrievals of archived data use it (:mod:`argosy.service.retention`), and so do promotions
of a model to an alias that needs approval (:mod:`argosy.service.promotions`), which give a
pending request a deadline (``expires_at``): undecided by then, :func:`expire_due` marks it
``expired`` and it can no longer be approved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from argosy.auth import audit
from argosy.errors import ConflictError, NotFoundError
from argosy.ids import new_id
from argosy.service.context import ServiceContext
from argosy.stores.metadata.tables import Approval


def request(
    ctx: ServiceContext, kind: str, target_kind: str, target_id: str, reason: str,
    now: datetime, detail: dict[str, Any] | None = None, expires_at: datetime | None = None,
    subject: str | None = None,
) -> Approval:  # fmt: skip
    """A pending request of ``kind`` about ``target``, by the context's actor (undecided at
    ``expires_at``, it expires). With a ``subject``, the database refuses a second pending
    request of the same kind, target and subject (``IntegrityError``; :func:`request_once`
    turns it into the request that exists)."""
    with ctx.metadata.session() as s:
        row = Approval(
            id=new_id(), tenant=ctx.tenant, created_at=now, created_by=ctx.actor, kind=kind,
            target_kind=target_kind, target_id=target_id, reason=reason, state="pending",
            detail=detail, expires_at=expires_at, subject=subject,
        )  # fmt: skip
        s.add(row)
        audit.record(
            s, actor=ctx.actor, actor_kind="user", action=f"{kind}.request", tenant=ctx.tenant,
            resource=f"{kind}/{row.id}", detail={"target": f"{target_kind}/{target_id}",
                                                "reason": reason},
        )  # fmt: skip
    return row


def pending_for(ctx: ServiceContext, kind: str, target_id: str, subject: str) -> Approval | None:
    """The pending request of ``kind`` about ``target_id`` and ``subject``: at most one."""
    with ctx.metadata.session() as s:
        return s.scalar(
            select(Approval).where(
                Approval.tenant == ctx.tenant, Approval.kind == kind,
                Approval.target_id == target_id, Approval.subject == subject,
                Approval.state == "pending",
            )
        )  # fmt: skip


def request_once(
    ctx: ServiceContext, kind: str, target_kind: str, target_id: str, subject: str,
    reason: str, now: datetime, detail: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> tuple[Approval, bool]:  # fmt: skip
    """The one pending request of ``kind`` about ``target_id`` and ``subject``: the one that
    exists (whoever asked for it), else a new one by the context's actor; and whether it is
    new. Two callers at once create one: the partial unique index
    ``uq_approvals_pending_subject`` refuses the second insert, which then reads the first."""
    for _ in range(3):  # the existing one may be decided between the refusal and the read
        found = pending_for(ctx, kind, target_id, subject)
        if found is not None:
            return found, False
        try:
            return request(ctx, kind, target_kind, target_id, reason, now, detail,
                           expires_at=expires_at, subject=subject), True  # fmt: skip
        except IntegrityError:
            continue
    raise ConflictError(
        f"the {kind} request for {subject} changed three times while asking; ask again",
        code="busy",
    )


def get(ctx: ServiceContext, kind: str, approval_id: str) -> Approval:
    with ctx.metadata.session() as s:
        row = s.get(Approval, approval_id)
        if row is None or row.tenant != ctx.tenant or row.kind != kind:
            raise NotFoundError(f"no {kind} request {approval_id!r} in tenant {ctx.tenant!r}")
        return row


def list_of(ctx: ServiceContext, kind: str, state: str | None = None) -> list[Approval]:
    with ctx.metadata.session() as s:
        query = select(Approval).where(Approval.tenant == ctx.tenant, Approval.kind == kind)
        if state is not None:
            query = query.where(Approval.state == state)
        return list(s.scalars(query.order_by(Approval.id.desc())))


def expire_due(ctx: ServiceContext, kind: str, now: datetime) -> int:
    """Mark the pending requests of ``kind`` whose deadline has passed ``expired`` (each an
    audit event); how many."""
    with ctx.metadata.session() as s:
        due = list(s.scalars(
            select(Approval).where(
                Approval.tenant == ctx.tenant, Approval.kind == kind, Approval.state == "pending",
                Approval.expires_at.is_not(None), Approval.expires_at <= now,
            ).with_for_update()
        ))  # fmt: skip
        for row in due:
            row.state = "expired"
            audit.record(
                s, actor="argosy", actor_kind="system", action=f"{kind}.expired",
                tenant=ctx.tenant, resource=f"{kind}/{row.id}",
                detail={"deadline": row.expires_at.isoformat() if row.expires_at else None},
            )  # fmt: skip
    return len(due)


def decide(
    ctx: ServiceContext, kind: str, approval_id: str, *, approve: bool, comment: str | None,
    now: datetime, expires_at: datetime | None = None,
) -> Approval:  # fmt: skip
    """Approve (until ``expires_at``) or deny a pending request; never by its requester."""
    refuse_own(ctx, kind, approval_id)
    with ctx.metadata.session() as s:
        return decide_in(s, ctx, kind, approval_id, approve=approve, comment=comment, now=now,
                         expires_at=expires_at)  # fmt: skip


def refuse_own(ctx: ServiceContext, kind: str, approval_id: str) -> None:
    """Raise ``ConflictError`` (the refusal kept in the audit log) when the context's actor
    asked for this request: nobody decides their own. Call before :func:`decide_in`."""
    with ctx.metadata.session() as s:
        row = s.get(Approval, approval_id)
        if row is None or row.tenant != ctx.tenant or row.kind != kind:
            raise NotFoundError(f"no {kind} request {approval_id!r} in tenant {ctx.tenant!r}")
        own = row.created_by == ctx.actor
        if own:
            audit.record(
                s, actor=ctx.actor, actor_kind="user", action=f"{kind}.decide",
                tenant=ctx.tenant, resource=f"{kind}/{row.id}", outcome="denied",
                detail={"why": "own request"},
            )  # fmt: skip
    if own:
        raise ConflictError(
            f"{ctx.actor} asked for {kind} {approval_id} and cannot decide it; another owner "
            "of the tenant (or a platform admin, where the tenant has one owner) decides",
            code="own_request",
        )


def decide_in(
    s: Session, ctx: ServiceContext, kind: str, approval_id: str, *, approve: bool,
    comment: str | None, now: datetime, expires_at: datetime | None = None,
) -> Approval:  # fmt: skip
    """:func:`decide` in the caller's transaction, so what the approval grants can be done in
    it too (a promotion moves its alias): both are kept, or neither. The caller calls
    :func:`refuse_own` first (its refusal is audited in a transaction of its own)."""
    row = s.get(Approval, approval_id, with_for_update=True)
    if row is None or row.tenant != ctx.tenant or row.kind != kind:
        raise NotFoundError(f"no {kind} request {approval_id!r} in tenant {ctx.tenant!r}")
    if row.created_by == ctx.actor:  # refuse_own said so already, with its audit event
        raise ConflictError(f"{ctx.actor} cannot decide their own {kind} {row.id}",
                            code="own_request")  # fmt: skip
    if row.state == "expired":
        raise ConflictError(
            f"{kind} {row.id} expired undecided; nothing was done: ask again", code="expired"
        )
    if row.state != "pending":
        raise ConflictError(f"{kind} {row.id} was already {row.state}", code="decided")
    row.state = "approved" if approve else "denied"
    row.decided_by = ctx.actor
    row.decided_at = now
    row.comment = comment
    row.expires_at = expires_at if approve else None
    audit.record(
        s, actor=ctx.actor, actor_kind="user", action=f"{kind}.{row.state}",
        tenant=ctx.tenant, resource=f"{kind}/{row.id}",
        detail={"comment": comment, "until": expires_at.isoformat() if expires_at else None},
    )  # fmt: skip
    return row
