"""Tenant-scoped, content-addressed blobs and per-attempt records over a :class:`ByteStore`.

Every key starts with ``tenants/<tenant>/`` so that no read path can cross tenants:

- ``tenants/<t>/blobs/sha256/<ab>/<abcdef...>`` — immutable bytes, named by their sha256;
  written once (deduplicated), verified on read;
- ``tenants/<t>/runs/<run>/<node path>/<attempt>/result.json`` — the launcher's result record;
- ``tenants/<t>/runs/<run>/<node path>/<attempt>/log.jsonl`` — the attempt's captured output.

With a ``cipher`` (:class:`~argosy.stores.encryption.ObjectCipher`: encryption at rest), every
object — blobs and records — is stored encrypted under the tenant's data key; a blob keeps
the sha256 of its *plaintext* as its name (deduplication is unchanged), checked after
decryption. Plaintext then exists only in memory, in streams, and in the ``cache_dir`` a
caller names for :meth:`ArtifactStore.blob_path` (a task's own scratch folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from argosy.errors import IntegrityError, StoreError
from argosy.stores.artifacts.base import ByteStore

if TYPE_CHECKING:
    from argosy.stores.encryption import ObjectCipher

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    """What a stored blob is: its sha256 (hex) and size in bytes."""

    sha256: str
    size: int


def sha256_file(path: Path) -> BlobInfo:
    """Hash a file in fixed-size chunks (constant memory)."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return BlobInfo(digest.hexdigest(), size)


def attempt_prefix(run_id: str, node_path: str, attempt: int) -> str:
    return f"runs/{run_id}/{node_path}/{attempt}"


