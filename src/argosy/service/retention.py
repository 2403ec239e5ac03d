"""Retention of one tenant: its policy, legal holds, retrieval requests of archived data, and
running the lifecycle job (:mod:`argosy.ops.retention`).

A retrieval request names a run or an artifact; it covers the archived blobs of it. An owner
other than the requester approves it (:mod:`argosy.service.approvals`); approving restores
the blobs at once (S3: as soon as S3 has restored them; the lifecycle job keeps asking) and
they stay readable for the window, after which the lifecycle job archives them again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from argosy.api import ops as api_ops
from argosy.auth import audit
from argosy.errors import ConflictError, NotFoundError
from argosy.ids import new_id
from argosy.ops import retention as job
from argosy.service import approvals, search
from argosy.service.context import ServiceContext
from argosy.stores.archive import cold_tier
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Approval, Artifact, BlobTier, LegalHold, Tenant

KIND = "retrieval"


# -- policy -------------------------------------------------------------------------------------
def get_policy(ctx: ServiceContext, defaults: Any) -> api_ops.RetentionPolicy:
    p = job.policy_of(ctx.metadata, ctx.tenant, defaults)
    return api_ops.RetentionPolicy(
        tenant=ctx.tenant, archive_after_days=p.archive_after_days,
        delete_after_days=p.delete_after_days, retrieval_window_days=p.retrieval_window_days,
    )  # fmt: skip


def set_policy(
    ctx: ServiceContext, body: api_ops.RetentionPolicyUpdate, defaults: Any
) -> api_ops.RetentionPolicy:
    """Set the fields given (an explicit null: never) in the tenant's ``retention`` setting."""
    with ctx.metadata.session() as s:
        q.ensure_tenant(s, ctx.tenant, ctx.actor)  # local mode: the one tenant's row, now
        row = s.scalars(select(Tenant).where(Tenant.name == ctx.tenant).with_for_update()).one()
        settings = dict(row.settings or {})
        current = dict(settings.get("retention") or {})
        current.update(body.model_dump(exclude_unset=True))
        settings["retention"] = current
        row.settings = settings
        audit.record(s, actor=ctx.actor, actor_kind="user", action="retention.policy",
                     tenant=ctx.tenant, resource="retention", detail=current)  # fmt: skip
    return get_policy(ctx, defaults)


# -- targets ------------------------------------------------------------------------------------
def _target(ctx: ServiceContext, ref: str) -> tuple[str, str]:
    """("run", id) or ("artifact", id) of a reference (run id or prefix, artifact ref)."""
    with ctx.metadata.session() as s:
        try:
            return "run", q.get_run(s, ctx.tenant, ref).id
        except NotFoundError:
            pass
        try:
            return "artifact", q.get_artifact(s, ctx.tenant, ref).id
        except NotFoundError:
            raise NotFoundError(
                f"{ref!r} is neither a run nor an artifact of tenant {ctx.tenant!r}"
            ) from None


# -- legal holds --------------------------------------------------------------------------------
def _hold(row: LegalHold) -> api_ops.LegalHold:
    return api_ops.LegalHold(
        id=row.id, tenant=row.tenant, target_kind=row.target_kind,  # type: ignore[arg-type]
        target_id=row.target_id, reason=row.reason, created_by=row.created_by,
        created_at=q.as_utc(row.created_at), released_at=q.as_utc(row.released_at),  # type: ignore[arg-type]
        released_by=row.released_by,
    )  # fmt: skip


def place_hold(
    ctx: ServiceContext, body: api_ops.LegalHoldCreate, now: datetime
) -> api_ops.LegalHold:
    kind, target_id = _target(ctx, body.target)
    with ctx.metadata.session() as s:
        row = LegalHold(id=new_id(), tenant=ctx.tenant, created_at=now, created_by=ctx.actor,
                        target_kind=kind, target_id=target_id, reason=body.reason,
                        released_at=None, released_by=None)  # fmt: skip
        s.add(row)
        audit.record(s, actor=ctx.actor, actor_kind="user", action="legal_hold.place",
                     tenant=ctx.tenant, resource=f"{kind}/{target_id}",
                     detail={"reason": body.reason})  # fmt: skip
    return _hold(row)


