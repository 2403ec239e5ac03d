"""Promotions of a model version to an alias, under the tenant's promotion policy.

The policy (the tenant setting ``promotions``: ``{"approval": ["production"],
"expire_after_days": 7}``) names the aliases that move only with a second person's consent.
Promoting to one of them creates a pending request in the approval service
(:mod:`argosy.service.approvals`, kind ``promotion``) instead of moving the alias; an owner
other than the requester approves it — the alias moves in the same transaction, and the alias
event names the requester and the approver — or denies it. A request undecided after
``expire_after_days`` expires. Denied or expired, nothing moves. Other aliases move at once.

There is at most one pending request per move (model, alias, version), held by the database
(a partial unique index on the request's subject, ``ALIAS:VERSION``): the same requester asking
again gets their pending request back (a retried PUT, a repeated CI step, or two sent at the
same moment), and so does a *different* person asking for the same move — the request keeps
its first requester, the second ask is an audit event of its own (``promotion.request`` naming
``pending_by``), and the second person, not being the requester, may approve it if they are an
owner (two people agreed). A move to another version, or to another alias, is a request of its
own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from argosy import api
from argosy.auth import audit
from argosy.errors import NotFoundError
from argosy.service import approvals, models
from argosy.service.context import ServiceContext
from argosy.service.documents import must_utc
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Approval, ModelAliasEvent, Tenant

KIND = "promotion"
SETTING = "promotions"
DEFAULT_EXPIRE_AFTER_DAYS = 7.0


# -- the policy ---------------------------------------------------------------------------------
def get_policy(ctx: ServiceContext) -> api.PromotionPolicy:
    with ctx.metadata.session() as s:
        row = s.scalar(select(Tenant).where(Tenant.name == ctx.tenant))
        found = dict(((row.settings or {}) if row is not None else {}).get(SETTING) or {})
    return api.PromotionPolicy(
        tenant=ctx.tenant, approval=list(found.get("approval") or []),
        expire_after_days=float(found.get("expire_after_days") or DEFAULT_EXPIRE_AFTER_DAYS),
    )  # fmt: skip


def set_policy(ctx: ServiceContext, body: api.PromotionPolicyUpdate) -> api.PromotionPolicy:
    """Set the fields given in the tenant's ``promotions`` setting (owners)."""
    for alias in body.approval or []:
        models.check_alias(alias)
    with ctx.metadata.session() as s:
        q.ensure_tenant(s, ctx.tenant, ctx.actor)  # local mode: the one tenant's row, now
        row = s.scalars(select(Tenant).where(Tenant.name == ctx.tenant).with_for_update()).one()
        settings = dict(row.settings or {})
        current = dict(settings.get(SETTING) or {})
        given = body.model_dump(exclude_unset=True, exclude_none=True)
        if "approval" in given:
            given["approval"] = sorted(set(given["approval"]))
        current.update(given)
        settings[SETTING] = current
        row.settings = settings
        audit.record(s, actor=ctx.actor, actor_kind="user", action="promotion.policy",
                     tenant=ctx.tenant, resource="promotions", detail=current)  # fmt: skip
    return get_policy(ctx)


# -- documents ----------------------------------------------------------------------------------
def _document(ctx: ServiceContext, row: Approval) -> api.PromotionRequest:
    detail = row.detail or {}
    event = None
    if row.state == "approved":
        with ctx.metadata.session() as s:
            moved = s.scalar(select(ModelAliasEvent).where(ModelAliasEvent.approval_id == row.id))
            if moved is not None:
                event = models.event_document(detail["model"], moved)
    return api.PromotionRequest(
        id=row.id, model=detail["model"], alias=detail["alias"], version=detail["version"],
        reason=row.reason or None, state=row.state,  # type: ignore[arg-type]
        requested_by=row.created_by, requested_at=must_utc(row.created_at),
        expires_at=q.as_utc(row.expires_at), decided_by=row.decided_by,
        decided_at=q.as_utc(row.decided_at), comment=row.comment, event=event,
    )  # fmt: skip


