"""Hardening: unsafe names and paths refused, zip-slip and tar-slip refused (crafted archives),
pickled artifacts loaded only in their tenant, request size (413) and rate (429) limits on a
real server."""

from __future__ import annotations

import hashlib
import io
import pickle
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from argosy.errors import IntegrityError, SerializationError
from argosy.runtime.formats import read_value
from argosy.safe_paths import (
    UnsafeNameError,
    check_name,
    check_relative_path,
    extract_tar,
    extract_zip,
)
from argosy.server.limits import RateLimiter
from argosy.spec.code_package import extract_package
from argosy.stores.artifacts.blobs import open_artifact_store
from tests.server_fixture import ServerProcess, start_server

BAD = [
    "../etc/passwd", "a/../../b", "/etc/passwd", "C:\\x", "a\\b", "a\x00b", "a\nb", "a\x7fb",
    "%2e%2e", "%2E%2e/x", "a%2fb", "%252e%252e", "..", ".", "", "a//b", "x" * 300,
]  # fmt: skip


@pytest.mark.parametrize("value", BAD)
def test_unsafe_paths_are_refused_with_one_line(value: str) -> None:
    with pytest.raises(UnsafeNameError) as info:
        check_relative_path(value, "node path")
    assert "\n" not in str(info.value) and str(info.value).startswith("invalid node path")


@pytest.mark.parametrize("value", ["model", "train-2", "fold[3]", "report.v1.json", "100%.txt"])
def test_safe_names_pass(value: str) -> None:
    assert check_name(value) == value
    assert check_relative_path(f"prep/{value}") == f"prep/{value}"


def test_a_name_is_one_segment_and_record_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UnsafeNameError, match="contains '/'"):
        check_name("a/b", "output name")
    store = open_artifact_store(str(tmp_path / "blobs"), "team-a")
    with pytest.raises(UnsafeNameError):
        store.put_record("runs/../../team-b/runs/x.json", {"a": 1})
    store.put_record("runs/r1/fold[3]/attempt-1.json", {"a": 1})


# -- archives ----------------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo("link.py")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, symlink)
    return path


@pytest.mark.parametrize(
    ("members", "symlink"),
    [({"ok.py": b"", "../evil.py": b"x"}, None), ({"/abs.py": b"x"}, None),
     ({"a/../../evil.py": b"x"}, None), ({"ok.py": b""}, "/etc/passwd"),
     ({"..\\evil.py": b"x"}, None)],
)  # fmt: skip
def test_code_packages_refuse_zip_slip(
    tmp_path: Path, members: dict[str, bytes], symlink: str | None
) -> None:
    archive = _zip(tmp_path / "pkg.zip", members, symlink=symlink)
    target = tmp_path / "cache" / "code" / "abc"
    with pytest.raises(IntegrityError, match="code package"):
        extract_package(archive, target)
    assert not target.exists() and not (tmp_path / "cache" / "evil.py").exists()
    assert not (tmp_path / "evil.py").exists()
    assert not list((tmp_path / "cache" / "code").glob("abc.tmp*"))


def test_a_clean_code_package_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "pkg.zip", {"pkg/__init__.py": b"", "pkg/steps.py": b"X = 1\n"})
    target = extract_package(archive, tmp_path / "code" / "abc")
    assert (target / "pkg" / "steps.py").read_text() == "X = 1\n"
    out = tmp_path / "z"
    extract_zip(archive, out)
    assert (out / "pkg" / "__init__.py").exists()


