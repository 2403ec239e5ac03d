"""The artifact-backend contract, run over every backend (local folder, S3), plus S3 specifics.

The contract tests take a ``backend`` fixture parametrized over ``local`` and ``s3``; the S3
backend talks to a moto server on loopback (``tests/s3_fixture.py``) through the same boto3
code used for AWS. The S3 backend here uses a 5 MiB multipart threshold, so a 12 MiB file
exercises the multipart path (parts in parallel, per-part checksums, abort on failure).

S3-only tests cover what has no local counterpart: encryption and storage-class headers on
the objects, HTTPS enforcement, a missing bucket, credentials and connection errors, archived
objects, resumed and ranged reads. The slow tests move a 1 GiB artifact through the store in
a child process and bound its peak RSS, and run a real pipeline with its artifacts in S3.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from argosy.errors import IntegrityError, StoreError
from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import ArtifactStore, BlobInfo, open_artifact_store
from argosy.stores.artifacts.local import LocalByteStore
from argosy.stores.artifacts.s3 import MiB, S3ByteStore, S3Options
from tests.conftest import Workspace, outputs
from tests.s3_fixture import S3Endpoint, free_port

SMALL_PARTS = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB, "max_concurrency": 3}
BIG = 12 * MiB + 123  # three parts of a multipart upload (5 + 5 + 2 MiB)


@dataclass
class Backend:
    """A byte store under test, with what the tests need to reach behind its back."""

    name: str
    store: ByteStore
    corrupt: Callable[[str, bytes], None]  # overwrite an object's bytes, bypassing the store
    fail_writes: Callable[[], contextlib.AbstractContextManager[None]]  # writes fail midway
    leftovers: Callable[[], list[str]]  # partial uploads / temp files a failed write left


def _local_backend(root: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    store = LocalByteStore(root, durable=False)

    def corrupt(key: str, data: bytes) -> None:
        path = store.local_path(key)
        assert path is not None
        path.chmod(0o644)
        path.write_bytes(data)

    @contextlib.contextmanager
    def fail_writes() -> Iterator[None]:
        def broken(self: LocalByteStore, tmp: Path, dest: Path) -> None:
            raise OSError("injected: disk full")

        with monkeypatch.context() as m:
            m.setattr(LocalByteStore, "_commit", broken)
            yield

    def leftovers() -> list[str]:
        return [p.name for p in store.tmp.iterdir()] if store.tmp.exists() else []

    return Backend("local", store, corrupt, fail_writes, leftovers)


def _s3_backend(
    endpoint: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch, **extra: Any
) -> Backend:
    opts = S3Options.from_mapping(endpoint.options(**SMALL_PARTS, **extra))
    store = S3ByteStore(bucket, "argosy", opts)
    raw = endpoint.client()

    def corrupt(key: str, data: bytes) -> None:
        raw.put_object(Bucket=bucket, Key=f"argosy/{key}", Body=data)

    @contextlib.contextmanager
    def fail_writes() -> Iterator[None]:
        calls = {"parts": 0}
        real_part = store.client.upload_part

        def part(**kw: Any) -> Any:
            calls["parts"] += 1
            if calls["parts"] >= 2:  # the first part lands, then the connection "drops"
                raise ConnectionResetError("injected: connection reset")
            return real_part(**kw)

        def put(**kw: Any) -> Any:
            raise ConnectionResetError("injected: connection reset")

        with monkeypatch.context() as m:
            m.setattr(store.client, "upload_part", part)
            m.setattr(store.client, "put_object", put)
            yield

    def leftovers() -> list[str]:
        uploads = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [u["Key"] for u in uploads]

    return Backend("s3", store, corrupt, fail_writes, leftovers)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    if request.param == "local":
        return _local_backend(tmp_path / "store", monkeypatch)
    endpoint: S3Endpoint = request.getfixturevalue("s3_env")
    bucket: str = request.getfixturevalue("s3_bucket")
    return _s3_backend(endpoint, bucket, monkeypatch)


@pytest.fixture
def artifacts(backend: Backend) -> ArtifactStore:
    return ArtifactStore(backend.store, "team-a")


def _file(path: Path, size: int, seed: int = 0) -> Path:
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with path.open("wb") as f:
        left = size
        while left:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob_key(tenant: str, sha: str) -> str:
    return f"tenants/{tenant}/blobs/sha256/{sha[:2]}/{sha}"


# -- the byte-store contract ---------------------------------------------------------------------


def test_put_bytes_open_exists_list(backend: Backend) -> None:
    s = backend.store
    assert not s.exists("a/b/one.json")
    s.put_bytes("a/b/one.json", b'{"x": 1}')
    s.put_bytes("a/c/two.json", b"2")
    s.put_bytes("other/three", b"")
    assert s.exists("a/b/one.json")
    with s.open("a/b/one.json") as f:
        assert f.read() == b'{"x": 1}'
    with s.open("other/three") as f:
        assert f.read() == b""
    assert sorted(s.list("a/")) == ["a/b/one.json", "a/c/two.json"]
    assert sorted(s.list("")) == ["a/b/one.json", "a/c/two.json", "other/three"]
    assert list(s.list("nothing/")) == []
    s.put_bytes("a/b/one.json", b"replaced")  # a record can be rewritten
    with s.open("a/b/one.json") as f:
        assert f.read() == b"replaced"


@pytest.mark.parametrize("size", [1000, BIG], ids=["small", "multipart"])
@pytest.mark.parametrize("move", [False, True], ids=["copy", "move"])
def test_put_file(backend: Backend, tmp_path: Path, size: int, move: bool) -> None:
    src = _file(tmp_path / "src.bin", size)
    data = src.read_bytes()
    backend.store.put_file("files/x.bin", src, move=move)
    assert src.exists() is not move
    with backend.store.open("files/x.bin") as f:
        assert f.read() == data


def test_missing_key_is_file_not_found(backend: Backend) -> None:
    with pytest.raises(FileNotFoundError):
        backend.store.open("no/such/key")
    with pytest.raises(FileNotFoundError):
        backend.store.rename("no/such/key", "elsewhere")
    assert not backend.store.exists("no/such/key")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(StoreError, match="invalid artifact key"):
        backend.store.put_bytes(key, b"x")


def test_rename(backend: Backend) -> None:
    backend.store.put_bytes("from/key", b"payload")
    backend.store.rename("from/key", "to/elsewhere/key")
    assert not backend.store.exists("from/key")
    with backend.store.open("to/elsewhere/key") as f:
        assert f.read() == b"payload"


@pytest.mark.parametrize("size", [1000, BIG], ids=["small", "multipart"])
def test_failed_write_leaves_nothing_visible(backend: Backend, tmp_path: Path, size: int) -> None:
    src = _file(tmp_path / "src.bin", size)
    with backend.fail_writes(), pytest.raises((OSError, StoreError)):
        backend.store.put_file("files/partial.bin", src)
    assert not backend.store.exists("files/partial.bin")
    assert list(backend.store.list("files/")) == []
    assert backend.leftovers() == []
    assert src.exists()  # a failed move keeps its source
    with backend.fail_writes(), pytest.raises((OSError, StoreError)):
        backend.store.put_file("files/partial.bin", src, move=True)
    assert src.exists()


def test_streamed_read_seek_and_lines(backend: Backend, tmp_path: Path) -> None:
    lines = b"".join(f"line {i}\n".encode() for i in range(20000))
    backend.store.put_bytes("logs/log.jsonl", lines)
    with backend.store.open("logs/log.jsonl") as f:
        assert f.readline() == b"line 0\n"
        assert f.read(7) == b"line 1\n"
        f.seek(len(lines) - 11)
        assert f.read() == b"line 19999\n"
        f.seek(7)
        assert list(f)[:2] == [b"line 1\n", b"line 2\n"]


# -- ArtifactStore over each backend ------------------------------------------------------------


def test_blobs_roundtrip_and_dedup(
    artifacts: ArtifactStore, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _file(tmp_path / "model.bin", BIG, seed=1)
    data = src.read_bytes()
    info = artifacts.put_file(src)
    assert info == BlobInfo(_sha(data), len(data))
    assert artifacts.has_blob(info.sha256)
    assert backend.store.exists(_blob_key("team-a", info.sha256))

    writes: list[str] = []
    real_put = type(backend.store).put_file
    monkeypatch.setattr(
        type(backend.store),
        "put_file",
        lambda self, key, source, move=False: writes.append(key) or real_put(self, key, source),
    )
    again = _file(tmp_path / "copy.bin", BIG, seed=1)
    assert artifacts.put_file(again, move=True) == info
    assert writes == []  # deduplicated: no second upload
    assert not again.exists()  # ... and a moved duplicate is consumed

    small = artifacts.put_bytes(b'{"k": 1}')
    assert artifacts.put_bytes(b'{"k": 1}') == small
    assert artifacts.read_blob(small.sha256) == b'{"k": 1}'

    cache = tmp_path / "cache"
    path = artifacts.blob_path(info.sha256, cache_dir=cache)
    assert path.read_bytes() == data
    if backend.name == "s3":
        assert path == cache / info.sha256  # downloaded (verified) into the cache
    dest = tmp_path / "out" / "model.bin"
    dest.parent.mkdir()
    artifacts.copy_blob_to(info.sha256, dest)
    assert dest.read_bytes() == data


def test_records(artifacts: ArtifactStore, tmp_path: Path) -> None:
    artifacts.put_record("runs/r1/train/1/result.json", {"status": "succeeded"})
    assert artifacts.get_record("runs/r1/train/1/result.json") == {"status": "succeeded"}
    assert artifacts.get_record("runs/r1/train/2/result.json") is None
    log = tmp_path / "log.jsonl"
    log.write_text('{"line": 1}\n')
    artifacts.put_record_file("runs/r1/train/1/log.jsonl", log)
    stream = artifacts.open_record("runs/r1/train/1/log.jsonl")
    assert stream is not None
    with stream:
        assert stream.read() == b'{"line": 1}\n'
    assert artifacts.open_record("runs/r1/nothing") is None


@pytest.mark.parametrize("read", ["read_blob", "blob_path", "copy_blob_to"])
def test_corrupted_blob_is_detected_and_quarantined(
    artifacts: ArtifactStore, backend: Backend, tmp_path: Path, read: str
) -> None:
    info = artifacts.put_bytes(b"the original bytes")
    backend.corrupt(_blob_key("team-a", info.sha256), b"the tampered bytes")
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError) as caught:
        if read == "read_blob":
            artifacts.read_blob(info.sha256)
        elif read == "blob_path":
            artifacts.blob_path(info.sha256, cache_dir=cache)
        else:
            artifacts.copy_blob_to(info.sha256, tmp_path / "out.bin")
    message = str(caught.value)
    assert f"sha256:{info.sha256}" in message and "'team-a'" in message
    assert "corrupted" in message and "quarantine" in message and "\n" not in message
    assert not (cache / info.sha256).exists() and not (tmp_path / "out.bin").exists()
    assert not artifacts.has_blob(info.sha256)  # moved aside, so the producer stores it again
    quarantined = list(backend.store.list("tenants/team-a/quarantine/"))
    assert [k.rsplit("/", 1)[1].split(".")[0] for k in quarantined] == [info.sha256]
    with pytest.raises(IntegrityError, match="quarantine"):
        artifacts.read_blob(info.sha256)  # later reads still say what happened
    assert artifacts.put_bytes(b"the original bytes") == info  # re-storing repairs it
    assert artifacts.read_blob(info.sha256) == b"the original bytes"


def test_missing_blob_is_a_clear_error(artifacts: ArtifactStore, tmp_path: Path) -> None:
    sha = _sha(b"never stored")
    for call in (
        lambda: artifacts.read_blob(sha),
        lambda: artifacts.blob_path(sha, cache_dir=tmp_path / "cache"),
        lambda: artifacts.copy_blob_to(sha, tmp_path / "x"),
    ):
        with pytest.raises(StoreError, match=f"blob sha256:{sha} is missing from tenant 'team-a'"):
            call()


def test_tenant_prefix_isolates_blobs(backend: Backend) -> None:
    a = ArtifactStore(backend.store, "team-a")
    b = ArtifactStore(backend.store, "team-b")
    info = a.put_bytes(b"only for team a")
    a.put_record("runs/r/n/1/result.json", {"ok": True})
    assert all(k.startswith("tenants/team-a/") for k in backend.store.list(""))
    assert not b.has_blob(info.sha256)
    assert b.get_record("runs/r/n/1/result.json") is None
    with pytest.raises(StoreError, match="missing from tenant 'team-b'"):
        b.read_blob(info.sha256)
    with pytest.raises(StoreError, match="invalid tenant"):
        ArtifactStore(backend.store, "../team-a")


# -- S3 specifics --------------------------------------------------------------------------------


def _head(endpoint: S3Endpoint, bucket: str, key: str) -> dict[str, Any]:
    head: dict[str, Any] = endpoint.client().head_object(
        Bucket=bucket, Key=key, ChecksumMode="ENABLED"
    )
    return head


@pytest.mark.parametrize("size", [1000, BIG], ids=["small", "multipart"])
def test_s3_sse_s3_and_storage_class_on_every_object(
    s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path, size: int
) -> None:
    opts = s3_env.options(sse="AES256", storage_class="STANDARD_IA", **SMALL_PARTS)
    store = open_artifact_store(f"s3://{s3_bucket}/pfx", "team-a", opts)
    info = store.put_file(_file(tmp_path / "f.bin", size))
    store.put_record("runs/r/n/1/result.json", {"ok": True})
    key = f"pfx/{_blob_key('team-a', info.sha256)}"
    head = _head(s3_env, s3_bucket, key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["Metadata"]["sha256"] == info.sha256
    assert head["ChecksumSHA256"]  # per-object (or composite per-part) sha256 checksum
    record = _head(s3_env, s3_bucket, "pfx/tenants/team-a/runs/r/n/1/result.json")
    assert record["ServerSideEncryption"] == "AES256"
    store.backend.rename(key[len("pfx/") :], "tenants/team-a/quarantine/moved")
    moved = _head(s3_env, s3_bucket, "pfx/tenants/team-a/quarantine/moved")
    assert moved["ServerSideEncryption"] == "AES256" and moved["StorageClass"] == "STANDARD_IA"


def test_s3_sse_kms_with_key_id(s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path) -> None:
    key_id = "arn:aws:kms:us-east-1:123456789012:key/argosy-test"
    opts = s3_env.options(sse="aws:kms", kms_key_id=key_id, **SMALL_PARTS)
    store = open_artifact_store(f"s3://{s3_bucket}/pfx", "team-a", opts)
    for info in (store.put_bytes(b"small"), store.put_file(_file(tmp_path / "f", BIG))):
        head = _head(s3_env, s3_bucket, f"pfx/{_blob_key('team-a', info.sha256)}")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == key_id


@pytest.mark.parametrize("size", [1000, BIG], ids=["small", "multipart"])
def test_s3_content_key_is_verified_before_the_object_exists(
    s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path, size: int
) -> None:
    store = ArtifactStore(
        S3ByteStore.from_url(f"s3://{s3_bucket}", s3_env.options(**SMALL_PARTS)), "t"
    )
    src = _file(tmp_path / "f.bin", size)
    wrong = BlobInfo(_sha(b"something else"), size)  # e.g. the file changed after hashing
    with pytest.raises(IntegrityError, match=f"not the sha256:{wrong.sha256} the key names"):
        store.put_file(src, wrong)
    assert not store.has_blob(wrong.sha256)
    client = s3_env.client()
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_s3_http_endpoint_needs_insecure(s3_env: S3Endpoint, s3_bucket: str) -> None:
    opts = s3_env.options(insecure=False)
    with pytest.raises(StoreError) as caught:
        open_artifact_store(f"s3://{s3_bucket}/p", "team-a", opts)
    assert "plain http" in str(caught.value) and "ARGOSY_S3_INSECURE=true" in str(caught.value)
    with pytest.raises(StoreError, match="https://HOST"):
        open_artifact_store(f"s3://{s3_bucket}/p", "t", {"endpoint_url": "127.0.0.1:9000"})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"kms_key_id": "k"}, "ARGOSY_S3_SSE=aws:kms"),
        ({"sse": "aws:kms:dsse"}, "unknown S3 server-side encryption"),
        ({"colour": "blue"}, "unknown S3 artifact store option"),
        ({"part_size": 1024}, "at least"),
    ],
)
def test_s3_bad_options(s3_env: S3Endpoint, options: dict[str, Any], match: str) -> None:
    with pytest.raises(StoreError, match=match):
        open_artifact_store("s3://some-bucket/p", "t", {**s3_env.options(), **options})


@pytest.mark.parametrize("url", ["s3://Bad_Bucket/x", "s3://ab", "s3:///prefix", "s3://b..c/x"])
def test_s3_bad_urls(url: str) -> None:
    with pytest.raises(StoreError, match="invalid S3 bucket name"):
        open_artifact_store(url, "t", {})


def test_s3_missing_bucket_names_it_and_the_fix(s3_env: S3Endpoint, tmp_path: Path) -> None:
    store = open_artifact_store("s3://no-such-bucket-here/p", "team-a", s3_env.options())
    src = _file(tmp_path / "f", 10)
    calls: list[Callable[[], object]] = [
        lambda: store.put_file(src),
        lambda: store.put_bytes(b"x"),
        lambda: store.has_blob(_sha(b"x")),
        lambda: store.get_record("runs/x/result.json"),
        lambda: list(store.backend.list("")),
    ]
    for call in calls:
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert "'no-such-bucket-here' does not exist" in message, message
        assert "aws s3 mb s3://no-such-bucket-here" in message and "ARGOSY_ARTIFACT_URL" in message


def test_s3_no_credentials(
    s3_env: S3Endpoint, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_artifact_store(f"s3://{s3_bucket}/p", "team-a", s3_env.options())
    with pytest.raises(StoreError, match=r"no AWS credentials .* AWS_ACCESS_KEY_ID"):
        store.put_bytes(b"x")


def test_s3_unreachable_endpoint(s3_env: S3Endpoint) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    opts = s3_env.options(endpoint_url=dead, max_attempts=1, connect_timeout=1)
    store = open_artifact_store("s3://some-bucket/p", "team-a", opts)
    with pytest.raises(StoreError, match=r"cannot reach the S3 endpoint .* ARGOSY_S3_ENDPOINT_URL"):
        store.put_bytes(b"x")


def test_s3_archived_object_says_restore(s3_env: S3Endpoint, s3_bucket: str) -> None:
    store = open_artifact_store(
        f"s3://{s3_bucket}/p", "team-a", s3_env.options(storage_class="GLACIER")
    )
    info = store.put_bytes(b"cold data")
    with pytest.raises(StoreError, match=r"archived .*GLACIER.* restored"):
        store.read_blob(info.sha256)


def test_s3_bad_storage_class(s3_env: S3Endpoint, s3_bucket: str) -> None:
    store = open_artifact_store(f"s3://{s3_bucket}/p", "t", s3_env.options(storage_class="COLD"))
    with pytest.raises(StoreError, match=r"storage class 'COLD'.*ARGOSY_S3_STORAGE_CLASS"):
        store.put_bytes(b"x")


def test_s3_url_prefix_and_open_artifact_store(s3_env: S3Endpoint, s3_bucket: str) -> None:
    store = open_artifact_store(f"s3://{s3_bucket}/deep/prefix/", "team-a", s3_env.options())
    assert isinstance(store.backend, S3ByteStore)
    info = store.put_bytes(b"hello")
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"deep/prefix/{_blob_key('team-a', info.sha256)}"]
    assert list(store.backend.list("tenants/")) == [_blob_key("team-a", info.sha256)]
    bare = open_artifact_store(f"s3://{s3_bucket}", "team-a", s3_env.options())
    assert bare.put_bytes(b"top") and bare.has_blob(_sha(b"top"))


class _Flaky(io.RawIOBase):
    """A response body that breaks once after ``after`` bytes, as a dropped connection does."""

    def __init__(self, body: Any, after: int) -> None:
        super().__init__()
        self.body = body
        self.after = after

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import ResponseStreamingError

        if self.after <= 0:
            raise ResponseStreamingError(error="injected: connection reset")
        view = memoryview(buffer)[: self.after]
        n = int(self.body.readinto(view))
        self.after -= n
        return n


def test_s3_stream_resumes_after_a_dropped_connection(
    s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3ByteStore(s3_bucket, "p", S3Options.from_mapping(s3_env.options()))
    data = _file(tmp_path / "f", 3 * MiB + 7).read_bytes()
    store.put_bytes("obj", data)
    with store.open("obj") as f:
        raw: Any = f.raw  # type: ignore[attr-defined]
        raw._body = _Flaky(raw._body, after=MiB + 3)
        assert f.read() == data  # the rest came from a ranged GET at byte MiB + 3

    # The resumed read is pinned to the object's ETag: a replaced object fails the read.
    with (
        store.open("obj") as f,
        pytest.raises(StoreError, match="replaced while it was being read"),
    ):
        raw = f.raw  # type: ignore[attr-defined]
        raw._body = _Flaky(raw._body, after=MiB)
        store.put_bytes("obj", b"new content")
        f.read()


@pytest.mark.parametrize("size", [0, 1, 3 * MiB, 3 * MiB + 5])
def test_s3_parallel_ranged_reads(
    s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path, size: int
) -> None:
    opts = s3_env.options(download_concurrency=3, download_part_size=MiB)
    store = S3ByteStore(s3_bucket, "p", S3Options.from_mapping(opts))
    data = _file(tmp_path / "f", size).read_bytes()
    store.put_bytes("obj", data)
    with store.open("obj") as f:
        assert f.read() == data
    if size > 2 * MiB:
        with store.open("obj") as f:
            assert f.read(10) == data[:10]
            f.seek(2 * MiB - 5)
            assert f.read(10) == data[2 * MiB - 5 : 2 * MiB + 5]
            assert f.read() == data[2 * MiB + 5 :]
    with pytest.raises(FileNotFoundError):
        store.open("missing")


# -- slow: 1 GiB through the store in bounded memory; a real pipeline on S3 ----------------------

ROUNDTRIP = """
import json, sys, time
from pathlib import Path
from argosy.stores.artifacts.blobs import open_artifact_store, sha256_file

