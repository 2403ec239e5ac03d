"""The local-folder byte store: one file per key under a root folder, written atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from argosy.errors import StoreError
from argosy.stores.artifacts.base import ByteStore


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalByteStore(ByteStore):
    """Objects are files under ``root``; a write lands in ``root/.tmp`` and is renamed in place.

    ``durable`` fsyncs the file and its folder before the rename returns, so an artifact the
    metadata database points at survives a power cut.
    """

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self.tmp = root / ".tmp"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> LocalByteStore:
        """``file:///PATH`` (a plain folder path needs no URL: see ``open_artifact_store``)."""
        return cls(Path(url.removeprefix("file://")))

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
            raise StoreError(f"invalid artifact key {key!r}: keys are relative paths without '..'")
        return self.root.joinpath(*parts)

    def _commit(self, tmp_path: Path, dest: Path) -> None:
        if self.durable:
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, 0o444)  # stored objects are immutable
        os.replace(tmp_path, dest)
        if self.durable:
            _fsync_dir(dest.parent)

    def _tmp_file(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp)
        os.close(fd)
        return Path(name)

    def put_file(self, key: str, source: Path, *, move: bool = False) -> None:
        dest = self._path(key)
        if move:
            try:
                self._commit(source, dest)
                return
            except OSError:  # another filesystem: fall back to a copy
                pass
        tmp = self._tmp_file()
        try:
            shutil.copyfile(source, tmp)
            self._commit(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if move:
            source.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        tmp = self._tmp_file()
        try:
            tmp.write_bytes(data)
            self._commit(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != ".tmp")
            for name in sorted(filenames):
                key = Path(dirpath, name).relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def rename(self, key: str, new_key: str) -> None:
        dest = self._path(new_key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(key), dest)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
