"""The cold tier of a tenant's blobs: where archived bytes live, and how they come back.

An archived blob is no longer at its hot key (``tenants/<t>/blobs/sha256/..``), so a read
or a cache lookup cannot find it there; its bytes are under ``tenants/<t>/archive/blobs/..``:

- **S3**: copied there with a cold storage class (``GLACIER`` by default; any class S3's
  restore API serves), then the hot object deleted. Bringing it back asks S3 to restore the
  archived copy for the retrieval window (``RestoreObject``) and, once S3 says it is
  restored, copies it to the hot key again (standard class);
- **a folder**: gzip-compressed there, the hot file deleted; bringing it back decompresses it.

Either way the bytes are those stored (ciphertext with encryption at rest), and the archived
copy stays until the blob is deleted: ending a retrieval only removes the hot copy again.
Reading an archived blob raises :class:`ArchivedError` (409 ``archived``) naming how to ask
for it back.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path
from typing import Any

from argosy.errors import ConflictError, StoreError


class ArchivedError(ConflictError, StoreError):
    """The blob is in the cold tier: an approved retrieval request brings it back."""


def archive_key(prefix: str, sha256: str) -> str:
    """The cold-tier key of a blob of the tenant whose keys start with ``prefix``."""
    return f"{prefix}archive/blobs/sha256/{sha256[:2]}/{sha256}"


def archived_error(tenant: str, sha256: str) -> ArchivedError:
    return ArchivedError(
        f"artifact sha256:{sha256} of tenant {tenant!r} is archived (retention moved it to the "
        "cold tier); ask for it back with 'argosy retrievals request ARTIFACT|RUN --reason "
        "...' and have a tenant owner approve it",
        code="archived",
    )


class ColdTier:
    """Moves one tenant's blobs between the hot and the cold tier (folder: gzip files)."""

    def __init__(self, store: Any) -> None:
        self.store = store  # an ArtifactStore
        self.backend = store.backend

    def hot(self, sha256: str) -> str:
        return str(self.store.blob_key(sha256))

    def cold(self, sha256: str) -> str:
        return archive_key(self.store.prefix, sha256)

    def archive(self, sha256: str) -> bool:
        """Copy the hot bytes to the cold tier (if not there yet), then drop the hot copy.
        Idempotent; False if the blob is in neither tier."""
        hot, cold = self.hot(sha256), self.cold(sha256)
        if not self.backend.exists(cold):
            if not self.backend.exists(hot):
                return False
            self._copy_to_cold(hot, cold)
        self.backend.delete(hot)
        return True

    def _copy_to_cold(self, hot: str, cold: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            packed = Path(tmp) / "blob.gz"
            with self.backend.open(hot) as src, gzip.open(packed, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
            self.backend.put_file(cold, packed, move=True)

    def restore(self, sha256: str, days: float) -> bool:
        """Make the blob readable at its hot key again; False while the cold tier is still
        restoring it (ask again later)."""
        hot, cold = self.hot(sha256), self.cold(sha256)
        if self.backend.exists(hot):
            return True
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "blob"
            with (
                self.backend.open(cold) as src,
                gzip.open(src, "rb") as unpacked,
                plain.open("wb") as dst,
            ):
                shutil.copyfileobj(unpacked, dst, 4 * 1024 * 1024)
            self.backend.put_file(hot, plain, move=True)
        return True

    def drop_hot(self, sha256: str) -> None:
        """End a retrieval: the hot copy goes, the archived one stays."""
        if self.backend.exists(self.cold(sha256)):
            self.backend.delete(self.hot(sha256))

    def delete(self, sha256: str) -> None:
        for key in (self.hot(sha256), self.cold(sha256)):
            self.backend.delete(key)


class S3ColdTier(ColdTier):
    """A cold storage class and S3's restore API."""

    def __init__(self, store: Any, storage_class: str = "GLACIER") -> None:
        super().__init__(store)
        self.storage_class = storage_class
        self.client = self.backend.client
        self.bucket = self.backend.bucket

    def _full(self, key: str) -> str:
        return str(self.backend._key(key))

    def _copy_to_cold(self, hot: str, cold: str) -> None:
        self.client.copy_object(
            Bucket=self.bucket, Key=self._full(cold), StorageClass=self.storage_class,
            CopySource={"Bucket": self.bucket, "Key": self._full(hot)},
            MetadataDirective="COPY",
        )  # fmt: skip

    def storage_class_of(self, key: str) -> str:
        head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        return str(head.get("StorageClass") or "STANDARD")

    def restore(self, sha256: str, days: float) -> bool:
        hot, cold = self.hot(sha256), self.cold(sha256)
        if self.backend.exists(hot):
            return True
        full = self._full(cold)
        head = self.client.head_object(Bucket=self.bucket, Key=full)
        state = head.get("Restore")
        if state is None:
            self.client.restore_object(
                Bucket=self.bucket, Key=full, RestoreRequest={"Days": max(1, round(days))}
            )
            head = self.client.head_object(Bucket=self.bucket, Key=full)
            state = head.get("Restore")
        if state is None or 'ongoing-request="true"' in state:
            return False  # S3 is still restoring it: the lifecycle job asks again
        self.client.copy_object(
            Bucket=self.bucket, Key=self._full(hot), StorageClass="STANDARD",
            CopySource={"Bucket": self.bucket, "Key": full}, MetadataDirective="COPY",
        )  # fmt: skip
        return True


def cold_tier(store: Any, storage_class: str = "GLACIER") -> ColdTier:
    """The cold tier of ``store``: S3's storage classes on S3, gzip files otherwise."""
    from argosy.stores.artifacts.s3 import S3ByteStore

    if isinstance(store.backend, S3ByteStore):
        return S3ColdTier(store, storage_class)
    return ColdTier(store)