def release_hold(ctx: ServiceContext, hold_id: str, now: datetime) -> api_ops.LegalHold:
    with ctx.metadata.session() as s:
        row = s.get(LegalHold, hold_id)
        if row is None or row.tenant != ctx.tenant:
            raise NotFoundError(f"no legal hold {hold_id!r} in tenant {ctx.tenant!r}")
        if row.released_at is None:
            row.released_at = now
            row.released_by = ctx.actor
            audit.record(s, actor=ctx.actor, actor_kind="user", action="legal_hold.release",
                         tenant=ctx.tenant, resource=f"{row.target_kind}/{row.target_id}")  # fmt: skip
    return _hold(row)


def list_holds(ctx: ServiceContext) -> list[api_ops.LegalHold]:
    with ctx.metadata.session() as s:
        rows = s.scalars(select(LegalHold).where(LegalHold.tenant == ctx.tenant)
                         .order_by(LegalHold.id.desc()))  # fmt: skip
        return [_hold(r) for r in rows]


# -- retrievals ---------------------------------------------------------------------------------
def _retrieval(row: Approval) -> api_ops.Retrieval:
    return api_ops.Retrieval(
        id=row.id, tenant=row.tenant, target_kind=row.target_kind,  # type: ignore[arg-type]
        target_id=row.target_id, reason=row.reason, state=row.state,  # type: ignore[arg-type]
        requested_by=row.created_by, requested_at=q.as_utc(row.created_at),  # type: ignore[arg-type]
        decided_by=row.decided_by, decided_at=q.as_utc(row.decided_at), comment=row.comment,
        readable_until=q.as_utc(row.expires_at) if row.state == "approved" else None,
        blobs=len((row.detail or {}).get("blobs", [])),
    )  # fmt: skip


def request_retrieval(
    ctx: ServiceContext, body: api_ops.RetrievalCreate, now: datetime
) -> api_ops.Retrieval:
    """Ask for the archived blobs of a run or an artifact back (``ConflictError`` when none
    of it is archived)."""
    kind, target_id = _target(ctx, body.target)
    with ctx.metadata.session() as s:
        column = Artifact.run_id if kind == "run" else Artifact.id
        shas = set(s.scalars(select(Artifact.sha256).where(Artifact.tenant == ctx.tenant,
                                                           column == target_id)))  # fmt: skip
        archived = sorted(s.scalars(select(BlobTier.sha256).where(
            BlobTier.tenant == ctx.tenant, BlobTier.sha256.in_(shas),
            BlobTier.tier.in_(("archived", "archiving")))))  # fmt: skip
    if not archived:
        raise ConflictError(f"nothing of {kind} {target_id} is archived: it can be read as it is",
                            code="not_archived")  # fmt: skip
    row = approvals.request(ctx, KIND, kind, target_id, body.reason, now, {"blobs": archived})
    return _retrieval(row)


def decide_retrieval(
    ctx: ServiceContext, retrieval_id: str, body: api_ops.RetrievalDecision, now: datetime,
    defaults: Any, storage_class: str = "GLACIER",
) -> api_ops.Retrieval:  # fmt: skip
    """Approve (the blobs are restored for the tenant's window) or deny; not by the requester."""
    window = job.policy_of(ctx.metadata, ctx.tenant, defaults).retrieval_window_days
    row = approvals.decide(
        ctx, KIND, retrieval_id, approve=body.approve, comment=body.comment, now=now,
        expires_at=now + timedelta(days=window),
    )  # fmt: skip
    if row.state == "approved":
        job.restore_retrieval(ctx.metadata, cold_tier(ctx.store, storage_class), ctx.tenant,
                              row, now)  # fmt: skip
    return _retrieval(row)


def get_retrieval(ctx: ServiceContext, retrieval_id: str) -> api_ops.Retrieval:
    return _retrieval(approvals.get(ctx, KIND, retrieval_id))


def list_retrievals(ctx: ServiceContext, state: str | None = None) -> list[api_ops.Retrieval]:
    return [_retrieval(r) for r in approvals.list_of(ctx, KIND, state)]


# -- the lifecycle job --------------------------------------------------------------------------
def run_lifecycle(
    ctx: ServiceContext, defaults: Any, now: datetime, **kw: Any
) -> api_ops.LifecycleReport:
    """One pass for the tenant: the log index, then retention (see ``ops/retention.py``)."""
    indexed = search.index_pending(ctx, limit=10_000)
    report = job.run_lifecycle(
        ctx.metadata, ctx.store, job.policy_of(ctx.metadata, ctx.tenant, defaults), now=now,
        storage_class=getattr(defaults, "archive_storage_class", "GLACIER"),
        on_deleted=lambda runs: search.forget_runs(ctx, runs), **kw,
    )  # fmt: skip
    report.indexed_attempts = indexed
    return report
