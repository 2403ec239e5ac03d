"""Checking that the artifact store holds every blob a manifest lists (and, by hash, intact)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from argosy.errors import StoreError, UsageError
from argosy.ops.backup.format import Reporter
from argosy.ops.backup.manifest import BlobProblem, Manifest
from argosy.ops.backup.transfer import PlainReader
from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import CHUNK, ArtifactStore

VERIFY_WORKERS = 8


def _check_blob(
    backend: ByteStore, tenant: str, sha: str, mode: str, plain: PlainReader | None = None
) -> str | None:
    """None if the blob is there (and hashes right, for mode "hash"), else the problem."""
    from argosy.stores.encryption import is_encrypted

    key = ArtifactStore(backend, tenant).blob_key(sha)
    if mode == "exists":
        return None if backend.exists(key) else "missing"
    digest = hashlib.sha256()
    try:
        with backend.open(key) as f:
            head = f.read(CHUNK)
            if plain is not None and is_encrypted(head):
                f.seek(0)
                try:
                    reader = plain(tenant, f)
                    while chunk := reader.read(CHUNK):
                        digest.update(chunk)
                except StoreError:
                    return "corrupt"
            else:
                digest.update(head)
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
    except FileNotFoundError:
        return "missing"
    return None if digest.hexdigest() == sha else "corrupt"


def verify_mode(mode: str) -> None:
    if mode not in ("hash", "exists"):
        raise UsageError(f"unknown verify mode {mode!r}: use hash or exists")


def verify_blobs(
    backend: ByteStore,
    manifest: Manifest,
    *,
    tenant_map: dict[str, str] | None = None,
    mode: str = "hash",
    reporter: Reporter | None = None,
    plain: PlainReader | None = None,
) -> list[BlobProblem]:
    """Every manifest blob that is missing from the store (or, mode "hash", hashes wrong)."""
    verify_mode(mode)
    reporter = reporter or Reporter()
    tenant_map = tenant_map or {}
    entries = [(tenant_map.get(t, t), sha, e) for t, sha, e in manifest.entries()]
    reporter.start(f"verifying blobs ({mode})", len(entries))
    problems: list[BlobProblem] = []
    with ThreadPoolExecutor(max_workers=VERIFY_WORKERS) as pool:
        results = pool.map(lambda e: _check_blob(backend, e[0], e[1], mode, plain), entries)
        for (tenant, sha, entry), problem in zip(entries, results, strict=True):
            if problem is not None:
                problems.append(BlobProblem(tenant, sha, problem, entry.get("ref")))
            reporter.advance()
    reporter.done()
    return problems
