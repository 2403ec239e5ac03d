"""The lifecycle job of one tenant: retention (archive after N days, delete after M days),
legal holds, retrievals' windows, and the log index.

One pass (:func:`run_lifecycle`), idempotent and resumable — every change is recorded before
its bytes move, so a pass killed at any point is finished by the next one:

1. deletions recorded earlier are finished (``ops/cleanup.py``);
2. blobs left ``archiving`` are archived (their copy in the cold tier made again if needed);
3. approved retrievals whose blobs are not readable yet are restored, readable until the
   retrieval's window ends; windows that ended drop the hot copy again (``archived``);
4. runs done more than M days ago are deleted, rows and bytes together — never one under a
   legal hold (of the run or one of its artifacts) or holding a registered model version;
5. blobs whose every artifact belongs to runs done more than N days ago are archived —
   never one of a held run or artifact, of a model version some alias points at, or of a
   run younger than N days (a cache entry in use: a younger run that reused it).

On a server the leader runs it for every tenant under the scheduler lease (fenced: it stops
when the lease is lost); locally ``argosy retention run`` runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from argosy.api import ops as api_ops
from argosy.auth import audit
from argosy.ids import new_id
from argosy.ops import cleanup, counters
from argosy.states import RUN_DONE
from argosy.stores.archive import ColdTier, cold_tier
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import (
    Approval,
    Artifact,
    BlobTier,
    LegalHold,
    Run,
    Tenant,
)

SYSTEM = "system:lifecycle"


@dataclass(frozen=True)
class Policy:
    """A tenant's retention (days; None: never)."""

    archive_after_days: float | None
    delete_after_days: float | None
    retrieval_window_days: float


def policy_of(metadata: MetadataStore, tenant: str, defaults: Any) -> Policy:
    """The tenant's ``retention`` setting over the platform defaults (``Settings``)."""
    with metadata.session() as s:
        found = s.scalar(select(Tenant.settings).where(Tenant.name == tenant)) or {}
    own = found.get("retention") or {}

    def pick(key: str, default: float | None) -> float | None:
        """The tenant's value (bounded: the settings route stores any JSON), else the default."""
        if key not in own:
            return default
        value = own[key]
        if value is None:
            return None
        try:
            days = float(value)
        except (TypeError, ValueError):
            return default
        return min(max(days, 0.0), api_ops.MAX_DAYS) if math.isfinite(days) else default

    window = pick("retrieval_window_days", defaults.retrieval_window_days)
    return Policy(
        pick("archive_after_days", defaults.retention_archive_days),
        pick("delete_after_days", defaults.retention_delete_days),
        float(window if window is not None else 7.0),
    )


def _ended(run: Run) -> datetime | None:
    return q.as_utc(run.finished_at) or q.as_utc(run.created_at)


def _alias_blobs(session: Any, tenant: str) -> set[str]:
    try:
        from argosy.stores.metadata.tables import ModelAlias, ModelVersionRow
    except ImportError:  # pragma: no cover - without the model registry
        return set()
    return set(
        session.scalars(
            select(ModelVersionRow.sha256)
            .join(ModelAlias, ModelAlias.version_id == ModelVersionRow.id)
            .where(ModelVersionRow.tenant == tenant)
        )
    )


def _held_blobs(session: Any, tenant: str) -> set[str]:
    held_runs = cleanup.held_runs(session, tenant)
    found = set(session.scalars(select(Artifact.sha256).where(Artifact.run_id.in_(held_runs))))
    artifacts = session.scalars(
        select(LegalHold.target_id).where(
            LegalHold.tenant == tenant, LegalHold.target_kind == "artifact",
            LegalHold.released_at.is_(None),
        )
    ).all()  # fmt: skip
    if artifacts:
        found.update(session.scalars(select(Artifact.sha256).where(Artifact.id.in_(artifacts))))
    return found


def _audit(metadata: MetadataStore, tenant: str, action: str, resource: str, **detail: Any) -> None:
    with metadata.session() as s:
        audit.record(s, actor=SYSTEM, actor_kind="system", action=action, tenant=tenant,
                     resource=resource, detail=detail or None)  # fmt: skip


def archive_blob(
    metadata: MetadataStore, tier: ColdTier, tenant: str, sha256: str, size: int, now: datetime
) -> bool:
    """Record, then move one blob to the cold tier (resumable: the row says ``archiving``)."""
    with metadata.session() as s:
        row = s.scalar(select(BlobTier).where(BlobTier.tenant == tenant, BlobTier.sha256 == sha256))
        if row is None:
            s.add(BlobTier(id=new_id(), tenant=tenant, created_at=now, created_by=SYSTEM,
                           sha256=sha256, size=size, tier="archiving", archived_at=None,
                           restored_until=None, retrieval_id=None))  # fmt: skip
        elif row.tier != "archiving":
            return False
    moved = tier.archive(sha256)
    with metadata.session() as s:
        s.execute(
            update(BlobTier)
            .where(BlobTier.tenant == tenant, BlobTier.sha256 == sha256)
            .values(tier="archived", archived_at=now)
        )
    _audit(metadata, tenant, "retention.archive", f"blob/{sha256}", size=size, moved=moved)
    counters.add("lifecycle", "archived")
    return True


