"""Encryption at rest: the object format, tampering, tenants, key rotation and re-wrap, KMS,
streaming memory, and an end-to-end run — on a local folder and on S3 (moto)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from argosy.errors import IntegrityError
from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.artifacts.local import LocalByteStore
from argosy.stores.artifacts.s3 import S3ByteStore, S3Options
from argosy.stores.encryption import (
    CHUNK_SIZE,
    MAGIC,
    TAG_SIZE,
    DecryptionError,
    ObjectCipher,
    StaticDataKeys,
)
from argosy.stores.keys import AwsKmsKeyProvider, LocalKeyProvider, TenantKeys
from argosy.stores.metadata.db import MetadataStore
from tests.conftest import Workspace, outputs
from tests.s3_fixture import TEST_REGION, S3Endpoint

MARKER = b"PLAINTEXT-MARKER-0123456789-"  # a recognizable pattern that must never be stored


def pattern(size: int) -> bytes:
    return (MARKER * (size // len(MARKER) + 1))[:size]


@pytest.fixture
def metadata(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'meta.db'}")
    yield store
    store.close()


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "keys" / "kek")


@pytest.fixture
def keys(metadata: MetadataStore, provider: LocalKeyProvider) -> TenantKeys:
    return TenantKeys(metadata, provider)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> ByteStore:
    if request.param == "local":
        return LocalByteStore(tmp_path / "blobs", durable=False)
    s3: S3Endpoint = request.getfixturevalue("s3_env")
    bucket: str = request.getfixturevalue("s3_bucket")
    return S3ByteStore(bucket, "argosy", S3Options.from_mapping(s3.options()))


def stored(backend: ByteStore, key: str) -> bytes:
    with backend.open(key) as f:
        return f.read()


def all_stored(backend: ByteStore) -> dict[str, bytes]:
    return {k: stored(backend, k) for k in backend.list("tenants/")}


def replace(backend: ByteStore, key: str, data: bytes) -> None:
    backend.put_bytes(key, data)  # atomic overwrite (S3: an encrypted body skips the name check)


def header_size(blob: bytes) -> int:
    return len(MAGIC) + 1 + 4 + 1 + blob[len(MAGIC) + 5] + 24


# -- what is stored ---------------------------------------------------------------------------
def test_stored_objects_contain_no_plaintext(
    backend: ByteStore, keys: TenantKeys, tmp_path: Path
) -> None:
    store = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    big = tmp_path / "big.bin"
    big.write_bytes(pattern(3 * CHUNK_SIZE + 12345))
    info = store.put_file(big)
    small = store.put_bytes(pattern(1000))
    store.put_record("runs/r1/train/1/result.json", {"status": "succeeded", "m": MARKER.decode()})
    log = tmp_path / "log.jsonl"
    log.write_bytes(pattern(5000))
    store.put_record_file("runs/r1/train/1/log.jsonl", log)

    objects = all_stored(backend)
    assert len(objects) == 4
    for key, data in objects.items():
        assert data.startswith(MAGIC), key
        assert MARKER not in data and MARKER[:12] not in data, key
    # names stay the plaintext's sha256 (deduplication unchanged), and everything reads back
    assert info.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert store.blob_key(info.sha256) in objects
    assert store.read_blob(small.sha256) == pattern(1000)
    assert store.put_bytes(pattern(1000)) == small and len(all_stored(backend)) == 4
    dest = tmp_path / "copy.bin"
    store.copy_blob_to(info.sha256, dest)
    assert dest.read_bytes() == big.read_bytes()
    assert store.get_record("runs/r1/train/1/result.json") == {
        "status": "succeeded",
        "m": MARKER.decode(),
    }
    record = store.open_record("runs/r1/train/1/log.jsonl")
    assert record is not None
    with record:
        assert record.read() == pattern(5000)


def test_blob_path_decrypts_into_the_callers_private_folder(
    backend: ByteStore, keys: TenantKeys, tmp_path: Path
) -> None:
    store = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    info = store.put_bytes(pattern(2 * CHUNK_SIZE))
    scratch = tmp_path / "attempt" / "scratch" / ".cache"
    path = store.blob_path(info.sha256, cache_dir=scratch)
    assert path.parent == scratch  # never the stored object in place, even on a local folder
    assert path.read_bytes() == pattern(2 * CHUNK_SIZE)
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_blob_streams_and_seeks_plaintext(backend: ByteStore, keys: TenantKeys) -> None:
    store = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    data = os.urandom(2 * CHUNK_SIZE + 999)
    info = store.put_bytes(data)
    for offset in (0, 5, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 10):
        with store.open_blob(info.sha256) as f:
            f.seek(offset)
            assert f.read(4096) == data[offset : offset + 4096]


def test_two_encryptions_of_the_same_plaintext_differ(keys: TenantKeys) -> None:
    cipher = keys.cipher("team-a")
    data = pattern(3 * CHUNK_SIZE)
    first, second = cipher.encrypt_bytes(data), cipher.encrypt_bytes(data)
    size = header_size(first)
    assert first[size - 24 : size] != second[size - 24 : size]  # fresh random salt per object
    # every chunk differs (per-object key and nonces): no position repeats a ciphertext chunk
    step = CHUNK_SIZE + TAG_SIZE
    for i in range(3):
        a = first[size + i * step : size + (i + 1) * step]
        b = second[size + i * step : size + (i + 1) * step]
        assert a != b
    assert cipher.decrypt_bytes(first, "x") == cipher.decrypt_bytes(second, "x") == data


def test_objects_written_before_encryption_still_read(backend: ByteStore, keys: TenantKeys) -> None:
    plain = ArtifactStore(backend, "team-a")
    info = plain.put_bytes(b"written before encryption was on")
    encrypted = plain.with_cipher(keys.cipher("team-a"))
    assert encrypted.read_blob(info.sha256) == b"written before encryption was on"


# -- tampering ----------------------------------------------------------------------------------
def _flip(blob: bytes, hs: int) -> bytes:
    i = hs + CHUNK_SIZE + TAG_SIZE + 100  # inside chunk 1
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]


def _swap(blob: bytes, hs: int) -> bytes:
    step = CHUNK_SIZE + TAG_SIZE
    c0, c1 = blob[hs : hs + step], blob[hs + step : hs + 2 * step]
    return blob[:hs] + c1 + c0 + blob[hs + 2 * step :]


def _drop_last(blob: bytes, hs: int) -> bytes:
    step = CHUNK_SIZE + TAG_SIZE
    chunks = (len(blob) - hs + step - 1) // step
    return blob[: hs + (chunks - 1) * step]


def _append(blob: bytes, hs: int) -> bytes:
    step = CHUNK_SIZE + TAG_SIZE
    return blob + blob[hs : hs + step]  # a duplicate of chunk 0 after the end


TAMPER: dict[str, tuple[Callable[[bytes, int], bytes], int]] = {
    "flipped-byte": (_flip, 1),
    "swapped-chunks": (_swap, 0),
    "truncated": (_drop_last, 2),
    "appended-chunk": (_append, 3),
}


@pytest.mark.parametrize("kind", list(TAMPER))
def test_tampered_objects_fail_with_a_clear_error(
    backend: ByteStore, keys: TenantKeys, tmp_path: Path, kind: str
) -> None:
    store = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    info = store.put_bytes(pattern(3 * CHUNK_SIZE + 500))  # 4 chunks: 0..3
    key = store.blob_key(info.sha256)
    blob = stored(backend, key)
    tamper, bad_chunk = TAMPER[kind]
    replace(backend, key, tamper(blob, header_size(blob)))

    expected = (
        f"artifact sha256:{info.sha256} in tenant 'team-a' failed to decrypt: chunk "
        f"{bad_chunk} was modified, reordered or truncated; the stored object is corrupt"
    )
    with pytest.raises(DecryptionError) as err:
        store.read_blob(info.sha256)
    assert str(err.value).startswith(expected)
    assert isinstance(err.value, IntegrityError)
    with pytest.raises(DecryptionError, match=f"chunk {bad_chunk} was modified"):
        store.copy_blob_to(info.sha256, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    with pytest.raises(DecryptionError, match=f"chunk {bad_chunk} was modified"):
        store.blob_path(info.sha256, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no partial plaintext left behind


def test_tampered_record_fails(backend: ByteStore, keys: TenantKeys) -> None:
    store = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    store.put_record("runs/r/n/1/result.json", {"status": "succeeded"})
    key = store.record_key("runs/r/n/1/result.json")
    blob = bytearray(stored(backend, key))
    blob[-1] ^= 0x80
    replace(backend, key, bytes(blob))
    with pytest.raises(DecryptionError, match="chunk 0 was modified, reordered or truncated"):
        store.get_record("runs/r/n/1/result.json")


def test_a_ciphertext_copied_to_another_tenant_fails(backend: ByteStore, keys: TenantKeys) -> None:
    a = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    b = ArtifactStore(backend, "team-b", keys.cipher("team-b"))
    b.put_bytes(b"team b has a key too")
    info = a.put_bytes(pattern(4096))
    replace(backend, b.blob_key(info.sha256), stored(backend, a.blob_key(info.sha256)))
    with pytest.raises(DecryptionError) as err:
        b.read_blob(info.sha256)
    assert "is not a key of tenant 'team-b'" in str(err.value)
    assert f"artifact sha256:{info.sha256} in tenant 'team-b' failed to decrypt" in str(err.value)


def test_the_tenant_is_bound_even_with_the_same_key_bytes() -> None:
    key = os.urandom(32)
    a = ObjectCipher(StaticDataKeys("team-a", "k1", {"k1": key}))
    b = ObjectCipher(StaticDataKeys("team-b", "k1", {"k1": key}))
    with pytest.raises(DecryptionError, match="chunk 0 was modified"):
        b.decrypt_bytes(a.encrypt_bytes(b"data"), "object x")


def test_empty_and_chunk_aligned_objects_round_trip(keys: TenantKeys) -> None:
    cipher = ObjectCipher(keys.data_keys("team-a"), chunk_size=1024)
    for size in (0, 1, 1023, 1024, 1025, 4096):
        data = os.urandom(size)
        sealed = cipher.encrypt_bytes(data)
        assert cipher.decrypt_bytes(sealed, "x") == data
        with pytest.raises(DecryptionError):
            cipher.decrypt_bytes(sealed[:-1], "x")


# -- keys -----------------------------------------------------------------------------------
def test_rotation_keeps_old_and_new_artifacts_readable(
    backend: ByteStore, keys: TenantKeys
) -> None:
    store = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    old = store.put_bytes(b"before rotation")
    first, _ = keys.current("team-a")
    new_id = keys.rotate("team-a")
    assert new_id != first
    new = store.put_bytes(b"after rotation")
    assert store.read_blob(old.sha256) == b"before rotation"
    assert store.read_blob(new.sha256) == b"after rotation"
    assert f"{new_id}".encode() in stored(backend, store.blob_key(new.sha256))[:64]
    assert f"{first}".encode() in stored(backend, store.blob_key(old.sha256))[:64]
    states = {k.id: k.state for k in keys.list("team-a")}
    assert states == {first: "retired", new_id: "active"}
    # another process (fresh cache) reads both too
    fresh = TenantKeys(keys.metadata, keys.provider)
    again = store.with_cipher(fresh.cipher("team-a"))
    assert again.read_blob(old.sha256) == b"before rotation"
    assert fresh.current("team-a")[0] == new_id


def test_rewrap_to_a_new_kek_then_the_old_kek_is_not_needed(
    backend: ByteStore, keys: TenantKeys, provider: LocalKeyProvider, tmp_path: Path
) -> None:
    a = ArtifactStore(backend, "team-a", keys.cipher("team-a"))
    b = ArtifactStore(backend, "team-b", keys.cipher("team-b"))
    blobs = [(a, a.put_bytes(b"a1")), (b, b.put_bytes(b"b1"))]
    keys.rotate("team-a")
    blobs.append((a, a.put_bytes(b"a2")))
    before = all_stored(backend)
    old_kek = provider.kek_id

    new_kek = provider.add_kek()
    assert keys.rewrap() == 3
    provider.remove_kek(old_kek)
    assert all_stored(backend) == before  # artifact bytes untouched
    doc = json.loads((tmp_path / "keys" / "kek").read_text())
    assert list(doc["keys"]) == [new_kek] and old_kek not in doc["keys"]
    assert {k.kek_id for k in keys.list()} == {new_kek}

    # a new process with only the new key file reads everything
    fresh = TenantKeys(keys.metadata, LocalKeyProvider(tmp_path / "keys" / "kek"))
    for store, info in blobs:
        reread = store.with_cipher(fresh.cipher(store.tenant))
        assert reread.read_blob(info.sha256) in (b"a1", b"b1", b"a2")


def test_key_file_is_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek"
    provider = LocalKeyProvider(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    wrapped = provider.wrap(b"k" * 32, context="tenant=a;key=1")
    assert wrapped != b"k" * 32 and b"k" * 32 not in wrapped
    assert LocalKeyProvider(path).unwrap(provider.kek_id, wrapped, context="tenant=a;key=1") == (
        b"k" * 32
    )
    with pytest.raises(Exception, match="failed to unwrap"):
        provider.unwrap(provider.kek_id, wrapped, context="tenant=b;key=1")
    os.chmod(path, 0o644)
    with pytest.raises(Exception, match="chmod 600"):
        LocalKeyProvider(path)


def test_kek_from_the_environment(metadata: MetadataStore, tmp_path: Path) -> None:
    kek = base64.b64encode(os.urandom(32)).decode()
    provider = LocalKeyProvider(tmp_path / "nofile", env_value=kek)
    assert not (tmp_path / "nofile").exists()  # nothing written to disk
    keys = TenantKeys(metadata, provider)
    store = ArtifactStore(LocalByteStore(tmp_path / "b"), "team-a", keys.cipher("team-a"))
    info = store.put_bytes(b"env kek")
    # the next KEK comes in ARGOSY_KEK, the old one in ARGOSY_KEK_PREVIOUS, then re-wrap
    new = base64.b64encode(os.urandom(32)).decode()
    both = TenantKeys(metadata, LocalKeyProvider(None, env_value=new, previous=(kek,)))
    assert both.rewrap() == 1
    only_new = TenantKeys(metadata, LocalKeyProvider(None, env_value=new))
    assert store.with_cipher(only_new.cipher("team-a")).read_blob(info.sha256) == b"env kek"
    with pytest.raises(Exception, match="base64 of 32 random bytes"):
        LocalKeyProvider(None, env_value="c2hvcnQ=")


def test_aws_kms_provider_and_a_rewrap_to_a_key_file_and_back(
    s3_env: S3Endpoint, metadata: MetadataStore, tmp_path: Path
) -> None:
    """moto's server mode answers KMS on the same endpoint as S3."""
    import boto3

    kms = boto3.session.Session(region_name=TEST_REGION).client("kms", endpoint_url=s3_env.url)
    key_id = kms.create_key(Description="argosy test KEK")["KeyMetadata"]["KeyId"]
    provider = AwsKmsKeyProvider(key_id, region=TEST_REGION, endpoint_url=s3_env.url)
    keys = TenantKeys(metadata, provider)
    store = ArtifactStore(LocalByteStore(tmp_path / "b"), "team-a", keys.cipher("team-a"))
    info = store.put_bytes(pattern(5000))
    assert [k.kek_id for k in keys.list()] == [f"aws-kms:{key_id}"]
    fresh = TenantKeys(
        metadata, AwsKmsKeyProvider(key_id, region=TEST_REGION, endpoint_url=s3_env.url)
    )
    assert store.with_cipher(fresh.cipher("team-a")).read_blob(info.sha256) == pattern(5000)
    # re-wrap from KMS to a local key file ...
    local = LocalKeyProvider(tmp_path / "kek")
    assert fresh.rewrap(local) == 1
    assert [k.kek_id for k in keys.list()] == [local.kek_id]
    on_local = TenantKeys(metadata, local)
    assert store.with_cipher(on_local.cipher("team-a")).read_blob(info.sha256) == pattern(5000)
    # ... and back to KMS: a process with only the KMS key reads the blob again
    assert (
        on_local.rewrap(AwsKmsKeyProvider(key_id, region=TEST_REGION, endpoint_url=s3_env.url)) == 1
    )
    assert [k.kek_id for k in keys.list()] == [f"aws-kms:{key_id}"]
    kms_only = TenantKeys(
        metadata, AwsKmsKeyProvider(key_id, region=TEST_REGION, endpoint_url=s3_env.url)
    )
    assert store.with_cipher(kms_only.cipher("team-a")).read_blob(info.sha256) == pattern(5000)


