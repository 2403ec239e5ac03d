"""What every part of a server process shares: settings, the metadata DB, artifact stores,
the clock and this instance's identity. Created once by ``serve``; routes get it from
``request.app.state.context``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from argosy.auth.task_credentials import TaskGrants, TaskTokens
from argosy.config import Settings
from argosy.ids import new_id
from argosy.server.clock import Clock, clock_for
from argosy.stores.artifacts.blobs import ArtifactStore, open_artifact_store
from argosy.stores.metadata.db import MetadataStore

if TYPE_CHECKING:
    from argosy.server.coordinator import Coordinator
    from argosy.stores.keys import TenantKeys


@dataclass
class ServerContext:
    settings: Settings
    metadata: MetadataStore
    clock: Clock
    instance_id: str = field(default_factory=new_id)
    coordinator: Coordinator | None = None
    url: str | None = None  # where this instance serves (task processes reach it there)
    task_tokens: TaskTokens = field(default_factory=TaskTokens)
    task_grants: TaskGrants = field(default_factory=TaskGrants)
    _stores: dict[str, ArtifactStore] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keys: TenantKeys | None = None
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings) -> ServerContext:
        settings.home.mkdir(parents=True, exist_ok=True)
        return cls(
            settings, MetadataStore.open(settings.metadata_url), clock_for(settings.clock_file),
            task_tokens=TaskTokens.of_deployment(settings.task_token_key),
        )  # fmt: skip

    def tenant_keys(self) -> TenantKeys:
        """The tenants' data keys, wrapped by the deployment's key-encryption key."""
        with self._keys_lock:
            if self._keys is None:
                from argosy.stores.keys import TenantKeys, provider_from_settings

                self._keys = TenantKeys(self.metadata, provider_from_settings(self.settings))
            return self._keys

    def store(self, tenant: str) -> ArtifactStore:
        """The artifact store of ``tenant`` (one per tenant, created on first use)."""
        with self._lock:
            found = self._stores.get(tenant)
            if found is None:
                s = self.settings
                found = open_artifact_store(s.artifacts_url, tenant, s.artifact_options())
                if s.encryption is not False:  # encryption at rest: on in server mode by default
                    keys = self.tenant_keys()
                    keys.all_keys(tenant)  # unwrapped now: reads never open a nested session
                    found = found.with_cipher(keys.cipher(tenant))
                self._stores[tenant] = found
            return found
