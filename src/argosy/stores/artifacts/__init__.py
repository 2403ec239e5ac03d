"""Artifact storage in three layers (see ``../shared`` STYLE: bytes → blobs → artifacts).

- :mod:`.base` — :class:`ByteStore`, the byte-I/O interface a backend implements;
- :mod:`.local` — the local-folder backend;
- :mod:`.blobs` — :class:`ArtifactStore`: tenant-scoped, content-addressed blobs plus the
  per-attempt records (result records, logs) written beside them.
"""

from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import ArtifactStore, BlobInfo, open_artifact_store

__all__ = ["ArtifactStore", "BlobInfo", "ByteStore", "open_artifact_store"]