# -- streaming ------------------------------------------------------------------------------
def test_large_object_is_encrypted_and_decrypted_in_bounded_memory(
    keys: TenantKeys, tmp_path: Path
) -> None:
    size = 50 * 1024 * 1024
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        block = pattern(CHUNK_SIZE)
        for _ in range(size // CHUNK_SIZE):
            f.write(block)
    store = ArtifactStore(LocalByteStore(tmp_path / "blobs", durable=False), "team-a")
    store = store.with_cipher(keys.cipher("team-a"))
    keys.current("team-a")  # key creation is not what is measured
    tracemalloc.start()
    try:
        info = store.put_file(src)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        out = tmp_path / "out.bin"
        store.copy_blob_to(info.sha256, out)
        path = store.blob_path(info.sha256, cache_dir=tmp_path / "scratch")
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert put_peak < 20 * 1024 * 1024, put_peak
    assert get_peak < 20 * 1024 * 1024, get_peak
    assert out.stat().st_size == size and path.stat().st_size == size
    with store.backend.open(store.blob_key(info.sha256)) as f:
        head = f.read(CHUNK_SIZE)
    assert MARKER not in head


# -- end to end -----------------------------------------------------------------------------
PIPELINE = """
from argosy import step, pipeline

@step
def make() -> str:
    return "SECRET-OUTPUT-" * 1000

@step
def measure(text: str) -> int:
    print("measured")
    return len(text)

@pipeline
def secretive() -> int:
    return measure(text=make())
"""


def _scan(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_local_run_with_encryption_stores_no_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    ws = Workspace(root, tmp_path / "state")
    env = {"ARGOSY_ENCRYPTION": "true"}
    path = ws.write(textwrap.dedent(PIPELINE))
    res = ws.argosy("run", f"{path}:secretive", "--output", "json", env=env)
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["status"] == "succeeded" and outputs(doc) == {"output": 14000}
    blobs = ws.home / "blobs"
    assert _scan(blobs, b"SECRET-OUTPUT-") == []
    assert _scan(blobs, b"measured") == []  # logs are encrypted too
    objects = [p for p in blobs.rglob("*") if p.is_file() and ".tmp" not in p.parts]
    assert objects and all(p.read_bytes().startswith(MAGIC) for p in objects)
    assert not list((ws.home / "attempts").glob("*"))  # scratch (plaintext) removed
    key_file = ws.home / "keys" / "kek"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # the CLI reads the encrypted logs back
    logs = ws.argosy("logs", doc["id"], "measure", env=env)
    assert logs.code == 0 and "measured" in logs.stdout, logs.stderr
    # keys: list, rotate, then a new run and the old outputs still read; then re-wrap
    listed = ws.argosy("admin", "keys", "list", "--output", "json", env=env).json()
    assert [k["state"] for k in listed["keys"]] == ["active"]
    rotated = ws.argosy(
        "admin", "keys", "rotate", "--tenant", "default", "--output", "json", env=env
    )
    assert rotated.code == 0, rotated.stderr
    again = ws.argosy("run", f"{path}:secretive", "--no-cache", "--output", "json", env=env)
    assert again.code == 0 and outputs(again.json()) == {"output": 14000}, again.stderr
    rewrap = ws.argosy("admin", "keys", "rewrap", "--remove-old", "--output", "json", env=env)
    assert rewrap.code == 0, rewrap.stderr
    result: dict[str, Any] = rewrap.json()
    assert result["rewrapped"] == 2 and len(result["removed_keks"]) == 1
    assert len(json.loads(key_file.read_text())["keys"]) == 1
    logs = ws.argosy("logs", doc["id"], "measure", env=env)
    assert logs.code == 0 and "measured" in logs.stdout, logs.stderr
    assert _scan(blobs, b"SECRET-OUTPUT-") == []


def test_backup_keeps_encrypted_artifacts_encrypted_and_restore_verifies_them(
    tmp_path: Path,
) -> None:
    """A backup with --blobs copies ciphertext (no plaintext in the archive) and checks each
    blob through its plaintext hash; a restore into a new store with the same KEK verifies
    (mode hash) and the artifacts read back there."""
    root = tmp_path / "project"
    root.mkdir()
    ws = Workspace(root, tmp_path / "state")
    env = {"ARGOSY_ENCRYPTION": "true"}
    path = ws.write(textwrap.dedent(PIPELINE))
    res = ws.argosy("run", f"{path}:secretive", "--output", "json", env=env)
    assert res.code == 0, res.stderr
    run_id = res.json()["id"]
    backup = tmp_path / "nightly"
    res = ws.argosy("admin", "backup", str(backup), "--blobs", "-o", "json", env=env)
    assert res.code == 0, res.stderr
    summary = res.json()
    assert summary["problems"] == [] and summary["blobs_copied"] >= 3
    assert _scan(backup, b"SECRET-OUTPUT-") == []  # the backup holds ciphertext only

    kek = {"ARGOSY_KEY_FILE": str(ws.home / "keys" / "kek")}  # the deployment's KEK travels
    restored = {**env, **kek, "ARGOSY_HOME": str(tmp_path / "restored")}
    res = ws.argosy("admin", "restore", str(backup), "-o", "json", env=restored)
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["ok"] and doc["problems"] == [] and doc["verify"] == "hash"
    shown = ws.argosy("runs", "show", run_id, "-o", "json", env=restored)
    assert shown.code == 0 and outputs(shown.json()) == {"output": 14000}, shown.stderr

    # a flipped byte in a stored blob is found by the next backup's check (through decryption)
    victim = next(p for p in (tmp_path / "restored" / "blobs").rglob("*") if p.is_file())
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01
    victim.write_bytes(bytes(data))
    res = ws.argosy("admin", "backup", str(tmp_path / "second"), "--blobs", "-o", "json",
                    env=restored)  # fmt: skip
    problems = res.json()["problems"]
    assert [p["problem"] for p in problems] == ["corrupt"], res.stdout
