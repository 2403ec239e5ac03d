"""Key management for encryption at rest: key-encryption keys (KEKs) and tenant data keys.

Envelope encryption in two levels:

- a **data key** (32 random bytes) per tenant encrypts that tenant's objects (see
  :mod:`argosy.stores.encryption`); data keys live in the metadata table ``data_keys``
  (:class:`~argosy.stores.metadata.tables.DataKey`), only ever *wrapped*;
- a **key-encryption key** from a :class:`KeyProvider` wraps the data keys. The KEK never
  leaves the server (a task receives only the unwrapped data keys of its own tenant).

Providers:

- :class:`LocalKeyProvider` — KEKs in a key file (``<home>/keys/kek``, mode 0600 in a 0700
  folder, created on first use) or one KEK in the environment variable ``ARGOSY_KEK``
  (base64 of 32 bytes). The file keeps older KEKs by id, so a re-wrap can read keys wrapped
  under the previous KEK; ``argosy admin keys rewrap --remove-old`` drops them afterwards.
- :class:`AwsKmsKeyProvider` — a KMS key wraps the data keys (``GenerateDataKey`` /
  ``Decrypt``), with the tenant and data key id as the encryption context.

:class:`TenantKeys` creates, finds, rotates and re-wraps the data keys of every tenant.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from argosy.errors import StoreError
from argosy.ids import new_id
from argosy.stores.encryption import KEY_SIZE, KeyNotFoundError, ObjectCipher, StaticDataKeys
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import DataKey

KEK_ENV = "ARGOSY_KEK"
KEK_PREVIOUS_ENV = "ARGOSY_KEK_PREVIOUS"  # older KEKs (comma-separated base64), during a re-wrap
ACTIVE, RETIRED = "active", "retired"
_WRAP_VERSION = b"\x01"


class KeyProvider(abc.ABC):
    """Wraps and unwraps data keys with a key-encryption key (KEK)."""

    @property
    @abc.abstractmethod
    def kek_id(self) -> str:
        """The id of the KEK that wraps new data keys (stored beside each wrapped key)."""

    @abc.abstractmethod
    def wrap(self, data_key: bytes, *, context: str = "") -> bytes:
        """``data_key`` encrypted under the current KEK, bound to ``context``."""

    @abc.abstractmethod
    def unwrap(self, kek_id: str, wrapped: bytes, *, context: str = "") -> bytes:
        """The data key wrapped under the KEK ``kek_id`` with ``context``."""

    def generate(self, *, context: str = "") -> tuple[bytes, bytes]:
        """A new random data key and its wrapped form."""
        key = os.urandom(KEY_SIZE)
        return key, self.wrap(key, context=context)


def _decode_kek(value: str, name: str) -> bytes:
    try:
        kek = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        kek = b""
    if len(kek) != KEY_SIZE:
        raise StoreError(
            f"{name} must be the base64 of 32 random bytes; make one with "
            '`python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`'
        )
    return kek


def _local_kek_id(kek: bytes) -> str:
    return "local-" + hashlib.sha256(b"argosy-kek-id\0" + kek).hexdigest()[:16]


class LocalKeyProvider(KeyProvider):
    """KEKs in a local key file (several, by id: the current one and older ones), or one in
    ``ARGOSY_KEK``. Wrapping is AES-256-GCM with a random 96-bit nonce; the KEK id and the
    context (tenant and data key id) are the additional data.

    Key file (JSON, mode 0600, folder 0700)::

        {"current": "local-...", "keys": {"local-...": "<base64 32 bytes>", ...}}
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        env_value: str | None = None,
        previous: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self._keys: dict[str, bytes] = {}
        self._current = ""
        self._env_ids: set[str] = set()  # never written to the key file
        self._lock = threading.Lock()
        if env_value:
            kek = _decode_kek(env_value, KEK_ENV)
            self._current = _local_kek_id(kek)
            self._keys[self._current] = kek
            self._env_ids.add(self._current)
        for value in previous:
            old = _decode_kek(value, KEK_PREVIOUS_ENV)
            self._keys.setdefault(_local_kek_id(old), old)
            self._env_ids.add(_local_kek_id(old))
        if path is not None:
            self._load(create=not env_value)

    @classmethod
    def from_settings(cls, home: Path, key_file: Path | None) -> LocalKeyProvider:
        """``ARGOSY_KEK`` if set (plus ``ARGOSY_KEK_PREVIOUS`` and any KEKs in the key file, for
        reading keys wrapped earlier), else the key file (created on first use)."""
        previous = tuple(v for v in os.environ.get(KEK_PREVIOUS_ENV, "").split(",") if v.strip())
        return cls(
            key_file or home / "keys" / "kek",
            env_value=os.environ.get(KEK_ENV) or None,
            previous=previous,
        )

    @property
    def from_env(self) -> bool:
        """Whether the current KEK comes from ``ARGOSY_KEK`` (not from the key file)."""
        return self._current in self._env_ids

    # -- the key file ----------------------------------------------------------------------------
    def _load(self, *, create: bool) -> None:
        assert self.path is not None
        if not self.path.exists():
            if not create:
                return
            kek = os.urandom(KEY_SIZE)
            self._current = _local_kek_id(kek)
            self._keys[self._current] = kek
            self._save()
            return
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            raise StoreError(
                f"the key file {self.path} is readable by others (mode {mode:o}); "
                f"run `chmod 600 {self.path}`"
            )
        try:
            doc = json.loads(self.path.read_text())
            keys = {k: base64.b64decode(v) for k, v in doc["keys"].items()}
            current = str(doc["current"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"cannot read the key file {self.path} ({exc}); restore it from its backup"
            ) from None
        for k, v in keys.items():
            self._keys.setdefault(k, v)
            self._env_ids.discard(k)
        if not self._current:
            self._current = current

    def _save(self) -> None:
        assert self.path is not None
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        kept = {k: v for k, v in self._keys.items() if k not in self._env_ids}
        doc = {
            "current": self._current if self._current in kept else next(iter(kept), ""),
            "keys": {k: base64.b64encode(v).decode("ascii") for k, v in kept.items()},
        }
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def add_kek(self) -> str:
        """Make a new random KEK the current one (older ones are kept); returns its id."""
        if self.path is None:
            raise StoreError("no key file to add a KEK to; set ARGOSY_KEY_FILE")
        if self.from_env:
            raise StoreError(
                f"the current KEK comes from {KEK_ENV}; to change it, set {KEK_ENV} to a new key "
                f"and {KEK_PREVIOUS_ENV} to the old one, then run `argosy admin keys rewrap`"
            )
        with self._lock:
            kek = os.urandom(KEY_SIZE)
            self._current = _local_kek_id(kek)
            self._keys[self._current] = kek
            self._save()
            return self._current

    def remove_kek(self, kek_id: str) -> None:
        """Forget an old KEK (after every data key was re-wrapped under the current one)."""
        if kek_id == self._current:
            raise StoreError(f"KEK {kek_id} is the current one; add a new KEK before removing it")
        if kek_id in self._env_ids:
            raise StoreError(f"KEK {kek_id} comes from the environment; unset it there instead")
        with self._lock:
            self._keys.pop(kek_id, None)
            if self.path is not None and self.path.exists():
                self._save()

    @property
    def kek_ids(self) -> list[str]:
        return sorted(self._keys)

    # -- KeyProvider ---------------------------------------------------------------------------
    @property
    def kek_id(self) -> str:
        if not self._current:
            raise StoreError(f"no key-encryption key: set {KEK_ENV} or ARGOSY_KEY_FILE")
        return self._current

    def wrap(self, data_key: bytes, *, context: str = "") -> bytes:
        kek_id = self.kek_id
        nonce = os.urandom(12)
        aad = f"{kek_id}\0{context}".encode()
        return _WRAP_VERSION + nonce + AESGCM(self._keys[kek_id]).encrypt(nonce, data_key, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: str = "") -> bytes:
        kek = self._keys.get(kek_id)
        if kek is None:
            raise StoreError(
                f"the key-encryption key {kek_id} is not in {self.path or KEK_ENV}; restore the "
                "key file that holds it (data keys wrapped under it cannot be read)"
            )
        if wrapped[:1] != _WRAP_VERSION or len(wrapped) < 13 + 16:
            raise StoreError(f"a data key wrapped under {kek_id} is malformed")
        aad = f"{kek_id}\0{context}".encode()
        try:
            return AESGCM(kek).decrypt(wrapped[1:13], wrapped[13:], aad)
        except InvalidTag:
            raise StoreError(
                f"a data key wrapped under KEK {kek_id} failed to unwrap ({context}); the "
                "data_keys row was modified or copied from another tenant"
            ) from None


class AwsKmsKeyProvider(KeyProvider):
    """A KMS key (``kms_key_id``: key id, ARN or alias) wraps the data keys.

    New data keys come from ``GenerateDataKey`` (AES_256); they are unwrapped with
    ``Decrypt``. The encryption context ``{"argosy": context}`` binds each wrapped key to its
    tenant and data key id, so KMS refuses a wrapped key copied to another tenant; CloudTrail
    records every unwrap. The server needs ``kms:GenerateDataKey``, ``kms:Encrypt`` (re-wrap)
    and ``kms:Decrypt`` on the key; task processes need none (they get unwrapped data keys).

    Tested against moto's KMS in server mode (``tests/test_encryption.py``), the same endpoint
    the S3 tests use. ``client`` can be given for tests; otherwise boto3 uses the standard AWS
    credential chain with ``endpoint_url``/``region``.
    """

    def __init__(
        self,
        kms_key_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.kms_key_id = kms_key_id
        self.region = region
        self.endpoint_url = endpoint_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.session.Session(region_name=self.region).client(
                "kms", endpoint_url=self.endpoint_url
            )
        return self._client

    @property
    def kek_id(self) -> str:
        return f"aws-kms:{self.kms_key_id}"

    def _fail(self, exc: Exception, action: str) -> StoreError:
        detail = str(exc).replace("\n", " ")
        return StoreError(
            f"AWS KMS failed to {action} with {self.kms_key_id} ({detail}); check the key id, "
            "that it is enabled, and that the credentials may use it (kms:GenerateDataKey, "
            "kms:Encrypt, kms:Decrypt)"
        )

    def generate(self, *, context: str = "") -> tuple[bytes, bytes]:
        try:
            out = self.client.generate_data_key(
                KeyId=self.kms_key_id, KeySpec="AES_256", EncryptionContext={"argosy": context}
            )
        except Exception as exc:
            raise self._fail(exc, "generate a data key") from None
        return bytes(out["Plaintext"]), bytes(out["CiphertextBlob"])

    def wrap(self, data_key: bytes, *, context: str = "") -> bytes:
        try:
            out = self.client.encrypt(
                KeyId=self.kms_key_id, Plaintext=data_key, EncryptionContext={"argosy": context}
            )
        except Exception as exc:
            raise self._fail(exc, "wrap a data key") from None
        return bytes(out["CiphertextBlob"])

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: str = "") -> bytes:
        key_id = kek_id.removeprefix("aws-kms:")
        try:
            out = self.client.decrypt(
                CiphertextBlob=wrapped, KeyId=key_id, EncryptionContext={"argosy": context}
            )
        except Exception as exc:
            raise self._fail(exc, "unwrap a data key") from None
        return bytes(out["Plaintext"])


def provider_from_settings(settings: Any) -> KeyProvider:
    """The deployment's KEK provider: AWS KMS when ``ARGOSY_KMS_KEY_ID`` is set, else local."""
    kms = os.environ.get("ARGOSY_KMS_KEY_ID")
    if kms:
        return AwsKmsKeyProvider(
            kms,
            region=getattr(settings, "s3_region", None),
            endpoint_url=os.environ.get("ARGOSY_KMS_ENDPOINT_URL"),
        )
    return LocalKeyProvider.from_settings(settings.home, getattr(settings, "key_file", None))


@dataclass(frozen=True)
class DataKeyInfo:
    """One data key as listed (never its bytes)."""

    id: str
    tenant: str
    kek_id: str
    state: str
    created_at: datetime


def _context(tenant: str, key_id: str) -> str:
    return f"tenant={tenant};key={key_id}"


class TenantKeys:
    """The data keys of every tenant, in the ``data_keys`` table, wrapped by ``provider``.

    The newest ``active`` key of a tenant encrypts new objects (one is created on first use);
    any of the tenant's keys decrypts (objects name their key id). Unwrapped keys are cached
    in memory; which key is current is re-read every ``refresh`` seconds, so a rotation made
    by another process takes effect here within that time.
    """

    def __init__(
        self, metadata: MetadataStore, provider: KeyProvider, *, refresh: float = 30.0
    ) -> None:
        self.metadata = metadata
        self.provider = provider
        self.refresh = refresh
        self._cache: dict[tuple[str, str], bytes] = {}
        self._current: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------
    def _unwrap(self, row: DataKey) -> bytes:
        return self.provider.unwrap(
            row.kek_id, base64.b64decode(row.wrapped), context=_context(row.tenant, row.id)
        )

    def get(self, tenant: str, key_id: str) -> bytes:
        with self._lock:
            found = self._cache.get((tenant, key_id))
        if found is not None:
            return found
        with self.metadata.session() as s:
            row = s.get(DataKey, key_id)
            if row is None or row.tenant != tenant:
                raise KeyNotFoundError(f"data key {key_id} is not a key of tenant {tenant!r}")
            key = self._unwrap(row)
        with self._lock:
            self._cache[(tenant, key_id)] = key
        return key

    def current(self, tenant: str) -> tuple[str, bytes]:
        """The key new objects of ``tenant`` are encrypted with (created if there is none)."""
        with self._lock:
            cached = self._current.get(tenant)
        if cached is not None and time.monotonic() - cached[1] < self.refresh:
            return cached[0], self.get(tenant, cached[0])
        with self.metadata.session() as s:
            row = s.scalars(
                select(DataKey)
                .where(DataKey.tenant == tenant, DataKey.state == ACTIVE)
                .order_by(DataKey.created_at.desc(), DataKey.id.desc())
                .limit(1)
            ).first()
            key_id = row.id if row is not None else None
        if key_id is None:
            key_id = self.rotate(tenant)
        with self._lock:
            self._current[tenant] = (key_id, time.monotonic())
        return key_id, self.get(tenant, key_id)

    def list(self, tenant: str | None = None) -> list[DataKeyInfo]:
        with self.metadata.session() as s:
            query = select(DataKey).order_by(DataKey.tenant, DataKey.created_at, DataKey.id)
            if tenant is not None:
                query = query.where(DataKey.tenant == tenant)
            return [
                DataKeyInfo(r.id, r.tenant, r.kek_id, r.state, r.created_at)
                for r in s.scalars(query)
            ]

    def all_keys(self, tenant: str) -> dict[str, bytes]:
        """Every key of ``tenant``, unwrapped (what a task of the tenant may need to read)."""
        return {info.id: self.get(tenant, info.id) for info in self.list(tenant)}

    # -- changing ------------------------------------------------------------------------------
    def rotate(self, tenant: str) -> str:
        """A new data key for ``tenant`` encrypts new writes; older ones are retired (kept)."""
        key_id = new_id()
        key, wrapped = self.provider.generate(context=_context(tenant, key_id))
        now = datetime.now(UTC)
        with self.metadata.session() as s:
            for old in s.scalars(
                select(DataKey).where(DataKey.tenant == tenant, DataKey.state == ACTIVE)
            ):
                old.state = RETIRED
            s.add(
                DataKey(
                    id=key_id,
                    tenant=tenant,
                    kek_id=self.provider.kek_id,
                    wrapped=base64.b64encode(wrapped).decode("ascii"),
                    state=ACTIVE,
                    created_at=now,
                )
            )
        with self._lock:
            self._cache[(tenant, key_id)] = key
            self._current[tenant] = (key_id, time.monotonic())
        return key_id

    def rewrap(self, new: KeyProvider | None = None) -> int:
        """Re-wrap every data key not yet under ``new``'s current KEK (default: this provider's
        current KEK); artifact bytes are not touched. Returns how many keys were re-wrapped.
        Afterwards ``self.provider`` is ``new``."""
        target = new or self.provider
        changed = 0
        with self.metadata.session() as s:
            for row in s.scalars(select(DataKey).order_by(DataKey.id)):
                if row.kek_id == target.kek_id:
                    continue
                key = self._unwrap(row)
                row.wrapped = base64.b64encode(
                    target.wrap(key, context=_context(row.tenant, row.id))
                ).decode("ascii")
                row.kek_id = target.kek_id
                changed += 1
        self.provider = target
        return changed

    # -- what stores and tasks use -------------------------------------------------------------
    def data_keys(self, tenant: str) -> TenantDataKeys:
        return TenantDataKeys(self, tenant)

    def cipher(self, tenant: str) -> ObjectCipher:
        return ObjectCipher(self.data_keys(tenant))


class TenantDataKeys:
    """:class:`~argosy.stores.encryption.DataKeys` of one tenant, backed by :class:`TenantKeys`."""

    def __init__(self, keys: TenantKeys, tenant: str) -> None:
        self._keys = keys
        self._tenant = tenant

    @property
    def tenant(self) -> str:
        return self._tenant

    def current(self) -> tuple[str, bytes]:
        return self._keys.current(self._tenant)

    def get(self, key_id: str) -> bytes:
        return self._keys.get(self._tenant, key_id)

    def for_task(self) -> StaticDataKeys:
        """The unwrapped keys a task of this tenant gets in its invocation (never the KEK)."""
        current, _ = self.current()
        return StaticDataKeys(self._tenant, current, self._keys.all_keys(self._tenant))


def static_keys(doc: Mapping[str, Any]) -> StaticDataKeys:
    return StaticDataKeys.from_document(doc)
