"""The wire documents of operations: log search, cost, retention, retrievals, clean-up.

Kept beside :mod:`argosy.api.documents` (same base classes, same rules: requests forbid
unknown fields, responses allow them) and imported as ``argosy.api.ops``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from argosy.api.documents import Document, Request, Versioned

# -- log search ---------------------------------------------------------------------------------


class LogHit(Document):
    """One log line that matched a search, with where it came from."""

    run_id: str
    pipeline: str
    node_path: str
    step_name: str
    attempt: int
    attempt_id: str
    line_number: int  # 1-based, within the attempt's log
    time: str
    stream: str
    line: str


class LogSearchPage(Versioned):
    """Matching lines, newest first; pass ``next_cursor`` back as ``cursor`` for older ones."""

    items: list[LogHit]
    next_cursor: str | None = None
    query: str
    indexed_attempts: int = 0  # attempts this call indexed first (their logs were new)


# -- cost ---------------------------------------------------------------------------------------

CostGroup = Literal["tenant", "pipeline", "run", "user", "day", "task"]


class CostLine(Document):
    """The cost of one group (a tenant, pipeline, run, user, day or task) and what it used."""

    key: str
    tenant: str
    attempts: int
    cpu_hours: float  # charged: max(requested, used) cores x hours
    memory_gib_hours: float  # charged: max(requested, peak) GiB x hours
    gpu_hours: float
    wall_hours: float
    cost: float


class CostReport(Versioned):
    """Cost per group over ``[since, until)``, in the price list's currency."""

    by: CostGroup
    since: datetime | None = None
    until: datetime | None = None
    currency: str
    items: list[CostLine]
    total: float


class Budget(Document):
    """A tenant's monthly budget and what this month has cost so far."""

    tenant: str
    monthly: float | None
    warn_at: float  # fraction of the budget at which the warning metric fires
    month_to_date: float
    currency: str
    state: Literal["none", "ok", "warning", "exceeded"]


# -- retention, holds and retrievals ------------------------------------------------------------


class RetentionPolicy(Document):
    """A tenant's retention: archive after N days, delete after M days (None: never)."""

    tenant: str
    archive_after_days: float | None
    delete_after_days: float | None
    retrieval_window_days: float


MAX_DAYS = 36_500  # a century: any longer is "never" (leave the field unset)


class RetentionPolicyUpdate(Request):
    """Days are bounded (a value stored here is used in date arithmetic by every later job:
    an unbounded one would break them, not this request)."""

    archive_after_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)
    delete_after_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)
    retrieval_window_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)


class LegalHoldCreate(Request):
    target: str = Field(min_length=4, max_length=600, description="a run id or an artifact ref")
    reason: str = Field(min_length=1, max_length=2000)


class LegalHold(Document):
    id: str
    tenant: str
    target_kind: Literal["run", "artifact"]
    target_id: str
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None = None
    released_by: str | None = None


class RetrievalCreate(Request):
    target: str = Field(min_length=4, max_length=600, description="a run id or an artifact ref")
    reason: str = Field(min_length=1, max_length=2000)


class RetrievalDecision(Request):
    approve: bool
    comment: str | None = Field(default=None, max_length=2000)


class Retrieval(Document):
    """A request to bring archived artifacts back, decided by an owner other than the requester."""

    id: str
    tenant: str
    target_kind: Literal["run", "artifact"]
    target_id: str
    reason: str
    state: Literal["pending", "approved", "denied", "expired"]
    requested_by: str
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str | None = None
    readable_until: datetime | None = None
    blobs: int = 0  # how many archived blobs it covers


class LifecycleReport(Document):
    """What one pass of the lifecycle job did (per tenant, or summed)."""

    archived: int = 0
    archived_bytes: int = 0
    rearchived: int = 0
    restored: int = 0
    deleted_runs: int = 0
    deleted_blobs: int = 0
    deleted_bytes: int = 0
    indexed_attempts: int = 0
    expired_retrievals: int = 0
    held: int = 0  # blobs or runs due but kept by a legal hold


# -- garbage collection -------------------------------------------------------------------------


class GcReport(Document):
    """What ``gc`` found (``dry_run``) or removed: unreferenced blobs, leftover folders, logs."""

    dry_run: bool
    blobs: int = 0
    blob_bytes: int = 0
    attempt_folders: int = 0
    attempt_folder_bytes: int = 0
    logs: int = 0
    log_bytes: int = 0
    cache_files: int = 0
    cache_bytes: int = 0
    total_bytes: int = 0


class RunsDeleted(Document):
    runs: list[str]
    artifacts: int
    blobs_freed: int
    bytes_freed: int
