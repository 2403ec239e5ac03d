"""Deleting runs (their rows and bytes together) and collecting garbage.

**Deleting a run** is journaled so that no half is ever left for good: first a ``deletions``
row records the intent (and which blobs and records go with it), then the bytes are removed
(idempotent: removing what is gone already is fine), then the run's rows and the intent go in
one transaction. A job killed at any point finds the intent on its next pass
(:func:`resume_deletions`) and finishes it. A blob goes only if nothing else in the tenant
refers to it (another run's artifacts or inputs, an upload, a pipeline version's code, a
registered model version); a run that is running, under a legal hold, or holds a registered
model version is refused.

**Garbage collection** (``argosy gc``) removes what no row refers to: blobs of the tenant no
artifact, input, upload, pipeline version, model version or archive entry names (younger
than an hour are kept: a task may be storing outputs not registered yet), log and result
records of runs that no longer exist, attempt folders of attempts that are not running, and
the download cache. ``dry_run`` reports the same figures without removing anything.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from argosy.errors import ConflictError
from argosy.ids import new_id
from argosy.ops import counters
from argosy.states import RUN_DONE
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import (
    Artifact,
    Attempt,
    AttemptUpload,
    BlobTier,
    Deletion,
    IdempotencyKey,
    LegalHold,
    LogIndexMark,
    PipelineVersion,
    Run,
    RunTag,
    Task,
    TaskInput,
    Upload,
)

BLOB_GRACE_S = 3600.0  # an unreferenced blob younger than this is kept (outputs being stored)
_SHA = re.compile(r"[0-9a-f]{64}")

# what may call back between steps (tests kill a job there)
Checkpoint = Callable[[str], None]


def _noop(_: str) -> None:
    return None


@dataclass
class Freed:
    blobs: int = 0
    blob_bytes: int = 0
    records: int = 0
    record_bytes: int = 0
    runs: list[str] = field(default_factory=list)
    artifacts: int = 0


def object_size(store: ArtifactStore, key: str) -> int:
    """The stored size of an object (0 when it cannot be told cheaply or is gone)."""
    local = store.backend.local_path(key)
    if local is not None:
        try:
            return local.stat().st_size
        except OSError:
            return 0
    head = getattr(store.backend, "client", None)
    if head is not None and hasattr(store.backend, "bucket"):
        try:
            full = store.backend._key(key)  # type: ignore[attr-defined]
            return int(head.head_object(Bucket=store.backend.bucket, Key=full)["ContentLength"])
        except Exception:
            return 0
    return 0


def archive_key(store: ArtifactStore, sha256: str) -> str:
    """Where the cold tier keeps a blob (beside the tenant's hot blobs, under ``archive/``)."""
    return f"{store.prefix}archive/blobs/sha256/{sha256[:2]}/{sha256}"


# -- references ---------------------------------------------------------------------------------
def referenced_blobs(session: Session, tenant: str, *, except_runs: Iterable[str] = ()) -> set[str]:
    """Every blob the tenant's rows name (but those of ``except_runs``' artifacts and inputs)."""
    skip = list(except_runs)
    found: set[str] = set()
    query = select(Artifact.sha256).where(Artifact.tenant == tenant)
    inputs = select(TaskInput.sha256).where(
        TaskInput.tenant == tenant, TaskInput.sha256.is_not(None)
    )
    if skip:
        query = query.where(Artifact.run_id.not_in(skip))
        inputs = inputs.where(TaskInput.run_id.not_in(skip))
    found.update(session.scalars(query))
    found.update(s for s in session.scalars(inputs) if s)
    found.update(session.scalars(select(Upload.sha256).where(Upload.tenant == tenant)))
    found.update(
        session.scalars(select(AttemptUpload.sha256).where(AttemptUpload.tenant == tenant))
    )
    for spec, provenance in session.execute(
        select(PipelineVersion.spec, PipelineVersion.provenance).where(
            PipelineVersion.tenant == tenant
        )
    ):  # code packages and environments are named by their sha256 inside the spec
        found.update(_SHA.findall(str(spec)))
        if provenance:
            found.update(_SHA.findall(str(provenance)))
    found.update(_model_blobs(session, tenant))
    return found


def _model_blobs(session: Session, tenant: str) -> set[str]:
    try:
        from argosy.stores.metadata.tables import ModelVersionRow
    except ImportError:  # pragma: no cover - without the model registry
        return set()
    return set(
        session.scalars(select(ModelVersionRow.sha256).where(ModelVersionRow.tenant == tenant))
    )


def _model_runs(session: Session, tenant: str, run_ids: list[str]) -> set[str]:
    try:
        from argosy.stores.metadata.tables import ModelVersionRow
    except ImportError:  # pragma: no cover
        return set()
    return set(
        session.scalars(
            select(ModelVersionRow.run_id).where(
                ModelVersionRow.tenant == tenant, ModelVersionRow.run_id.in_(run_ids)
            )
        )
    )


def held_runs(session: Session, tenant: str) -> set[str]:
    """Runs under a legal hold, directly or through one of their artifacts."""
    holds = session.execute(
        select(LegalHold.target_kind, LegalHold.target_id).where(
            LegalHold.tenant == tenant, LegalHold.released_at.is_(None)
        )
    ).all()
    runs = {t for kind, t in holds if kind == "run"}
    artifacts = [t for kind, t in holds if kind == "artifact"]
    if artifacts:
        runs.update(session.scalars(select(Artifact.run_id).where(Artifact.id.in_(artifacts))))
    return runs


# -- deleting runs ------------------------------------------------------------------------------
def plan_deletion(
    metadata: MetadataStore, tenant: str, run_ids: list[str], *, why: str, actor: str,
    now: datetime | None = None, check: bool = True,
) -> list[str]:  # fmt: skip
    """Record the intent to delete ``run_ids`` (with what goes with them); returns their ids.

    ``check``: refuse runs that are not done, are held, or hold a registered model version
    (``ConflictError``); without it (the retention job) such runs are skipped."""
    stamp = now or datetime.now(UTC)
    planned: list[str] = []
    with metadata.session() as s:
        runs = {
            r.id: r for r in s.scalars(select(Run).where(Run.tenant == tenant, Run.id.in_(run_ids)))
        }
        held = held_runs(s, tenant)
        models = _model_runs(s, tenant, list(runs))
        pending = set(s.scalars(select(Deletion.target_id).where(Deletion.target_id.in_(run_ids))))
        for run_id in run_ids:
            run = runs.get(run_id)
            problem = None
            if run is None:
                continue
            if run.status not in RUN_DONE:
                problem = f"run {run_id} is {run.status}: cancel it and wait for it to end first"
            elif run_id in held:
                problem = f"run {run_id} is under a legal hold; release the hold to delete it"
            elif run_id in models:
                problem = f"run {run_id} holds a registered model version; it is kept"
            if problem is not None:
                if check:
                    raise ConflictError(problem, code="not_deletable")
                continue
            if run_id not in pending:
                s.add(
                    Deletion(
                        id=new_id(), tenant=tenant, created_at=stamp, created_by=actor,
                        target_kind="run", target_id=run_id, why=why, detail=None,
                    )
                )  # fmt: skip
            planned.append(run_id)
    return planned


def _run_blobs(session: Session, tenant: str, run_id: str, others: set[str]) -> list[str]:
    mine = set(session.scalars(select(Artifact.sha256).where(Artifact.run_id == run_id)))
    return sorted(mine - others)


def resume_deletions(
    metadata: MetadataStore, store: ArtifactStore, *, checkpoint: Checkpoint = _noop,
    on_deleted: Callable[[list[str]], None] | None = None,
) -> Freed:  # fmt: skip
    """Finish every recorded deletion of the store's tenant: bytes, then rows with the intent."""
    tenant = store.tenant
    freed = Freed()
    with metadata.session() as s:
        intents = list(
            s.scalars(select(Deletion).where(Deletion.tenant == tenant).order_by(Deletion.id))
        )
    for intent in intents:
        run_id = intent.target_id
        with metadata.session() as s:
            detail = intent.detail
            if detail is None:  # what goes with it, fixed once (rows may already be gone)
                others = referenced_blobs(s, tenant, except_runs=[run_id])
                detail = {"blobs": _run_blobs(s, tenant, run_id, others)}
                s.execute(update(Deletion).where(Deletion.id == intent.id).values(detail=detail))
        checkpoint("planned")
        for sha256 in detail["blobs"]:
            for key in (store.blob_key(sha256), archive_key(store, sha256)):
                size = object_size(store, key)
                if store.backend.exists(key):
                    store.backend.delete(key)
                    freed.blobs += 1
                    freed.blob_bytes += size
            checkpoint("blob")
        prefix = store.record_key(f"runs/{run_id}") + "/"
        for key in list(store.backend.list(prefix)):
            freed.record_bytes += object_size(store, key)
            store.backend.delete(key)
            freed.records += 1
        checkpoint("bytes")
        with metadata.session() as s:
            freed.artifacts += _delete_rows(s, tenant, run_id)
            s.execute(
                delete(BlobTier).where(
                    BlobTier.tenant == tenant, BlobTier.sha256.in_(detail["blobs"])
                )
            )
            s.execute(delete(Deletion).where(Deletion.id == intent.id))
        freed.runs.append(run_id)
        counters.add("lifecycle", "runs_deleted")
        checkpoint("rows")
    if on_deleted is not None and freed.runs:
        on_deleted(freed.runs)
    return freed


def _delete_rows(s: Session, tenant: str, run_id: str) -> int:
    """The run's rows, children first (other runs' inputs keep the sha256 of what they read)."""
    mine = select(Artifact.id).where(Artifact.run_id == run_id).scalar_subquery()
    s.execute(
        update(TaskInput)
        .where(TaskInput.artifact_id.in_(mine), TaskInput.run_id != run_id)
        .values(artifact_id=None)
    )
    s.execute(delete(TaskInput).where(TaskInput.run_id == run_id))
    artifacts = len(s.scalars(select(Artifact.id).where(Artifact.run_id == run_id)).all())
    s.execute(delete(Artifact).where(Artifact.run_id == run_id))
    for table in (LogIndexMark, IdempotencyKey, RunTag):
        s.execute(delete(table).where(table.run_id == run_id))
    s.execute(delete(Attempt).where(Attempt.run_id == run_id))
    s.execute(delete(Task).where(Task.run_id == run_id))
    s.execute(delete(Run).where(Run.id == run_id, Run.tenant == tenant))
    return int(artifacts or 0)


# -- garbage collection -------------------------------------------------------------------------
@dataclass
class Garbage:
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (key, size)
    records: list[tuple[str, int]] = field(default_factory=list)
    attempt_folders: list[tuple[Path, int]] = field(default_factory=list)
    cache_files: list[tuple[Path, int]] = field(default_factory=list)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def _blob_age_s(store: ArtifactStore, key: str) -> float:
    local = store.backend.local_path(key)
    if local is None:
        return BLOB_GRACE_S + 1  # no cheap age: a remote store relies on the run rows
    try:
        return time.time() - local.stat().st_mtime
    except OSError:
        return 0.0


def find_garbage(
    metadata: MetadataStore, store: ArtifactStore, *, attempts_dir: Path | None,
    cache_dir: Path | None, grace_s: float = BLOB_GRACE_S,
) -> Garbage:  # fmt: skip
    """What :func:`collect` would remove for the store's tenant."""
    tenant = store.tenant
    found = Garbage()
    with metadata.session() as s:
        referenced = referenced_blobs(s, tenant)
        referenced.update(s.scalars(select(BlobTier.sha256).where(BlobTier.tenant == tenant)))
        runs = set(s.scalars(select(Run.id).where(Run.tenant == tenant)))
        running = set(s.scalars(select(Attempt.id).where(Attempt.state == "running")))
        deleting = set(s.scalars(select(Deletion.target_id).where(Deletion.tenant == tenant)))
    blob_prefix = f"{store.prefix}blobs/sha256/"
    for key in store.backend.list(blob_prefix):
        sha256 = key.rsplit("/", 1)[-1]
        if sha256 in referenced or not _SHA.fullmatch(sha256):
            continue
        if _blob_age_s(store, key) < grace_s:
            continue
        found.blobs.append((key, object_size(store, key)))
    runs_prefix = store.record_key("runs") + "/"
    for key in store.backend.list(runs_prefix):
        run_id = key[len(runs_prefix) :].split("/", 1)[0]
        if run_id not in runs and run_id not in deleting:
            found.records.append((key, object_size(store, key)))
    if attempts_dir is not None and attempts_dir.is_dir():
        for folder in sorted(attempts_dir.iterdir()):
            if folder.is_dir() and folder.name not in running:
                found.attempt_folders.append((folder, _tree_size(folder)))
    if cache_dir is not None and cache_dir.is_dir():
        for path in sorted(cache_dir.iterdir()):
            if path.is_file() and _SHA.fullmatch(path.name.split(".")[0]):
                found.cache_files.append((path, path.stat().st_size))
    return found


def collect(store: ArtifactStore, garbage: Garbage) -> None:
    """Remove what :func:`find_garbage` found."""
    for key, _ in garbage.blobs:
        store.backend.delete(key)
    for key, _ in garbage.records:
        store.backend.delete(key)
    for folder, _ in garbage.attempt_folders:
        shutil.rmtree(folder, ignore_errors=True)
    for path, _ in garbage.cache_files:
        path.unlink(missing_ok=True)
    counters.add("lifecycle", "gc_blobs", len(garbage.blobs))


def summary(garbage: Garbage) -> dict[str, Any]:
    blob_bytes = sum(n for _, n in garbage.blobs)
    log_bytes = sum(n for _, n in garbage.records)
    folder_bytes = sum(n for _, n in garbage.attempt_folders)
    cache_bytes = sum(n for _, n in garbage.cache_files)
    return {
        "blobs": len(garbage.blobs), "blob_bytes": blob_bytes,
        "logs": len(garbage.records), "log_bytes": log_bytes,
        "attempt_folders": len(garbage.attempt_folders), "attempt_folder_bytes": folder_bytes,
        "cache_files": len(garbage.cache_files), "cache_bytes": cache_bytes,
        "total_bytes": blob_bytes + log_bytes + folder_bytes + cache_bytes,
    }  # fmt: skip


def iter_tenants(metadata: MetadataStore) -> Iterator[str]:
    from argosy.stores.metadata.tables import Tenant

    with metadata.session() as s:
        names = set(s.scalars(select(Tenant.name)))
        names.update(s.scalars(select(Run.tenant).distinct()))
    yield from sorted(names)