# -- use cases ----------------------------------------------------------------------------------
def promote(
    ctx: ServiceContext, name: str, alias: str, body: api.ModelPromote, now: datetime
) -> api.AliasEvent | api.PromotionRequest:
    """Point ``alias`` at ``body.version`` — or, when the policy says the alias needs
    approval, a pending request for it. Promoting the version the alias already points at
    records nothing and returns the last event."""
    models.check_alias(alias)
    policy = get_policy(ctx)
    with ctx.metadata.session() as s:
        model = models.model_row(s, ctx.tenant, name, lock=True)
        target = models.version_row(s, model, str(body.version))
        if models.points_at(s, model, alias) == target.id:
            last = models.last_event(s, model.id, alias, None)
            if last is not None:
                return models.event_document(model.name, last)
        if alias not in policy.approval:
            return models.event_document(
                model.name, models.move_alias(s, ctx, model, alias, target, body.reason)
            )
        model_id, version = model.id, target.version
    approvals.expire_due(ctx, KIND, now)
    detail = {"model": name, "alias": alias, "version": version}
    deadline = now + timedelta(days=policy.expire_after_days)
    row, created = approvals.request_once(
        ctx, KIND, "model", model_id, subject(alias, version), body.reason or "", now, detail,
        expires_at=deadline,
    )  # fmt: skip
    if not created and row.created_by != ctx.actor:
        # another person asked for the same move: theirs is the request (one per move); this
        # ask is kept in the audit log, and whoever asked second may decide it if an owner
        with ctx.metadata.session() as s:
            audit.record(
                s, actor=ctx.actor, actor_kind="user", action=f"{KIND}.request",
                tenant=ctx.tenant, resource=f"{KIND}/{row.id}",
                detail={"target": f"model/{model_id}", "reason": body.reason or "",
                        "pending_by": row.created_by},
            )  # fmt: skip
    return _document(ctx, row)


def subject(alias: str, version: int) -> str:
    """What a promotion request asks of its model (one pending request per subject)."""
    return f"{alias}:{version}"


def decide(
    ctx: ServiceContext, request_id: str, body: api.PromotionDecision, now: datetime
) -> api.PromotionRequest:
    """Approve (the alias moves now, in the same transaction) or deny a pending request;
    never by its requester; an expired one is refused."""
    approvals.expire_due(ctx, KIND, now)
    approvals.refuse_own(ctx, KIND, request_id)
    with ctx.metadata.session() as s:
        row = approvals.decide_in(
            s, ctx, KIND, request_id, approve=body.approve, comment=body.comment, now=now
        )
        if row.state == "approved":
            detail = row.detail or {}
            model = models.model_row(s, ctx.tenant, detail["model"], lock=True)
            target = models.version_row(s, model, str(detail["version"]))
            models.move_alias(
                s, ctx, model, detail["alias"], target, row.reason or None,
                requested_by=row.created_by, approval_id=row.id,
            )  # fmt: skip
    return _document(ctx, row)


def get(ctx: ServiceContext, request_id: str, now: datetime) -> api.PromotionRequest:
    approvals.expire_due(ctx, KIND, now)
    try:
        return _document(ctx, approvals.get(ctx, KIND, request_id))
    except NotFoundError:
        raise NotFoundError(
            f"no promotion request {request_id!r} in tenant {ctx.tenant!r}; list them with "
            "'argosy models requests'",
            code="promotion_not_found",
        ) from None


def list_requests(
    ctx: ServiceContext, now: datetime, state: str | None = None
) -> list[api.PromotionRequest]:
    """The tenant's promotion requests, newest first (of one state with ``state``)."""
    approvals.expire_due(ctx, KIND, now)
    return [_document(ctx, r) for r in approvals.list_of(ctx, KIND, state)]
