"""Uploads: local files and folders sent for runs, in resumable chunks, verified by sha256.

A client declares what it sends (sha256, size, file or folder tar); the declared size counts
against the tenant's ``storage_bytes`` quota at once (``QuotaExceededError`` names it). Chunks
are appended in order, each at the offset the upload has ``received`` — a client that lost
its connection asks for the upload and continues from there — and are staged as records of
the tenant's store (``uploads/<id>/<offset>``), so any server instance can take the next
chunk. Completing streams the chunks through sha256 into one blob; bytes that do not hash to
the declared sha256 are refused and discarded. Content already stored is not sent again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from argosy import api
from argosy.errors import ConflictError, NotFoundError, QuotaExceededError, UsageError
from argosy.ids import new_id
from argosy.service.context import ServiceContext
from argosy.stores.artifacts.blobs import BlobInfo
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Artifact, Tenant, Upload
from argosy.units import format_bytes

MAX_CHUNK_BYTES = 64 * 1024 * 1024  # one PUT; clients send 8 MiB
COPY_BUFFER = 4 * 1024 * 1024


def _document(row: Upload) -> api.Upload:
    return api.Upload(
        id=row.id, sha256=row.sha256, size=row.size, received=row.received, format=row.format,
        filename=row.filename, completed=row.completed_at is not None,
    )  # fmt: skip


def _get(session: Session, ctx: ServiceContext, upload_id: str, *, lock: bool = False) -> Upload:
    query = select(Upload).where(Upload.tenant == ctx.tenant, Upload.id == upload_id)
    if lock:
        query = query.with_for_update()
    row: Upload | None = session.scalar(query)
    if row is None:
        raise NotFoundError(f"no upload {upload_id!r} in tenant {ctx.tenant!r}; start one first")
    return row


def storage_used(session: Session, tenant: str) -> int:
    """Bytes the tenant stores as far as the metadata knows: its distinct artifact blobs and
    its uploads (completed or still arriving)."""
    artifacts = (
        select(Artifact.sha256, func.max(Artifact.size).label("size"))
        .where(Artifact.tenant == tenant)
        .group_by(Artifact.sha256)
        .subquery()
    )
    uploads = (
        select(Upload.sha256, func.max(Upload.size).label("size"))
        .where(Upload.tenant == tenant, Upload.sha256.not_in(select(artifacts.c.sha256)))
        .group_by(Upload.sha256)
        .subquery()
    )
    used_artifacts = session.scalar(select(func.coalesce(func.sum(artifacts.c.size), 0)))
    used_uploads = session.scalar(select(func.coalesce(func.sum(uploads.c.size), 0)))
    return int(used_artifacts or 0) + int(used_uploads or 0)


def _check_quota(session: Session, ctx: ServiceContext, size: int) -> None:
    quotas = session.scalar(select(Tenant.quotas).where(Tenant.name == ctx.tenant)) or {}
    limit = quotas.get("storage_bytes")
    if limit is None:
        return
    used = storage_used(session, ctx.tenant)
    if used + size > limit:
        raise QuotaExceededError(
            f"storing {format_bytes(size)} would pass tenant {ctx.tenant!r}'s storage_bytes "
            f"quota ({format_bytes(used)} of {format_bytes(int(limit))} used); delete old data "
            "or ask a platform admin to raise the quota",
            code="storage_quota_exceeded",
        )


def create_upload(ctx: ServiceContext, body: api.UploadCreate) -> api.Upload:
    """A new upload, or — when these bytes are stored already — one that is complete at once."""
    sha = body.sha256.removeprefix("sha256:")
    present = ctx.store.has_blob(sha)
    with ctx.metadata.session() as session:
        q.ensure_tenant(session, ctx.tenant, ctx.actor)
        if not present:
            _check_quota(session, ctx, body.size)
        row = Upload(
            id=new_id(), tenant=ctx.tenant, sha256=sha, size=body.size,
            received=body.size if present else 0, format=body.format, filename=body.filename,
            completed_at=q.now() if present else None, created_at=q.now(), created_by=ctx.actor,
        )  # fmt: skip
        session.add(row)
        session.flush()
        return _document(row)


def get_upload(ctx: ServiceContext, upload_id: str) -> api.Upload:
    with ctx.metadata.session() as session:
        return _document(_get(session, ctx, upload_id))


def _chunk_key(upload_id: str, offset: int) -> str:
    return f"uploads/{upload_id}/{offset:016d}"


def append(ctx: ServiceContext, upload_id: str, offset: int, chunk: Path) -> api.Upload:
    """Store ``chunk`` (a file) as the bytes at ``offset``; ``ConflictError``
    (``upload_offset``, with ``received``) when the upload expects another offset.

    The bytes are written outside any database transaction (a chunk takes a while); the
    offset is checked again, under the row's lock, before it counts. Two clients racing on
    one offset write the same key, and the sha256 check at completion decides anyway.
    """
    length = chunk.stat().st_size
    if length > MAX_CHUNK_BYTES:
        raise UsageError(f"a chunk holds at most {MAX_CHUNK_BYTES} bytes; send smaller ones")
    with ctx.metadata.session() as session:
        _check_offset(_get(session, ctx, upload_id), offset, length)
    ctx.store.put_record_file(_chunk_key(upload_id, offset), chunk)
    with ctx.metadata.session() as session:
        row = _get(session, ctx, upload_id, lock=True)
        _check_offset(row, offset, length)
        row.received = offset + length
        session.flush()
        return _document(row)


def _check_offset(row: Upload, offset: int, length: int) -> None:
    if row.completed_at is not None:
        raise ConflictError(f"upload {row.id} is complete", code="upload_complete")
    if offset != row.received:
        raise ConflictError(
            f"upload {row.id} has {row.received} bytes; send the chunk at offset "
            f"{row.received}, not {offset}",
            code="upload_offset",
            extra={"received": row.received},
        )
    if offset + length > row.size:
        raise UsageError(
            f"upload {row.id} was declared {row.size} bytes; this chunk would make it "
            f"{offset + length}",
            code="upload_too_long",
        )


def _assemble(ctx: ServiceContext, upload_id: str, keys: list[str], dest: BinaryIO) -> BlobInfo:
    digest = hashlib.sha256()
    size = 0
    for key in keys:
        stream = ctx.store.open_record(key)
        if stream is None:
            raise NotFoundError(f"a chunk of upload {upload_id} is gone ({key}); upload again")
        with stream:
            while data := stream.read(COPY_BUFFER):
                digest.update(data)
                size += len(data)
                dest.write(data)
    return BlobInfo(digest.hexdigest(), size)


def complete(ctx: ServiceContext, upload_id: str, temp_dir: Path) -> api.Upload:
    """Join the chunks into the blob, verified; wrong bytes are refused and discarded
    (``UsageError`` ``upload_corrupted``: upload again)."""
    with ctx.metadata.session() as session:
        row = _get(session, ctx, upload_id)
        if row.completed_at is not None:
            return _document(row)
        if row.received != row.size:
            raise UsageError(
                f"upload {upload_id} has {row.received} of {row.size} bytes; send the rest "
                f"from offset {row.received}, then complete it",
                code="upload_incomplete",
            )
        declared = row.sha256
    keys = ctx.store.record_keys(f"uploads/{upload_id}")
    temp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=temp_dir, prefix="upload-", suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            info = _assemble(ctx, upload_id, keys, fh)
        if info.sha256 != declared:
            _discard(ctx, upload_id, keys)
            raise UsageError(
                f"upload {upload_id}'s bytes hash to sha256:{info.sha256[:12]}, not the declared "
                f"sha256:{declared[:12]}: they were changed on the way or the file changed while "
                "being sent; they were discarded, upload the file again",
                code="upload_corrupted",
            )
        ctx.store.put_file(path, info, move=True)
    finally:
        path.unlink(missing_ok=True)
    for key in keys:
        ctx.store.delete_record(key)
    with ctx.metadata.session() as session:
        row = _get(session, ctx, upload_id, lock=True)
        row.completed_at = q.now()
        session.flush()
        return _document(row)


def _discard(ctx: ServiceContext, upload_id: str, keys: list[str]) -> None:
    for key in keys:
        ctx.store.delete_record(key)
    with ctx.metadata.session() as session:
        _get(session, ctx, upload_id, lock=True).received = 0