class ArtifactStore:
    """The artifact store of one tenant: blobs by hash, and records by run/node/attempt."""

    def __init__(self, backend: ByteStore, tenant: str, cipher: ObjectCipher | None = None) -> None:
        if not _TENANT.match(tenant):
            raise StoreError(
                f"invalid tenant name {tenant!r}: use a DNS-1123 label such as 'team-a'"
            )
        if cipher is not None and cipher.tenant != tenant:
            raise StoreError(f"the cipher of tenant {cipher.tenant!r} cannot serve {tenant!r}")
        self.backend = backend
        self.tenant = tenant
        self.prefix = f"tenants/{tenant}/"
        self.cipher = cipher

    def with_cipher(self, cipher: ObjectCipher | None) -> ArtifactStore:
        """The same store with encryption at rest by ``cipher`` (None: plaintext)."""
        return ArtifactStore(self.backend, self.tenant, cipher)

    @property
    def encrypted(self) -> bool:
        """Whether objects are stored encrypted (encryption at rest)."""
        return self.cipher is not None

    # -- encrypted I/O -----------------------------------------------------------------------
    def _what(self, key: str) -> str:
        name = key.rsplit("/", 1)[-1]
        if "/blobs/sha256/" in key:
            return f"artifact sha256:{name} in tenant {self.tenant!r}"
        return f"object {key.removeprefix(self.prefix)} in tenant {self.tenant!r}"

    def _open(self, key: str) -> BinaryIO:
        """The plaintext stream of the object at ``key`` (decrypted on the fly)."""
        stream = self.backend.open(key)
        if self.cipher is None:
            return stream
        try:
            return self.cipher.reader(stream, self._what(key))
        except BaseException:
            stream.close()
            raise

    @contextlib.contextmanager
    def _sealed(self, path: Path) -> Iterator[tuple[Path, str, int]]:
        """``path`` encrypted into a temporary file: (that file, plaintext sha256, size)."""
        assert self.cipher is not None
        try:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".enc")
        except OSError:  # a read-only source folder
            fd, name = tempfile.mkstemp(suffix=".enc")
        os.close(fd)
        tmp = Path(name)
        try:
            sha256, size = self.cipher.encrypt_file(path, tmp)
            yield tmp, sha256, size
        finally:
            tmp.unlink(missing_ok=True)

    def _put_encrypted_file(self, key: str, path: Path, expect: BlobInfo | None) -> None:
        with self._sealed(path) as (tmp, sha256, size):
            if expect is not None and (sha256, size) != (expect.sha256, expect.size):
                raise IntegrityError(f"file {path} changed while being stored; write it again")
            self.backend.put_file(key, tmp, move=True)

    # -- blobs -------------------------------------------------------------------------------
    def blob_key(self, sha256: str) -> str:
        if not _SHA256.match(sha256):
            raise StoreError(f"invalid sha256 {sha256!r}: expected 64 lowercase hex digits")
        return f"{self.prefix}blobs/sha256/{sha256[:2]}/{sha256}"

    def has_blob(self, sha256: str) -> bool:
        return self.backend.exists(self.blob_key(sha256))

    def put_file(
        self, path: Path, info: BlobInfo | None = None, *, move: bool = False,
        hashed_while_written: bool = False,
    ) -> BlobInfo:  # fmt: skip
        """Store a file as a blob; ``info`` (if the caller hashed while writing) is re-checked by
        size. A local blob gets a verified-once stamp when its bytes were hashed here (no
        ``info``) or the caller says ``hashed_while_written`` (the very bytes it wrote)."""
        hashed = info is None or hashed_while_written
        if info is None:
            info = sha256_file(path)
        elif path.stat().st_size != info.size:
            raise IntegrityError(f"file {path} changed while being stored; write it again")
        key = self.blob_key(info.sha256)
        if self.backend.exists(key):
            if move:
                path.unlink(missing_ok=True)
        elif self.cipher is not None:
            self._put_encrypted_file(key, path, info)
            if move:
                path.unlink(missing_ok=True)
        else:
            self.backend.put_file(key, path, move=move)
            local = self.backend.local_path(key) if hashed else None
            if local is not None:  # these bytes were hashed on their way in
                self._remember_verified(info.sha256, local)
        return info

    def put_bytes(self, data: bytes) -> BlobInfo:
        info = BlobInfo(hashlib.sha256(data).hexdigest(), len(data))
        key = self.blob_key(info.sha256)
        if not self.backend.exists(key):
            self.backend.put_bytes(key, self._seal_bytes(data))
        return info

    def _seal_bytes(self, data: bytes) -> bytes:
        return data if self.cipher is None else self.cipher.encrypt_bytes(data)

    def _corrupted(self, sha256: str, actual: str) -> IntegrityError:
        """Move a corrupted blob aside (so re-running its producer stores it again) and say so."""
        key = self.blob_key(sha256)
        with contextlib.suppress(OSError, StoreError):
            self.backend.rename(key, f"{self.prefix}quarantine/{sha256}.{actual[:12]}")
        return IntegrityError(
            f"blob sha256:{sha256} in tenant {self.tenant!r} is corrupted (its bytes hash to "
            f"sha256:{actual}); it was moved to quarantine: re-run the producing task (with "
            "--no-cache) or restore it from a backup"
        )

    def _missing(self, sha256: str) -> StoreError:
        from argosy.stores.archive import archive_key, archived_error

        if self.backend.exists(archive_key(self.prefix, sha256)):  # retention archived it
            return archived_error(self.tenant, sha256)
        if any(True for _ in self.backend.list(f"{self.prefix}quarantine/{sha256}.")):
            # what is known now is that it is missing: the quarantined copy may be of a blob
            # stored again since and then deleted
            return IntegrityError(
                f"blob sha256:{sha256} is missing from tenant {self.tenant!r} (a copy found "
                "corrupted was moved to quarantine); re-run the producing task (with "
                "--no-cache) or restore it from a backup"
            )
        return StoreError(
            f"blob sha256:{sha256} is missing from tenant {self.tenant!r}; re-run the producing "
            "task (with --no-cache) or restore it from a backup"
        )

    def _verify_stream(self, stream: BinaryIO, sha256: str, sink: BinaryIO | None = None) -> None:
        digest = hashlib.sha256()
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
        if digest.hexdigest() != sha256:
            raise self._corrupted(sha256, digest.hexdigest())

    def blob_path(self, sha256: str, *, cache_dir: Path, verify: bool = True) -> Path:
        """A local, read-only path to the blob's bytes (in place for a local store, else cached)."""
        key = self.blob_key(sha256)
        local = self.backend.local_path(key) if self.cipher is None else None
        if local is not None:
            if not local.is_file():
                raise self._missing(sha256)
            if verify and not self._verified_before(sha256, local):
                with local.open("rb") as f:
                    self._verify_stream(f, sha256)
                self._remember_verified(sha256, local)
            return local
        target = cache_dir / sha256
        if not target.exists():
            if not self.backend.exists(key):
                raise self._missing(sha256)
            cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # a name of its own (mkstemp: 0600): processes sharing the cache each download
            # whole, then publish by rename; the same bytes win whichever renames last
            fd, name = tempfile.mkstemp(dir=cache_dir, prefix=f".{sha256}.", suffix=".part")
            partial = Path(name)
            try:
                with self._open(key) as src, os.fdopen(fd, "wb") as dst:
                    self._verify_stream(src, sha256, dst)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            partial.replace(target)
        return target

    # -- verified-once stamps (local stores) --------------------------------------------------
    # A local blob whose bytes were hashed (while being stored, or by a full read) gets a stamp
    # of its file's identity: device, inode, size, and modification and change times in ns.
    # A later read whose file still has that identity skips the second full read: a stored
    # blob is read-only (0444), so changing its bytes through the file system means a chmod or
    # a new file, and either changes the change time (which no one can set) or the inode. A
    # missing or stale stamp means a full verification (and a new stamp); a stamp is a cache,
    # written without fsync. Not used for encrypted or remote stores.
    def _stamp_path(self, sha256: str) -> Path | None:
        if self.cipher is not None:
            return None
        return self.backend.local_path(f"{self.prefix}verified/{sha256[:2]}/{sha256}")

    @staticmethod
    def _identity(path: Path) -> str:
        st = path.stat()
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def _verified_before(self, sha256: str, local: Path) -> bool:
        stamp = self._stamp_path(sha256)
        if stamp is None:
            return False
        try:
            return stamp.read_text() == self._identity(local)
        except OSError:
            return False

    def _remember_verified(self, sha256: str, local: Path) -> None:
        stamp = self._stamp_path(sha256)
        if stamp is None:
            return
        try:
            identity = self._identity(local)
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_name(f".{stamp.name}.{secrets.token_hex(8)}")
            tmp.write_text(identity)
            os.replace(tmp, stamp)
        except OSError:  # a read-only store, say: the next read verifies in full again
            pass

    def read_blob(self, sha256: str) -> bytes:
        """The whole blob in memory, verified (for small JSON values and records)."""
        try:
            with self._open(self.blob_key(sha256)) as f:
                data = f.read()
        except FileNotFoundError:
            raise self._missing(sha256) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise self._corrupted(sha256, actual)
        return data

    def copy_blob_to(self, sha256: str, dest: Path) -> None:
        """Write the blob to ``dest``, verifying its hash on the way."""
        if not self.backend.exists(self.blob_key(sha256)):
            raise self._missing(sha256)
        # a name of its own, created exclusively with the user's usual permissions (umask)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with self._open(self.blob_key(sha256)) as src, os.fdopen(fd, "wb") as dst:
                self._verify_stream(src, sha256, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        shutil.move(tmp, dest)

    def open_blob(self, sha256: str) -> BinaryIO:
        """A plaintext stream of the blob (decrypted on the fly; seekable from its start).

        The caller gets bytes as they are read, not verified against the sha256 (use
        :meth:`copy_blob_to` or :meth:`read_blob` for that); with encryption each chunk is
        authenticated before it is returned. Raises ``FileNotFoundError`` if it is missing."""
        return self._open(self.blob_key(sha256))

    # -- records -----------------------------------------------------------------------------
    def record_key(self, relative: str) -> str:
        from argosy.safe_paths import check_relative_path

        return self.prefix + check_relative_path(relative, "record key")

    def put_record(self, relative: str, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.backend.put_bytes(self.record_key(relative), self._seal_bytes(data))

    def get_record(self, relative: str) -> dict[str, Any] | None:
        try:
            with self._open(self.record_key(relative)) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except FileNotFoundError:
            return None

    def put_record_file(self, relative: str, path: Path) -> None:
        if self.cipher is None:
            self.backend.put_file(self.record_key(relative), path)
        else:
            self._put_encrypted_file(self.record_key(relative), path, None)

    def record_keys(self, folder: str) -> list[str]:
        """The records inside a folder of records (relative keys, sorted)."""
        base = self.record_key(folder) + "/"
        return sorted(k[len(self.prefix) :] for k in self.backend.list(base))

    def delete_record(self, relative: str) -> None:
        self.backend.delete(self.record_key(relative))

    def open_record(self, relative: str) -> BinaryIO | None:
        try:
            return self._open(self.record_key(relative))
        except FileNotFoundError:
            return None


def open_artifact_store(
    url: str, tenant: str, options: dict[str, Any] | None = None
) -> ArtifactStore:
    """The artifact store named by ``url``: a folder path, or a URL whose scheme names a
    registered byte store (:mod:`argosy.plugins`: ``file://``, ``s3://``,
    ``argosy-task+http://`` — a task process on a server, reaching only its own grant).

    ``options`` configure a remote backend (see ``Settings.artifact_options``). A plain path
    is opened without reading the registry (every local task's launcher opens one).
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        from argosy.stores.artifacts.local import LocalByteStore

        return ArtifactStore(LocalByteStore(Path(url)), tenant)
    from argosy import plugins

    known = plugins.names(plugins.BYTE_STORES)
    if scheme not in known:
        schemes = ", ".join(f"{s}://" for s in sorted(known))
        raise StoreError(
            f"artifact store scheme {scheme!r} is not supported; use a local folder path "
            f"or one of {schemes} (s3://BUCKET/PREFIX for S3)"
        )
    return ArtifactStore(plugins.byte_store_class(scheme).from_url(url, options), tenant)


def open_encrypted_store(
    url: str, tenant: str, options: dict[str, Any] | None, cipher: ObjectCipher | None
) -> ArtifactStore:
    """:func:`open_artifact_store` with encryption at rest by ``cipher`` (None: plaintext);
    see :meth:`argosy.stores.keys.TenantKeys.cipher` and ``docs/security.md``."""
    return open_artifact_store(url, tenant, options).with_cipher(cipher)