def restore_retrieval(
    metadata: MetadataStore, tier: ColdTier, tenant: str, approval: Approval, now: datetime
) -> int:
    """Make an approved retrieval's blobs readable until its window ends; how many are."""
    until = q.as_utc(approval.expires_at) or now
    days = max(1.0, (until - now).total_seconds() / 86400)
    ready = 0
    for sha256 in (approval.detail or {}).get("blobs", []):
        with metadata.session() as s:
            row = s.scalar(
                select(BlobTier).where(BlobTier.tenant == tenant, BlobTier.sha256 == sha256)
            )
            if row is None:  # hot already (never archived, or deleted since)
                continue
        if tier.restore(sha256, days):
            with metadata.session() as s:
                s.execute(
                    update(BlobTier)
                    .where(BlobTier.tenant == tenant, BlobTier.sha256 == sha256)
                    .values(tier="restored", restored_until=until, retrieval_id=approval.id)
                )
            ready += 1
            counters.add("lifecycle", "restored")
    _audit(metadata, tenant, "retrieval.restore", f"retrieval/{approval.id}", blobs=ready,
           until=until.isoformat())  # fmt: skip
    return ready


def run_lifecycle(
    metadata: MetadataStore, store: ArtifactStore, policy: Policy, *, now: datetime,
    storage_class: str = "GLACIER", checkpoint: cleanup.Checkpoint = cleanup._noop,
    on_deleted: Callable[[list[str]], None] | None = None, still_leading: Callable[[], bool] = lambda: True,
) -> api_ops.LifecycleReport:  # fmt: skip
    """One pass of the lifecycle job for the store's tenant (see the module)."""
    tenant = store.tenant
    tier = cold_tier(store, storage_class)
    report = api_ops.LifecycleReport()
    freed = cleanup.resume_deletions(metadata, store, checkpoint=checkpoint, on_deleted=on_deleted)
    report.deleted_runs += len(freed.runs)
    report.deleted_blobs += freed.blobs
    report.deleted_bytes += freed.blob_bytes + freed.record_bytes
    with metadata.session() as s:
        unfinished = list(s.execute(
            select(BlobTier.sha256, BlobTier.size)
            .where(BlobTier.tenant == tenant, BlobTier.tier == "archiving")
        ))  # fmt: skip
    for sha256, size in unfinished:
        archive_blob(metadata, tier, tenant, sha256, size, now)
        report.archived += 1
    # retrievals: restore what was approved, end windows that are over
    with metadata.session() as s:
        approved = list(s.scalars(select(Approval).where(
            Approval.tenant == tenant, Approval.kind == "retrieval", Approval.state == "approved")))  # fmt: skip
        over = list(s.scalars(select(BlobTier).where(
            BlobTier.tenant == tenant, BlobTier.tier == "restored",
            BlobTier.restored_until <= now)))  # fmt: skip
    for row in over:
        tier.drop_hot(row.sha256)
        with metadata.session() as s:
            s.execute(update(BlobTier).where(BlobTier.id == row.id)
                      .values(tier="archived", restored_until=None))  # fmt: skip
        report.rearchived += 1
        counters.add("lifecycle", "rearchived")
    for approval in approved:
        until = q.as_utc(approval.expires_at)
        if until is not None and until <= now:
            with metadata.session() as s:
                s.execute(
                    update(Approval).where(Approval.id == approval.id).values(state="expired")
                )
            _audit(metadata, tenant, "retrieval.expired", f"retrieval/{approval.id}")
            report.expired_retrievals += 1
            continue
        report.restored += restore_retrieval(metadata, tier, tenant, approval, now)
    if not still_leading():
        return report
    # delete after M days
    if policy.delete_after_days is not None:
        cutoff = now - timedelta(days=policy.delete_after_days)
        with metadata.session() as s:
            old = [r.id for r in s.scalars(select(Run).where(Run.tenant == tenant,
                   Run.status.in_(RUN_DONE))) if (_ended(r) or now) < cutoff]  # fmt: skip
        planned = cleanup.plan_deletion(metadata, tenant, old, why="retention", actor=SYSTEM,
                                        now=now, check=False)  # fmt: skip
        report.held += len(old) - len(planned)
        if planned:
            _audit(metadata, tenant, "retention.delete", f"runs/{len(planned)}", runs=planned)
        freed = cleanup.resume_deletions(metadata, store, checkpoint=checkpoint,
                                         on_deleted=on_deleted)  # fmt: skip
        report.deleted_runs += len(freed.runs)
        report.deleted_blobs += freed.blobs
        report.deleted_bytes += freed.blob_bytes + freed.record_bytes
    if not still_leading():
        return report
    # archive after N days
    if policy.archive_after_days is not None:
        cutoff = now - timedelta(days=policy.archive_after_days)
        with metadata.session() as s:
            runs = {r.id: r for r in s.scalars(select(Run).where(Run.tenant == tenant))}
            young = {
                rid for rid, r in runs.items()
                if r.status not in RUN_DONE or (_ended(r) or now) >= cutoff
            }  # fmt: skip
            sizes: dict[str, int] = {}
            keep: set[str] = set()
            for sha256, run_id, size in s.execute(
                select(Artifact.sha256, Artifact.run_id, Artifact.size).where(
                    Artifact.tenant == tenant
                )
            ):
                sizes[sha256] = size
                if run_id in young:
                    keep.add(sha256)
            held = _held_blobs(s, tenant)
            keep |= held | _alias_blobs(s, tenant)
            tiered = set(s.scalars(select(BlobTier.sha256).where(BlobTier.tenant == tenant)))
        due = sorted(set(sizes) - keep - tiered)
        report.held += len((set(sizes) - tiered - (keep - held)) & held)
        for sha256 in due:
            if not still_leading():
                break
            if archive_blob(metadata, tier, tenant, sha256, sizes[sha256], now):
                report.archived += 1
                report.archived_bytes += sizes[sha256]
            checkpoint("archived")
    return report


def now_utc() -> datetime:
    return datetime.now(UTC)
