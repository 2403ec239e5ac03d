"""Encryption at rest: streaming, chunked AES-256-GCM for artifact objects (blobs and records).

Format of an encrypted object (all integers big-endian)::

    header   magic "ARGOSYE1" | version u8 (=1) | chunk size u32 | key-id length u8 | key id
             | salt (24 random bytes, fresh for every object)
    chunks   AES-256-GCM(plaintext chunk) || 16-byte tag, each ``chunk size`` bytes of
             plaintext except the last (which may be shorter, even empty)

The *object key* and a 7-byte *nonce prefix* are derived from the tenant's data key with
HKDF-SHA256 (salt = the object's random salt; info = the format name, the tenant and the data
key id), so every object has its own key and nonces are never reused across objects. Chunk
``i`` is sealed with nonce ``prefix(7) || i (u32) || last (u8)`` and additional data
``header || i (u32) || last (u8)`` — the STREAM construction (Hoang, Reyhanitabar, Rogaway,
Vizár 2015), as in Tink's AES-GCM-HKDF streaming AEAD. Hence a chunk that is modified,
reordered, duplicated, dropped or appended, a truncated object, an edited header, and an
object copied into another tenant (different HKDF info, and a key id that tenant does not
have) all fail to decrypt, with a :class:`DecryptionError` that says which chunk.

Memory: two ciphertext chunks (about 2 MiB) per stream, whatever the object's size.

The content address of a blob stays the sha256 of its *plaintext*; the artifact store
verifies it after decryption (see :class:`argosy.stores.artifacts.blobs.ArtifactStore`).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from argosy.errors import IntegrityError, StoreError

MAGIC = b"ARGOSYE1"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
SALT_SIZE = 24
TAG_SIZE = 16
KEY_SIZE = 32
_PREFIX_SIZE = 7
_FIXED = struct.Struct(">8sBIB")  # magic, version, chunk size, key-id length
_INFO = b"argosy-object-v1"


class DecryptionError(IntegrityError):
    """An encrypted object failed authentication: modified, reordered, truncated or moved."""


class KeyNotFoundError(StoreError):
    """A data key named by an object's header is not one of the tenant's keys."""


class DataKeys(Protocol):
    """The data keys of one tenant: the one new writes use, and any key by id."""

    @property
    def tenant(self) -> str: ...

    def current(self) -> tuple[str, bytes]:
        """``(key id, 32-byte key)`` of the key that encrypts new objects."""
        ...

    def get(self, key_id: str) -> bytes:
        """The key named ``key_id``; raises :class:`KeyNotFoundError` if it is not the tenant's."""
        ...


