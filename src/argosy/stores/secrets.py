"""Tenant secrets: named values a tenant owner stores and steps receive, encrypted at rest.

A value is sealed with AES-256-GCM under the tenant's current data key (``stores/keys.py``),
with the tenant and the secret's name as associated data — a ciphertext copied to another
name or tenant does not open. Values are never returned by the API: only the engine opens
them, for the tasks whose steps declare them (``@step(secrets=[...])``), and the launcher
redacts them from captured logs.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select

from argosy.errors import IntegrityError, NotFoundError, UsageError
from argosy.ids import new_id
from argosy.stores.keys import TenantKeys
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Secret

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"  # usable as an environment variable name
MAX_VALUE_BYTES = 64 * 1024


def _aad(tenant: str, name: str) -> bytes:
    return f"argosy-secret:{tenant}:{name}".encode()


class TenantSecrets:
    def __init__(self, metadata: MetadataStore, keys: TenantKeys) -> None:
        self.metadata = metadata
        self.keys = keys

    def put(self, tenant: str, name: str, value: str, user: str) -> Secret:
        """Create or replace the secret ``name`` (returns its row; the value is not kept)."""
        import re

        if not re.fullmatch(NAME_PATTERN, name):
            raise UsageError(
                f"secret name {name!r} is not valid; use letters, digits and '_' (an environment "
                "variable name such as HF_TOKEN)"
            )
        data = value.encode()
        if len(data) > MAX_VALUE_BYTES:
            raise UsageError(f"secret {name!r} is larger than {MAX_VALUE_BYTES // 1024} KiB")
        key_id, key = self.keys.current(tenant)
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(key).encrypt(nonce, data, _aad(tenant, name))
        now = datetime.now(UTC)
        with self.metadata.session() as s:
            row = s.scalar(select(Secret).where(Secret.tenant == tenant, Secret.name == name))
            if row is None:
                row = Secret(id=new_id(), tenant=tenant, name=name, created_at=now, created_by=user,
                             ciphertext="", key_id=key_id, updated_at=now, updated_by=user)  # fmt: skip
                s.add(row)
            row.ciphertext = base64.b64encode(sealed).decode()
            row.key_id = key_id
            row.updated_at = now
            row.updated_by = user
            s.flush()
            s.expunge(row)
            return row

    def list(self, tenant: str) -> list[Secret]:
        with self.metadata.session() as s:
            rows = list(
                s.scalars(select(Secret).where(Secret.tenant == tenant).order_by(Secret.name))
            )
            for row in rows:
                s.expunge(row)
            return rows

    def delete(self, tenant: str, name: str) -> None:
        with self.metadata.session() as s:
            gone = s.execute(delete(Secret).where(Secret.tenant == tenant, Secret.name == name))
            if not getattr(gone, "rowcount", 0):
                raise NotFoundError(f"tenant {tenant!r} has no secret {name!r}")

    def open(self, tenant: str, names: Iterable[str]) -> dict[str, str]:
        """The values of the named secrets that exist (for the engine, never the API)."""
        wanted = list(names)
        if not wanted:
            return {}
        with self.metadata.session() as s:
            rows = list(
                s.scalars(select(Secret).where(Secret.tenant == tenant, Secret.name.in_(wanted)))
            )
            found = {r.name: (r.key_id, r.ciphertext) for r in rows}
        values = {}
        for name, (key_id, text) in found.items():
            sealed = base64.b64decode(text)
            try:
                plain = AESGCM(self.keys.get(tenant, key_id)).decrypt(
                    sealed[:12], sealed[12:], _aad(tenant, name)
                )
            except InvalidTag:
                raise IntegrityError(
                    f"secret {name!r} of tenant {tenant!r} does not decrypt: it was modified or "
                    "copied from elsewhere; set it again with 'argosy secrets set'"
                ) from None
            values[name] = plain.decode()
        return values
