"""Moving blobs and run records between an artifact store and a backup, hash-checked.

Objects encrypted at rest stay encrypted: they are named by the sha256 of their plaintext, so
they are checked through a :data:`PlainReader` when one is given (the tenant's data keys).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from argosy.errors import StoreError
from argosy.ops.backup.format import Reporter
from argosy.ops.backup.manifest import BlobProblem
from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import CHUNK, ArtifactStore, BlobInfo, sha256_file

if TYPE_CHECKING:
    from argosy.ops.backup.archive import Backup
    from argosy.ops.backup.reading import Dump

PlainReader = Callable[[str, BinaryIO], BinaryIO]
"""(tenant, stored bytes) -> their plaintext: decrypts objects encrypted at rest (whose name
is the sha256 of the plaintext); backups keep them encrypted and verify them through this."""


def is_encrypted_file(path: Path) -> bool:
    from argosy.stores.encryption import MAGIC, is_encrypted

    with path.open("rb") as f:
        return is_encrypted(f.read(len(MAGIC)))


def _plain_sha256(path: Path, tenant: str, plain: PlainReader | None) -> str | None:
    """The sha256 of the plaintext of an encrypted object in ``path`` (None: not encrypted,
    or no keys to open it)."""
    if plain is None or not is_encrypted_file(path):
        return None
    with path.open("rb") as f:
        digest = hashlib.sha256()
        try:
            reader = plain(tenant, f)
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
        except StoreError:
            return "undecryptable"
        return digest.hexdigest()


def _copy_verified(
    source: Any, dest: Path, sha256: str, *, tenant: str = "", plain: PlainReader | None = None
) -> bool:
    """Stream ``source`` to ``dest`` while hashing; keep it only if it hashes to ``sha256``
    (its plaintext's hash, for an object encrypted at rest: it stays encrypted)."""
    digest = hashlib.sha256()
    partial = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256 and _plain_sha256(partial, tenant, plain) != sha256:
        partial.unlink()
        return False
    partial.replace(dest)
    return True


def copy_out(
    backend: ByteStore, dump_: Dump, folder: Path, reporter: Reporter, plain: PlainReader | None
) -> tuple[int, list[BlobProblem]]:
    """Copy the manifest's blobs (hash-checked) and the runs' records into the backup."""
    problems: list[BlobProblem] = []
    copied = 0
    reporter.start("copying blobs", dump_.manifest.count())
    for tenant, sha, entry in dump_.manifest.entries():
        dest = folder / "blobs" / sha[:2] / sha
        if not dest.exists():
            key = ArtifactStore(backend, tenant).blob_key(sha)
            try:
                with backend.open(key) as src:
                    ok = _copy_verified(src, dest, sha, tenant=tenant, plain=plain)
            except FileNotFoundError:
                problems.append(BlobProblem(tenant, sha, "missing", entry.get("ref")))
            else:
                if ok:
                    copied += 1
                else:
                    problems.append(BlobProblem(tenant, sha, "corrupt", entry.get("ref")))
        reporter.advance()
    reporter.done()
    for tenant, runs in dump_.manifest.runs.items():
        wanted = set(runs)
        prefix = f"tenants/{tenant}/runs/"
        keys = [k for k in backend.list(prefix) if k[len(prefix) :].split("/", 1)[0] in wanted]
        reporter.start(f"copying run records of tenant {tenant}", len(keys))
        for key in keys:
            dest = folder / "records" / tenant / key[len(f"tenants/{tenant}/") :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with backend.open(key) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except FileNotFoundError:  # pragma: no cover - removed while listing
                dest.unlink(missing_ok=True)
            reporter.advance()
        reporter.done()
    return copied, problems


def blob_sources(
    backend: ByteStore,
    backup: Backup,
    tenant_map: dict[str, str],
    reporter: Reporter,
    plain: PlainReader | None = None,
) -> int:
    """Put each manifest blob the store lacks under its (new) tenant: from the backup, or,
    for a renamed tenant, from the old tenant's prefix in the same store. Returns the count."""
    copied = 0
    reporter.start("copying blobs into the artifact store", backup.manifest.count())
    for tenant, sha, _entry in backup.manifest.entries():
        reporter.advance()
        store = ArtifactStore(backend, tenant_map.get(tenant, tenant))
        if store.has_blob(sha):
            continue
        path = backup.blob_file(sha)
        if path is not None:
            info = sha256_file(path)
            if info.sha256 != sha and is_encrypted_file(path):
                # encrypted at rest: stored as it is, checked by the verification afterwards
                # (its tenant's data keys arrive with the metadata)
                info = BlobInfo(sha, info.size)
            if info.sha256 == sha:
                store.put_file(path, info)
                copied += 1
                continue
        if store.tenant != tenant:
            old = ArtifactStore(backend, tenant)
            tmp = Path(tempfile.mkdtemp(prefix=".argosy-blob-")) / sha
            try:
                with backend.open(old.blob_key(sha)) as src:
                    if _copy_verified(src, tmp, sha, tenant=tenant, plain=plain):
                        store.put_file(tmp, move=True)
                        copied += 1
            except FileNotFoundError:
                pass
            finally:
                shutil.rmtree(tmp.parent, ignore_errors=True)
    reporter.done()
    return copied


def record_sources(
    backend: ByteStore, backup: Backup, tenant_map: dict[str, str], reporter: Reporter
) -> int:
    """Put the backup's run records (logs, results) the store lacks under their tenant."""
    copied = 0
    for tenant in backup.manifest.runs:
        store = ArtifactStore(backend, tenant_map.get(tenant, tenant))
        files = list(backup.record_files(tenant))
        if not files:
            continue
        reporter.start(f"copying run records of tenant {store.tenant}", len(files))
        for relative, path in files:
            if not backend.exists(store.record_key(relative)):
                store.put_record_file(relative, path)
                copied += 1
            reporter.advance()
        reporter.done()
    return copied