class StaticDataKeys:
    """A fixed set of unwrapped data keys (what a task's launcher receives; tests)."""

    def __init__(self, tenant: str, current_id: str, keys: Mapping[str, bytes]) -> None:
        if current_id not in keys:
            raise StoreError(f"data key {current_id} is not among the keys given")
        self._tenant = tenant
        self._current = current_id
        self._keys = dict(keys)

    @property
    def tenant(self) -> str:
        return self._tenant

    def current(self) -> tuple[str, bytes]:
        return self._current, self._keys[self._current]

    def get(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyNotFoundError(
                f"data key {key_id} is not a key of tenant {self._tenant!r}"
            ) from None

    def to_document(self) -> dict[str, Any]:
        """A JSON document (base64 keys) for a task's invocation file — never the KEK."""
        import base64

        return {
            "tenant": self._tenant,
            "current": self._current,
            "keys": {k: base64.b64encode(v).decode("ascii") for k, v in self._keys.items()},
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> StaticDataKeys:
        import base64

        keys = {k: base64.b64decode(v) for k, v in doc["keys"].items()}
        return cls(str(doc["tenant"]), str(doc["current"]), keys)


def is_encrypted(prefix: bytes) -> bool:
    """Whether bytes that start an object are an encrypted object's header."""
    return prefix[: len(MAGIC)] == MAGIC


def _read_exact(src: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream."""
    data = src.read(n)
    if data is None:
        data = b""
    if len(data) == n or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < n:
        more = src.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _Sealer:
    """The per-object key, nonce prefix and header of one encrypted object."""

    def __init__(self, tenant: str, key_id: str, key: bytes, salt: bytes, chunk_size: int) -> None:
        raw_id = key_id.encode("ascii")
        if not 0 < len(raw_id) < 256:
            raise StoreError(f"invalid data key id {key_id!r}")
        if len(key) != KEY_SIZE:
            raise StoreError(f"data key {key_id} is {len(key)} bytes; AES-256 needs 32")
        self.header = _FIXED.pack(MAGIC, VERSION, chunk_size, len(raw_id)) + raw_id + salt
        info = b"\0".join((_INFO, tenant.encode(), raw_id))
        okm = HKDF(
            algorithm=hashes.SHA256(), length=KEY_SIZE + _PREFIX_SIZE, salt=salt, info=info
        ).derive(key)
        self.aead = AESGCM(okm[:KEY_SIZE])
        self.prefix = okm[KEY_SIZE:]
        self.chunk_size = chunk_size

    def _nonce_aad(self, index: int, last: bool) -> tuple[bytes, bytes]:
        if index >= 2**32:
            raise StoreError("object too large to encrypt: more than 2^32 chunks")
        tail = struct.pack(">IB", index, 1 if last else 0)
        return self.prefix + tail, self.header + tail

    def seal(self, index: int, data: bytes, last: bool) -> bytes:
        nonce, aad = self._nonce_aad(index, last)
        return self.aead.encrypt(nonce, data, aad)

    def open(self, index: int, data: bytes, last: bool) -> bytes:
        nonce, aad = self._nonce_aad(index, last)
        return self.aead.decrypt(nonce, data, aad)


def _corrupt(what: str, index: int) -> DecryptionError:
    return DecryptionError(
        f"{what} failed to decrypt: chunk {index} was modified, reordered or truncated; the "
        "stored object is corrupt (restore it from a backup, or re-run the producing task)"
    )


class ObjectCipher:
    """Encrypts and decrypts the objects of one tenant with its data keys."""

    def __init__(self, keys: DataKeys, chunk_size: int = CHUNK_SIZE) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise StoreError(f"encryption chunk size must be 1..{MAX_CHUNK_SIZE} bytes")
        self.keys = keys
        self.chunk_size = chunk_size

    @property
    def tenant(self) -> str:
        return self.keys.tenant

    def _sealer(self) -> _Sealer:
        key_id, key = self.keys.current()
        return _Sealer(self.tenant, key_id, key, os.urandom(SALT_SIZE), self.chunk_size)

    def task_document(self) -> dict[str, Any]:
        """The unwrapped data keys a task of this tenant needs, as a JSON document for its
        invocation file (see :meth:`StaticDataKeys.from_document`). Never holds the KEK."""
        keys: Any = self.keys
        if isinstance(keys, StaticDataKeys):
            return keys.to_document()
        for_task = getattr(keys, "for_task", None)
        if for_task is None:
            raise StoreError(f"{type(keys).__name__} cannot hand data keys to a task")
        document: dict[str, Any] = for_task().to_document()
        return document

    # -- encryption ----------------------------------------------------------------------------
    def encrypt_stream(self, src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
        """Encrypt ``src`` into ``dst`` chunk by chunk; returns the plaintext's (sha256, size)."""
        sealer = self._sealer()
        dst.write(sealer.header)
        digest = hashlib.sha256()
        size = 0
        index = 0
        current = _read_exact(src, self.chunk_size)
        while True:
            following = (
                _read_exact(src, self.chunk_size) if len(current) == self.chunk_size else b""
            )
            last = not following
            digest.update(current)
            size += len(current)
            dst.write(sealer.seal(index, current, last))
            if last:
                break
            current = following
            index += 1
        return digest.hexdigest(), size

    def encrypt_file(self, src: Path, dst: Path) -> tuple[str, int]:
        """Encrypt the file ``src`` into a new file ``dst`` (mode 0600)."""
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
            return self.encrypt_stream(fin, fout)

    def encrypt_bytes(self, data: bytes) -> bytes:
        out = io.BytesIO()
        self.encrypt_stream(io.BytesIO(data), out)
        return out.getvalue()

    # -- decryption ----------------------------------------------------------------------------
    def reader(self, src: BinaryIO, what: str, *, allow_plaintext: bool = True) -> BinaryIO:
        """A plaintext stream over the stored stream ``src`` (closing it closes ``src``).

        An object without the header (written before encryption was turned on) is passed
        through when ``allow_plaintext``; a blob's sha256 is still checked by the caller.
        """
        raw = DecryptingReader(self, src, what, allow_plaintext=allow_plaintext)
        return io.BufferedReader(raw, buffer_size=self.chunk_size)

    def decrypt_stream(self, src: BinaryIO, dst: BinaryIO, what: str) -> tuple[str, int]:
        """Decrypt ``src`` into ``dst``; returns the plaintext's (sha256, size)."""
        reader = DecryptingReader(self, src, what)
        digest = hashlib.sha256()
        size = 0
        while (chunk := reader.read_chunk()) is not None:
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
        return digest.hexdigest(), size

    def decrypt_to_path(self, src: BinaryIO, dest: Path, what: str) -> tuple[str, int]:
        """Decrypt into a new file ``dest`` (mode 0600): for memory-mapped inputs."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            return self.decrypt_stream(src, out, what)

    def decrypt_bytes(self, data: bytes, what: str) -> bytes:
        out = io.BytesIO()
        self.decrypt_stream(io.BytesIO(data), out, what)
        return out.getvalue()


class DecryptingReader(io.RawIOBase):
    """Plaintext of an encrypted object, one authenticated chunk at a time.

    Bytes are returned only after their chunk authenticated; the end of the object is
    authenticated too (the last chunk carries the last-chunk flag), so a truncated object
    fails when its end is reached. Seeking is supported when the stored stream seeks.
    """

    def __init__(
        self, cipher: ObjectCipher, src: BinaryIO, what: str, *, allow_plaintext: bool = True
    ) -> None:
        super().__init__()
        self._cipher = cipher
        self._src = src
        self._what = what
        self._buffer = memoryview(b"")
        self._pos = 0
        self._index = 0
        self._done = False
        self._plain = False
        self._next: bytes | None = None
        start = _read_exact(src, _FIXED.size)
        if not is_encrypted(start):
            if not allow_plaintext:
                raise DecryptionError(
                    f"{what} is not encrypted, but this store only reads encrypted objects; "
                    "the stored object was replaced or is corrupt"
                )
            self._plain = True
            self._buffer = memoryview(start)
            return
        if len(start) < _FIXED.size:
            raise _corrupt(what, 0)
        _, version, chunk_size, id_len = _FIXED.unpack(start)
        if version != VERSION:
            raise DecryptionError(
                f"{what} was encrypted in format version {version}, which this Argosy does not "
                "read; upgrade Argosy"
            )
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise _corrupt(what, 0)
        rest = _read_exact(src, id_len + SALT_SIZE)
        if len(rest) != id_len + SALT_SIZE:
            raise _corrupt(what, 0)
        try:
            key_id = rest[:id_len].decode("ascii")
        except UnicodeDecodeError:
            raise _corrupt(what, 0) from None
        try:
            key = cipher.keys.get(key_id)
        except KeyNotFoundError:
            raise DecryptionError(
                f"{what} failed to decrypt: it names data key {key_id}, which is not a key of "
                f"tenant {cipher.tenant!r} (copied from another tenant, or its key was "
                "deleted); the stored object cannot be read here"
            ) from None
        self._sealer = _Sealer(cipher.tenant, key_id, key, rest[id_len:], chunk_size)
        self._header_size = len(start) + len(rest)
        self._ct_size = chunk_size + TAG_SIZE

    # -- chunks --------------------------------------------------------------------------------
    def read_chunk(self) -> bytes | None:
        """The next authenticated plaintext chunk, or None at the (authenticated) end."""
        if self._plain:
            if self._buffer:
                data = bytes(self._buffer)
                self._buffer = memoryview(b"")
                return data
            more = self._src.read(CHUNK_SIZE)
            return bytes(more) if more else None
        if self._done:
            return None
        current = self._next if self._next is not None else _read_exact(self._src, self._ct_size)
        following = _read_exact(self._src, self._ct_size) if len(current) == self._ct_size else b""
        last = not following
        if len(current) < TAG_SIZE:
            raise _corrupt(self._what, self._index)
        try:
            plain = self._sealer.open(self._index, current, last)
        except InvalidTag:
            raise _corrupt(self._what, self._index) from None
        self._index += 1
        self._next = following
        self._done = last
        return plain

    # -- io.RawIOBase ----------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._src.seekable())

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._buffer:
            chunk = self.read_chunk()
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("an encrypted object seeks from its start only")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        if self._plain:
            self._src.seek(offset)
            self._buffer = memoryview(b"")
            self._pos = offset
            return offset
        size = self._sealer.chunk_size
        index, skip = divmod(offset, size)
        self._src.seek(self._header_size + index * self._ct_size)
        self._index = index
        self._next = None
        self._done = False
        self._buffer = memoryview(b"")
        chunk = self.read_chunk() if skip or index else None
        if chunk is not None:
            self._buffer = memoryview(chunk)[skip:]
        self._pos = offset
        return offset

    def close(self) -> None:
        if not self.closed:
            self._src.close()
        super().close()


__all__ = [
    "CHUNK_SIZE",
    "MAGIC",
    "DataKeys",
    "DecryptingReader",
    "DecryptionError",
    "KeyNotFoundError",
    "ObjectCipher",
    "StaticDataKeys",
    "is_encrypted",
]