def peak_rss():  # VmHWM, not ru_maxrss: that one carries the parent's figure across exec
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

url, options, src, cache = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
store = open_artifact_store(url, "team-a", options)
store.put_bytes(b"warm up: imports and the connection pool")
rss_before = peak_rss()
t0 = time.perf_counter()
info = sha256_file(src)
t1 = time.perf_counter()
store.put_file(src, info)
t2 = time.perf_counter()
path = store.blob_path(info.sha256, cache_dir=cache)  # download + sha256 verification
t3 = time.perf_counter()
print(json.dumps({"sha256": info.sha256, "size": path.stat().st_size, "hash_s": t1 - t0,
                  "upload_s": t2 - t1, "download_s": t3 - t2,
                  "rss_before": rss_before, "peak_rss": peak_rss()}))
"""


@pytest.mark.slow
def test_s3_one_gib_artifact_streams_in_bounded_memory(
    s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    size = 1024 * MiB
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        block = os.urandom(MiB)
        for i in range(1024):
            f.write(i.to_bytes(8, "little") + block[8:])
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            ROUNDTRIP,
            f"s3://{s3_bucket}/big",
            json.dumps(s3_env.options()),
            str(src),
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    print(
        f"\n1 GiB via S3: upload {size / MiB / result['upload_s']:.0f} MiB/s, "
        f"download+verify {size / MiB / result['download_s']:.0f} MiB/s, "
        f"peak RSS {result['peak_rss'] / MiB:.0f} MiB "
        f"({result['rss_before'] / MiB:.0f} MiB before the transfers)"
    )
    assert result["size"] == size
    assert result["peak_rss"] < 300 * MiB, result
    head = _head(s3_env, s3_bucket, f"big/{_blob_key('team-a', result['sha256'])}")
    assert head["ContentLength"] == size


PIPELINE = """
from pathlib import Path