def _tar(path: Path, build: str) -> Path:
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo("data/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo(build)
        if build == "symlink":
            bad = tarfile.TarInfo("data/link")
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc"
        elif build == "relative-symlink":
            bad = tarfile.TarInfo("data/link")
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../outside"
        elif build == "hardlink":
            bad = tarfile.TarInfo("data/hard")
            bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif build == "device":
            bad = tarfile.TarInfo("data/dev")
            bad.type, bad.devmajor, bad.devminor = tarfile.CHRTYPE, 1, 3
        elif build == "fifo":
            bad = tarfile.TarInfo("data/fifo")
            bad.type = tarfile.FIFOTYPE
        else:
            bad.size = 4
        tar.addfile(bad, io.BytesIO(b"evil") if bad.isfile() else None)
    return path


@pytest.mark.parametrize(
    "build",
    ["../outside.txt", "absolute", "data/../../x", "symlink", "relative-symlink", "hardlink",
     "device", "fifo"],
)  # fmt: skip
def test_directory_artifacts_refuse_tar_slip(tmp_path: Path, build: str) -> None:
    if build == "absolute":  # named here: a test id must be the same in every worker
        build = "/tmp/argosy-abs-" + uuid.uuid4().hex
    archive = _tar(tmp_path / "dir.tar", build)
    scratch = tmp_path / "scratch" / "inputs" / "data"
    with pytest.raises(UnsafeNameError):
        read_value(archive, "dir", "path", scratch=scratch)
    assert not (tmp_path / "scratch" / "outside.txt").exists()
    assert not (tmp_path / "scratch" / "inputs" / "outside.txt").exists()
    assert not list(scratch.rglob("*")), "nothing is written before every member is checked"
    if build.startswith("/tmp/"):
        assert not Path(build).exists()


def test_a_clean_directory_artifact_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "dir.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("sub/a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    out = read_value(archive, "dir", "path", scratch=tmp_path / "in")
    assert (out / "sub" / "a.txt").read_text() == "a"
    extract_tar(archive, tmp_path / "again")
    assert (tmp_path / "again" / "sub" / "a.txt").exists()


def test_file_artifacts_refuse_traversing_file_names(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    for name in ("../../evil.sh", "/etc/cron.d/x", "a/b.txt"):
        with pytest.raises(UnsafeNameError):
            read_value(blob, "file", "path", scratch=tmp_path / "s", filename=name)
    got = read_value(blob, "file", "path", scratch=tmp_path / "s", filename="data.csv")
    assert got == tmp_path / "s" / "data.csv" and got.read_bytes() == b"x"


def test_pickled_artifacts_load_only_in_the_tenant_that_wrote_them(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    loaded = read_value(path, "pickle", "dict", scratch=tmp_path, tenant="a", artifact_tenant="a")
    assert loaded == {"weights": [1, 2]}
    for owner in ("b", None):
        with pytest.raises(SerializationError, match="only in the tenant that wrote them"):
            read_value(path, "pickle", "dict", scratch=tmp_path, tenant="a", artifact_tenant=owner)
    with pytest.raises(SerializationError):
        read_value(path, "joblib", "dict", scratch=tmp_path, tenant="a", artifact_tenant="b")


# -- request limits ----------------------------------------------------------------------------
def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second, bursts of 60
    assert all(limiter.take("k") == 0 for _ in range(60))
    wait = limiter.take("k")
    assert 0 < wait <= 1.0
    assert limiter.take("other") == 0
    now[0] += 2.0
    assert limiter.take("k") == 0 and limiter.take("k") == 0 and limiter.take("k") > 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("hardening-server")
    env = {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_MAX_JSON_BYTES": "2000",
           "ARGOSY_MAX_REQUEST_BYTES": "50000", "ARGOSY_RATE_LIMIT_PER_MINUTE": "0"}  # fmt: skip
    started = start_server(home, env)
    yield started
    started.stop(timeout=20)


@pytest.fixture(scope="module")
def rate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("rate-server")
    started = start_server(
        home, {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_RATE_LIMIT_PER_MINUTE": "5"}
    )
    yield started
    started.stop(timeout=20)


def _client(server: ServerProcess) -> httpx.Client:
    # a credential the insecure server ignores (every request is its one local principal)
    return httpx.Client(
        base_url=server.api, headers={"Authorization": f"Bearer {uuid.uuid4().hex}"}, timeout=30
    )


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, object] = response.json()
    assert doc["status"] == status
    return doc


def test_request_bodies_over_the_limits_are_413(server: ServerProcess) -> None:
    with _client(server) as http:
        big_json = http.post("/runs", json={"pipeline": "p", "parameters": {"x": "y" * 3000}})
        assert _problem(big_json, 413)["code"] == "request_too_large"
        blob = b"z" * 60_000
        sha = hashlib.sha256(blob).hexdigest()
        _problem(http.put(f"/blobs/{sha}", content=blob), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(8):
            yield b"z" * 10_000

    with _client(server) as http:
        streamed = http.put("/blobs/" + "0" * 64, content=chunks())
        _problem(streamed, 413)
        small = b"small blob"
        sha = hashlib.sha256(small).hexdigest()
        assert http.put(f"/blobs/{sha}", content=small).status_code in (200, 201)


def test_rate_limit_answers_429_with_retry_after(rate_server: ServerProcess) -> None:
    server = rate_server
    with _client(server) as http:
        codes = [http.get("/runs").status_code for _ in range(5)]
        assert codes == [200] * 5
        limited = http.get("/runs")
        assert _problem(limited, 429)["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
    with _client(server) as other:
        # another credential string is not another principal: the bucket is the principal's
        # (tests/test_rate_limits.py shows principals apart, with a real identity provider)
        assert other.get("/runs").status_code == 429
    assert all(httpx.get(f"{server.url}/healthz").status_code == 200 for _ in range(8))
