"""Verified-once stamps of local blobs (stores/artifacts/blobs.py): a blob hashed on its way in
is not read in full again, and any change to its file is still caught before use."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from argosy.errors import IntegrityError
from argosy.stores.artifacts.blobs import ArtifactStore, BlobInfo, open_artifact_store

DATA = b"0123456789abcdef" * 4096


def _stored(tmp_path: Path) -> tuple[ArtifactStore, BlobInfo, Path]:
    store = open_artifact_store(str(tmp_path / "blobs"), "team-a")
    source = tmp_path / "out"
    source.write_bytes(DATA)
    info = BlobInfo(hashlib.sha256(DATA).hexdigest(), len(DATA))
    info = store.put_file(source, info, move=True, hashed_while_written=True)
    local = store.backend.local_path(store.blob_key(info.sha256))
    assert local is not None
    return store, info, local


class _FullReads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = ArtifactStore._verify_stream

        def counting(store: ArtifactStore, *args: object, **kwargs: object) -> None:
            self.count += 1
            original(store, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(ArtifactStore, "_verify_stream", counting)


def _rewrite_same_size(local: Path) -> None:
    """Flip bytes in place, keeping the size and putting the modification time back."""
    before = local.stat()
    os.chmod(local, 0o644)
    with local.open("r+b") as f:
        f.seek(100)
        f.write(b"X" * 8)
    os.chmod(local, 0o444)
    os.utime(local, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert local.stat().st_size == before.st_size


def test_a_blob_hashed_while_it_was_stored_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, info, local = _stored(tmp_path)
    reads = _FullReads(monkeypatch)
    for _ in range(3):
        assert store.blob_path(info.sha256, cache_dir=tmp_path / "cache") == local
    assert reads.count == 0


def test_a_changed_blob_is_still_caught_with_its_size_and_mtime_put_back(tmp_path: Path) -> None:
    store, info, local = _stored(tmp_path)
    _rewrite_same_size(local)
    with pytest.raises(IntegrityError, match="corrupted"):
        store.blob_path(info.sha256, cache_dir=tmp_path / "cache")
    assert not local.exists()  # quarantined


def test_a_blob_without_a_stamp_is_read_in_full_once_then_not_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, info, _local = _stored(tmp_path)
    stamps = tmp_path / "blobs" / "tenants" / "team-a" / "verified"
    shutil.rmtree(stamps)  # e.g. a store restored from a backup, or an older Argosy's
    reads = _FullReads(monkeypatch)
    store.blob_path(info.sha256, cache_dir=tmp_path / "cache")
    store.blob_path(info.sha256, cache_dir=tmp_path / "cache")
    assert reads.count == 1


def test_a_blob_stored_with_a_hash_given_by_someone_else_gets_no_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_artifact_store(str(tmp_path / "blobs"), "team-a")
    source = tmp_path / "out"
    source.write_bytes(DATA)
    info = store.put_file(source, BlobInfo(hashlib.sha256(DATA).hexdigest(), len(DATA)))
    reads = _FullReads(monkeypatch)
    store.blob_path(info.sha256, cache_dir=tmp_path / "cache")  # e.g. a restored backup's
    assert reads.count == 1


def test_a_file_put_in_place_of_a_blob_is_verified_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, info, local = _stored(tmp_path)
    replacement = tmp_path / "replacement"
    replacement.write_bytes(DATA[:-1] + b"!")  # same size, a new inode
    os.replace(replacement, local)
    reads = _FullReads(monkeypatch)
    with pytest.raises(IntegrityError, match="corrupted"):
        store.blob_path(info.sha256, cache_dir=tmp_path / "cache")
    assert reads.count == 1


def test_storing_the_same_bytes_again_does_not_vouch_for_a_changed_blob(tmp_path: Path) -> None:
    store, info, local = _stored(tmp_path)
    _rewrite_same_size(local)
    again = tmp_path / "again"
    again.write_bytes(DATA)
    # deduplicated: the stored file is not rewritten, and not vouched for
    store.put_file(again, info, move=True, hashed_while_written=True)
    with pytest.raises(IntegrityError, match="corrupted"):
        store.blob_path(info.sha256, cache_dir=tmp_path / "cache")