from argosy import pipeline, step


@step
def make_file() -> Path:
    out = Path("data.bin")
    out.write_bytes(bytes(range(256)) * 4096)
    return out


@step
def measure(data: Path) -> dict:
    raw = data.read_bytes()
    return {"size": len(raw), "first": raw[0], "last": raw[-1]}


@pipeline
def s3_pipe() -> dict:
    return measure(make_file())
"""


@pytest.mark.slow
def test_s3_pipeline_run_end_to_end(
    ws: Workspace, s3_env: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    path = ws.write(PIPELINE, "s3_pipe")
    env = {**s3_env.argosy_env(f"s3://{s3_bucket}/argosy"), "ARGOSY_S3_SSE": "AES256"}
    result = ws.argosy("run", f"{path}:s3_pipe", "-o", "json", env=env)
    assert result.code == 0, result.stdout + result.stderr
    run = result.json()
    assert outputs(run) == {"output": {"size": 256 * 4096, "first": 0, "last": 255}}
    client = s3_env.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any("/blobs/sha256/" in k for k in keys) and any(k.endswith("result.json") for k in keys)
    assert all(k.startswith("argosy/tenants/default/") for k in keys)
    for key in keys:  # every object the engine and the task processes wrote is encrypted
        assert client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    assert not (ws.home / "blobs").exists()  # nothing went to the local folder
    arts = ws.argosy("artifacts", "list", run["id"], "-o", "json", env=env)
    assert arts.code == 0, arts.stderr
    docs = arts.json()["artifacts"]
    made = next(d for d in docs if d["node_path"] == "make_file")
    out = tmp_path / "got"
    got = ws.argosy("artifacts", "get", made["id"], "--out", str(out), env=env)
    assert got.code == 0, got.stderr
    files = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else [out]
    assert [p.read_bytes() for p in files] == [bytes(range(256)) * 4096]
