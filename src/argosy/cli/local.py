"""Opening local mode: settings, the metadata DB, the artifact store, executor and engine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from argosy import plugins
from argosy.config import Settings
from argosy.engine.engine import Engine, ProgressCallback
from argosy.executors.base import Capacity
from argosy.stores.artifacts.blobs import ArtifactStore, open_artifact_store
from argosy.stores.metadata.db import MetadataStore


def read_secrets_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments, optional ``export``, optional quotes)."""
    if not path.is_file():
        return {}
    secrets: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        secrets[key.strip()] = value
    return secrets


def local_secrets(settings: Settings) -> dict[str, str]:
    """Secrets for local runs: the secrets file, overridden by environment variables."""
    found = read_secrets_file(settings.resolved_secrets_file)
    found.update(os.environ)
    return found


@dataclass
class Local:
    """Everything local mode needs, opened once per command."""

    settings: Settings
    metadata: MetadataStore
    store: ArtifactStore

    @property
    def capacity(self) -> Capacity:
        s = self.settings
        return Capacity(cpu=s.max_cpus, memory=s.max_memory, gpu=s.max_gpus)

    def engine(self, on_change: ProgressCallback | None = None) -> Engine:
        s = self.settings
        executor = plugins.executor_class(plugins.DEFAULT_EXECUTOR)(
            self.store, s.attempts_dir, self.capacity, memory_margin=s.memory_margin
        )
        return Engine(
            self.metadata,
            self.store,
            executor,
            user=s.user,
            cache_dir=str(s.home / "cache"),
            store_url=s.artifacts_url,
            store_options=s.artifact_options(),
            secrets=local_secrets(s),
            on_change=on_change,
            poll_interval=s.poll_interval,
            cache=s.cache,
            cache_ttl=s.cache_ttl,
            db_retry_seconds=s.db_retry_seconds,
        )


def open_local(settings: Settings) -> Local:
    settings.home.mkdir(parents=True, exist_ok=True)
    metadata = MetadataStore.open(settings.metadata_url)
    store = open_artifact_store(
        settings.artifacts_url, settings.tenant, settings.artifact_options()
    )
    if settings.encryption:  # local mode: off unless ARGOSY_ENCRYPTION=true
        from argosy.stores.keys import TenantKeys, provider_from_settings

        keys = TenantKeys(metadata, provider_from_settings(settings))
        keys.all_keys(settings.tenant)  # unwrapped now: reads inside a session need no other
        store = store.with_cipher(keys.cipher(settings.tenant))
    return Local(settings, metadata, store)
