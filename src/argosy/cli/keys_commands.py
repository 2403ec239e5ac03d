"""What ``argosy admin keys ...`` does (``main.py`` declares the arguments): list, rotate and
re-wrap the tenants' data keys (encryption at rest; see ``docs/security.md``).

These commands act on the metadata database directly (ARGOSY_DATABASE_URL) with the
deployment's key-encryption key (ARGOSY_KEK / ARGOSY_KEY_FILE, or ARGOSY_KMS_KEY_ID), so they
run where the server runs, as its user. Results go to stdout (one JSON document with
``--output json``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from argosy.config import Settings
from argosy.errors import UsageError
from argosy.stores.keys import LocalKeyProvider, TenantKeys, provider_from_settings
from argosy.stores.metadata.db import MetadataStore


def _open(settings: Settings) -> TenantKeys:
    settings.home.mkdir(parents=True, exist_ok=True)
    return TenantKeys(MetadataStore.open(settings.metadata_url), provider_from_settings(settings))


def _emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def keys_list(settings: Settings, tenant: str | None, json_output: bool) -> None:
    """Every data key (never its bytes): id, tenant, state, KEK, creation time."""
    keys = _open(settings)
    rows = [
        {
            "id": k.id,
            "tenant": k.tenant,
            "state": k.state,
            "kek_id": k.kek_id,
            "created_at": k.created_at.isoformat(),
        }
        for k in keys.list(tenant)
    ]
    if json_output:
        _emit({"current_kek": keys.provider.kek_id, "keys": rows})
        return
    table = Table("tenant", "data key", "state", "wrapped by", "created")
    for r in rows:
        table.add_row(r["tenant"], r["id"], r["state"], r["kek_id"], r["created_at"])
    console = Console(soft_wrap=True)
    console.print(table)
    console.print(f"current key-encryption key: {keys.provider.kek_id}")


def keys_rotate(settings: Settings, tenant: str, json_output: bool) -> None:
    """A new data key for ``tenant``: new writes use it; older keys stay to read older objects."""
    keys = _open(settings)
    key_id = keys.rotate(tenant)
    retired = [k.id for k in keys.list(tenant) if k.state == "retired"]
    if json_output:
        _emit({"tenant": tenant, "active": key_id, "retired": retired})
    else:
        print(
            f"tenant {tenant}: new writes use data key {key_id}; {len(retired)} older key(s) "
            "stay to read older artifacts (servers pick the new key up within 30 s)"
        )


def keys_rewrap(settings: Settings, remove_old: bool, json_output: bool) -> None:
    """Re-wrap every data key under a new key-encryption key; artifact bytes are not touched.

    With the key file: a new KEK is added to it and becomes current. With ``ARGOSY_KEK``:
    the KEK in that variable is the new one, and the old one must be readable (from
    ``ARGOSY_KEK_PREVIOUS`` or the key file). With AWS KMS: the key ``ARGOSY_KMS_KEY_ID``.
    """
    keys = _open(settings)
    provider = keys.provider
    file_kek = isinstance(provider, LocalKeyProvider) and not provider.from_env
    if remove_old and not file_kek:
        raise UsageError(
            "--remove-old applies to a key file; with ARGOSY_KEK unset ARGOSY_KEK_PREVIOUS "
            "afterwards, with AWS KMS disable the old KMS key"
        )
    old_ids: list[str] = []
    if isinstance(provider, LocalKeyProvider) and not provider.from_env:
        old_ids = provider.kek_ids
        provider.add_kek()
    changed = keys.rewrap(provider)
    removed: list[str] = []
    if remove_old and isinstance(provider, LocalKeyProvider):
        for kek_id in old_ids:
            provider.remove_kek(kek_id)
            removed.append(kek_id)
    if json_output:
        _emit({"kek_id": provider.kek_id, "rewrapped": changed, "removed_keks": removed})
    else:
        print(
            f"re-wrapped {changed} data key(s) under key-encryption key {provider.kek_id}"
            + (f"; removed old KEK(s) {', '.join(removed)}" if removed else "")
        )
