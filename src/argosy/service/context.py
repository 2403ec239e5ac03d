"""What every service call is given: where state lives, whose it is, and who acts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata.db import MetadataStore

DEFAULT_MAX_PARAMETER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ServiceContext:
    """One tenant's view of the stores, for one actor.

    ``actor`` is recorded as ``created_by`` on what the call creates (a user's subject,
    ``token:<id>``, or the local user). ``attempts_dir`` is where this machine keeps the
    live logs of attempts it runs (read before the stored log record: they are fresher).
    ``max_parameter_bytes`` bounds the JSON of one run's parameters.
    """

    metadata: MetadataStore
    store: ArtifactStore
    tenant: str
    actor: str
    attempts_dir: Path
    max_parameter_bytes: int = DEFAULT_MAX_PARAMETER_BYTES
