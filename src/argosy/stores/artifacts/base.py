"""The byte-I/O interface every artifact backend implements (local folder now, S3 later).

Keys are ``/``-separated relative paths. Writes are atomic: a reader sees either nothing or
the complete object. Hashing, deduplication and tenant naming live one layer up.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO


class ByteStore(abc.ABC):
    """Atomic put, streamed get, existence, and (where the backend is a folder) a local path.

    A backend is registered under its URL scheme (see :mod:`argosy.plugins`) and built by
    :meth:`from_url`.
    """

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> ByteStore:
        """The store ``url`` names; ``options`` configure it (``Settings.artifact_options``)."""

    @abc.abstractmethod
    def put_file(self, key: str, source: Path, *, move: bool = False) -> None:
        """Store the file at ``source`` under ``key`` atomically; ``move`` lets it take the file."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store small ``data`` under ``key`` atomically (records, manifests)."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A binary stream of the object; raises ``FileNotFoundError`` if it does not exist."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys that start with ``prefix``."""

    @abc.abstractmethod
    def rename(self, key: str, new_key: str) -> None:
        """Move an object to another key (used to quarantine corrupted blobs)."""

    def delete(self, key: str) -> None:
        """Remove an object if it exists (staged upload chunks). Blobs are never deleted
        through this: they are immutable and shared."""
        from argosy.errors import StoreError

        raise StoreError(f"{type(self).__name__} cannot delete {key!r}")

    def local_path(self, key: str) -> Path | None:
        """A path readable in place (memory-mappable), or None when the backend is remote."""
        return None
