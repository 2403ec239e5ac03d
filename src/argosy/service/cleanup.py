"""Deleting runs and collecting garbage for one tenant (:mod:`argosy.ops.cleanup` does the
work: journaled deletions, what nothing refers to)."""

from __future__ import annotations

from pathlib import Path

from argosy.api import ops as api_ops
from argosy.ops import cleanup
from argosy.service import search
from argosy.service.context import ServiceContext
from argosy.stores.metadata import runs as q


def delete_runs(ctx: ServiceContext, refs: list[str]) -> api_ops.RunsDeleted:
    """Delete runs, their rows and bytes together (``ConflictError`` for a running or held
    run: nothing is deleted then)."""
    with ctx.metadata.session() as s:
        ids = list(dict.fromkeys(q.get_run(s, ctx.tenant, ref).id for ref in refs))
    cleanup.plan_deletion(ctx.metadata, ctx.tenant, ids, why="user", actor=ctx.actor)
    freed = cleanup.resume_deletions(
        ctx.metadata, ctx.store, on_deleted=lambda runs: search.forget_runs(ctx, runs)
    )
    return api_ops.RunsDeleted(
        runs=[r for r in freed.runs if r in ids], artifacts=freed.artifacts,
        blobs_freed=freed.blobs, bytes_freed=freed.blob_bytes + freed.record_bytes,
    )  # fmt: skip


def gc(ctx: ServiceContext, *, dry_run: bool, cache_dir: Path | None = None) -> api_ops.GcReport:
    """What nothing refers to, reported (``dry_run``) or removed."""
    cleanup.resume_deletions(
        ctx.metadata, ctx.store, on_deleted=lambda runs: search.forget_runs(ctx, runs)
    )
    garbage = cleanup.find_garbage(
        ctx.metadata, ctx.store, attempts_dir=ctx.attempts_dir, cache_dir=cache_dir
    )
    if not dry_run:
        cleanup.collect(ctx.store, garbage)
    return api_ops.GcReport(dry_run=dry_run, **cleanup.summary(garbage))
