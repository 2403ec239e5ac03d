"""The typed client and the remote CLI (``--server``).

Two kinds of tests: the client's protocol behaviour (bearer token, retries, error mapping,
resumable verified downloads, SSE reconnects, pages) against an in-process
``httpx.MockTransport``, and the CLI end to end against a real ``argosy.server.serve``
process (SQLite and a local folder in a temporary ARGOSY_HOME).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from argosy.client.client import Client
from argosy.errors import (
    ArgosyError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    ServerError,
    UsageError,
    VersionConflictError,
)
from tests.conftest import BACKENDS, Workspace

REPO = Path(__file__).resolve().parents[1]
NOW = "2026-01-01T00:00:00Z"


# -- the client against a mock transport -------------------------------------------------------
def _problem(status: int, detail: str, code: str | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        json={"title": "x", "status": status, "detail": detail, "code": code},
        headers={"content-type": "application/problem+json"},
    )


def _run_doc(run_id: str = "r1", status: str = "pending") -> dict[str, Any]:
    return {
        "id": run_id, "pipeline": "p", "pipeline_version_id": "v1", "digest": "sha256:" + "0" * 64,
        "status": status, "parameters": {}, "created_at": NOW, "created_by": "me",
    }  # fmt: skip


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr("argosy.client.client._sleep", slept.append)
    return slept


def _client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> Client:
    return Client("http://argosy.test", transport=httpx.MockTransport(handler), **kw)


def test_token_is_sent_as_a_bearer_header() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=_run_doc())

    with _client(handler, token="s3cret") as c:
        c.get_run("r1")
    with _client(handler) as c:
        c.get_run("r1")
    assert seen == ["Bearer s3cret", None]


def test_503_is_retried_after_retry_after_and_run_creation_keeps_its_key(
    no_sleep: list[float],
) -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/tenants/team-a/runs"
        keys.append(request.headers["idempotency-key"])
        if len(keys) < 3:
            return httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "db down"})
        return httpx.Response(201, json=_run_doc())

    with _client(handler, tenant="team-a") as c:
        run = c.create_run("p", parameters={"rows": 3})
    assert run.id == "r1"
    assert len(keys) == 3 and len(set(keys)) == 1  # one key: the server dedupes the retries
    assert no_sleep == [2.0, 2.0]


def test_non_idempotent_posts_are_not_retried_on_503(no_sleep: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _problem(503, "the database is unavailable")

    with _client(handler) as c, pytest.raises(ServerError, match="unavailable"):
        c.retry_run("r1")
    assert calls == 1


def test_dropped_connections_are_retried_for_reads(no_sleep: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, json=_run_doc())

    with _client(handler) as c:
        assert c.get_run("r1").id == "r1"
    assert calls == 2 and len(no_sleep) == 1


@pytest.mark.parametrize(
    ("status", "code", "error", "words"),
    [
        (404, None, NotFoundError, "no run r9"),
        (409, "version_tag_conflict", VersionConflictError, "no run r9"),
        (409, "conflict", ConflictError, "no run r9"),
        (422, None, UsageError, "no run r9"),
        (401, None, ServerError, "ARGOSY_TOKEN"),
        (403, None, ServerError, "ARGOSY_TOKEN"),
        (500, None, ArgosyError, "500: no run r9"),
    ],
)
def test_problems_become_argosy_errors(
    status: int, code: str | None, error: type[ArgosyError], words: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _problem(status, "no run r9", code)

    with _client(handler) as c, pytest.raises(error, match=words) as info:
        c.get_run("r9")
    assert type(info.value) is error
    assert info.value.exit_code == {401: 3, 403: 3, 500: 1}.get(status, 2)


def test_an_unreachable_server_is_a_server_error(no_sleep: list[float]) -> None:
    with Client(f"http://127.0.0.1:{_free_port()}") as c, pytest.raises(ServerError) as info:
        c.get_run("r1")
    assert "cannot reach the Argosy server" in str(info.value)
    assert "ARGOSY_SERVER" in str(info.value) and info.value.exit_code == 3
    assert len(no_sleep) == c.retries


def test_runs_are_listed_across_pages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        if cursor is None:
            return httpx.Response(200, json={"items": [_run_doc("a"), _run_doc("b")],
                                             "next_cursor": "c2"})  # fmt: skip
        assert cursor == "c2"
        return httpx.Response(200, json={"items": [_run_doc("c")], "next_cursor": None})

    with _client(handler) as c:
        assert [r.id for r in c.list_runs()] == ["a", "b", "c"]
        assert [r.id for r in c.list_runs(limit=1)] == ["a"]


def test_push_uploads_only_missing_blobs(ws: Workspace) -> None:
    from argosy.spec.compile import CompiledPipeline, compile_pipeline
    from argosy.spec.loader import load_pipeline

    stored = {hashlib.sha256(b"old").hexdigest()}
    puts: list[str] = []
    posted: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/blobs/" in path:
            sha = path.rsplit("/", 1)[1]
            if request.method == "HEAD":
                return httpx.Response(200 if sha in stored else 404)
            assert hashlib.sha256(request.content).hexdigest() == sha
            puts.append(sha)
            return httpx.Response(201, json={"sha256": sha, "size": len(request.content)})
        posted.append(json.loads(request.content))
        version = {"id": "v1", "pipeline": "p", "digest": "sha256:1", "tags": ["v1"],
                   "created_at": NOW, "created_by": "me"}  # fmt: skip
        return httpx.Response(201, json={"version": version, "created": True, "tag_added": True})

    path = ws.write(PIPE.format(name="tiny", offset=0))
    spec = compile_pipeline(load_pipeline(str(path)), cache_dir=ws.home / "cache").spec
    blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in (b"old", b"new")}
    with _client(handler) as c:
        pushed = c.push_pipeline(CompiledPipeline(spec, blobs), "v1")
    assert pushed.created and puts == [hashlib.sha256(b"new").hexdigest()]
    assert posted[0]["version"] == "v1" and posted[0]["spec"]["name"] == spec.name


@dataclass
class ContentServer:
    """Serves one artifact's bytes with Range support; can drop the stream once."""

    data: bytes
    honour_range: bool = True
    drop_after: int | None = None
    ranges: list[str | None] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/content"):
            return httpx.Response(200, json=self.artifact())
        rng = request.headers.get("range")
        self.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and self.honour_range else 0
        body = self.data[start:]
        if self.drop_after is not None:
            cut, self.drop_after = self.drop_after, None
            return httpx.Response(206 if start else 200, stream=_Dropping(body[:cut]))
        return httpx.Response(206 if start else 200, content=body)

    def artifact(self) -> dict[str, Any]:
        return {"id": "a1", "ref": "r1/train/model", "run_id": "r1", "node_path": "train", "output_name": "model",
                "type": "object", "format": "joblib", "size": len(self.data),
                "sha256": hashlib.sha256(self.data).hexdigest(), "created_at": NOW}  # fmt: skip


class _Dropping(httpx.SyncByteStream):
    """A body that breaks after its bytes, like a connection reset mid-download."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")


def test_download_resumes_a_partial_file_with_range(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    server = ContentServer(data)
    dest = tmp_path / "model.joblib"
    (tmp_path / "model.joblib.part").write_bytes(data[:100_000])
    with _client(server) as c:
        art = c.download_artifact("a1", dest)
    assert server.ranges == ["bytes=100000-"]
    assert dest.read_bytes() == data and art.sha256 == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "model.joblib.part").exists()


def test_download_continues_after_a_drop_and_restarts_a_foreign_partial(
    tmp_path: Path, no_sleep: list[float]
) -> None:
    data = os.urandom(200_000)
    server = ContentServer(data, drop_after=50_000)
    with _client(server) as c:
        c.download_artifact("a1", tmp_path / "a")
    assert server.ranges == [None, "bytes=50000-"]
    assert (tmp_path / "a").read_bytes() == data

    server = ContentServer(data)
    (tmp_path / "b.part").write_bytes(b"not these bytes")  # a partial of something else
    with _client(server) as c:
        c.download_artifact("a1", tmp_path / "b")
    assert server.ranges == ["bytes=15-", None]
    assert (tmp_path / "b").read_bytes() == data


def test_download_refuses_bytes_that_hash_wrong(tmp_path: Path) -> None:
    server = ContentServer(b"the real bytes")
    real = server.artifact()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=b"corrupt bytes!")
        return httpx.Response(200, json=real)

    with _client(handler) as c, pytest.raises(IntegrityError, match="hashes to"):
        c.download_artifact("a1", tmp_path / "x", resume=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_download_without_range_support_starts_over(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    server = ContentServer(data, honour_range=False)
    (tmp_path / "x.part").write_bytes(data[:5000])
    with _client(server) as c:
        c.download_artifact("a1", tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == data


def _sse(*events: tuple[str, dict[str, Any] | None, str | None]) -> bytes:
    text = ": keep-alive\n\n"
    for event, data, event_id in events:
        text += f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
        text += f"data: {json.dumps(data) if data is not None else ''}\n\n"
    return text.encode()


def _line(n: int) -> dict[str, Any]:
    return {"node_path": "train", "attempt": 1, "time": f"{NOW[:-1]}.{n:03d}", "stream": "stdout",
            "line": f"line {n}"}  # fmt: skip


def test_follow_logs_reconnects_with_last_event_id(no_sleep: list[float]) -> None:
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/tenants/default/runs/r1/logs/stream"
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # the stream ends without "end": a proxy dropped it
            return httpx.Response(
                200, content=_sse(("line", _line(1), "1"), ("line", _line(2), "2"))
            )
        if len(asked) == 2:
            return httpx.Response(200, stream=_Dropping(_sse(("line", _line(2), None))))
        body = _sse(("line", _line(2), "2"), ("line", _line(3), "3"), ("end", None, None))
        return httpx.Response(200, content=body)

    with _client(handler) as c:
        lines = [x.line for x in c.follow_logs("r1")]
    assert lines == ["line 1", "line 2", "line 3"]
    assert asked == [None, "2", "2"]


@dataclass
class FakeRunApi:
    """Just enough of the API for ``argosy run --server``: the run moves one state per poll."""

    states: list[str]
    interrupt_at: int | None = None
    polls: int = 0
    created: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if "/blobs/" in path:
            return httpx.Response(200 if method == "HEAD" else 201, json={"sha256": "x", "size": 1})
        if path.endswith("/versions"):
            version = {"id": "v1", "pipeline": "counting", "digest": "sha256:" + "1" * 64,
                       "tags": [], "created_at": NOW, "created_by": "me"}  # fmt: skip
            return httpx.Response(201, json={"version": version, "created": True,
                                             "tag_added": False})  # fmt: skip
        if path.endswith("/artifacts"):
            return httpx.Response(200, json=[])
        if path.endswith("/logs/stream"):  # the live step output: this run logs nothing
            return httpx.Response(200, content=_sse(("end", {"status": "succeeded"}, None)))
        if path.endswith("/runs") and method == "POST":
            self.created.append(json.loads(request.content))
            return httpx.Response(201, json=_run_doc("r1"))
        state = self.states[min(max(self.polls - 1, 0), len(self.states) - 1)]
        if path.endswith("/tasks"):
            task_state = {"pending": "pending", "running": "running"}.get(state, state)
            attempts = [{"id": "a1", "number": 1, "state": task_state, "cause": "first"}]
            return httpx.Response(200, json=[{"id": "t1", "node_path": "make", "step": "make",
                                              "state": task_state, "attempts": attempts}])  # fmt: skip
        if path.endswith("/detail"):
            output = {"artifact_id": "a1", "ref": "r1/make/output", "type": "int",
                      "format": "json", "sha256": "1" * 64, "size": 2, "value": 10}  # fmt: skip
            task = {"id": "t1", "node_path": "make", "step": "make", "state": state}
            return httpx.Response(
                200, json={**_run_doc("r1", state), "outputs": {"output": output}, "tasks": [task]}
            )
        self.polls += 1
        state = self.states[min(self.polls - 1, len(self.states) - 1)]
        if self.interrupt_at is not None and self.polls >= self.interrupt_at:
            raise KeyboardInterrupt
        return httpx.Response(200, json=_run_doc("r1", state))


@pytest.mark.parametrize(
    ("states", "wait", "code"),
    [
        (["pending", "running", "succeeded"], False, 0),
        (["running", "failed"], False, 1),
        (["running", "cancelled"], True, 1),
    ],
)
def test_remote_run_follows_the_run_to_its_outcome(
    ws: Workspace,
    no_sleep: list[float],
    capsys: pytest.CaptureFixture[str],
    states: list[str],
    wait: bool,
    code: int,
) -> None:
    from argosy.cli import commands
    from argosy.client import http
    from argosy.config import load_settings

    path = ws.write(PIPE.format(name="counting", offset=0))
    api = FakeRunApi(states)
    with _client(api) as c:
        got = commands.run_pipeline(
            http.HttpBackend(c), load_settings(home=ws.home), str(path), ["n=5"], wait=wait
        )
    assert got == code
    (created,) = api.created  # one run, of the pushed version, with the typed parameters
    assert {k: created[k] for k in ("pipeline", "version", "parameters", "fail_fast", "no_cache")} == {
        "pipeline": "counting", "version": "sha256:" + "1" * 64, "parameters": {"n": 5},
        "fail_fast": False, "no_cache": False,
    }  # fmt: skip
    assert no_sleep == [http.POLL_SECONDS] * (len(states) - 1)
    captured = capsys.readouterr()
    assert f"run r1 {states[-1]}" in captured.err
    if not wait:
        assert "make running" in captured.err  # progress lines (stderr is not a terminal)


def test_ctrl_c_while_following_leaves_the_run_on_the_server(
    ws: Workspace, no_sleep: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    from argosy.cli import commands
    from argosy.client import http
    from argosy.config import load_settings

    path = ws.write(PIPE.format(name="counting", offset=0))
    api = FakeRunApi(["running"], interrupt_at=2)
    with _client(api) as c:
        got = commands.run_pipeline(http.HttpBackend(c), load_settings(home=ws.home), str(path), [])
    assert got == commands.INTERRUPTED
    err = capsys.readouterr().err
    assert "still running on the server" in err and "argosy runs cancel r1" in err


# -- the CLI against a real server --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server: its URL, and its log so far (for failure messages)."""

    url: str
    log: Callable[[], str] = field(repr=False)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real ``python -m argosy.server.serve --port 0`` process: on PostgreSQL and S3 (moto)
    through the shared ``tests.server_fixture`` when PostgreSQL tests are on, else on SQLite
    and a folder in a temporary ARGOSY_HOME."""
    if "postgresql" in BACKENDS:
        from tests.server_fixture import open_server_env

        cluster, template = request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_template")  # fmt: skip
        with open_server_env(cluster, template, request.getfixturevalue("s3_endpoint")) as env:
            started = env.start()
            yield Server(started.url, started.log)
        return
    yield from _sqlite_server(tmp_path_factory.mktemp("server-home"))


def _sqlite_server(home: Path) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "argosy.server.serve", "--port", "0", "--insecure-dev"],
        env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def drain() -> None:  # keep reading, or a full pipe would block the server
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not url:
                url.append(match.group(1).rstrip("/"))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        found.wait(60)
        if not url:
            pytest.fail("the server did not start:\n" + "".join(log[-40:]))
        yield Server(url[0], lambda: "".join(log))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


PIPE = """
from argosy import step, pipeline

@step
def make(n: int) -> list:
    print("making", n)
    return list(range(n + {offset}))

@step
def total(xs: list) -> int:
    return sum(xs)

@pipeline
def {name}(n: int = 3) -> int:
    return total(xs=make(n=n))
"""


def test_unreachable_server_exits_3_with_one_line(ws: Workspace) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    res = ws.argosy("runs", "list", "--server", url)
    assert res.code == 3
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: cannot reach")
    assert url in res.stderr and "ARGOSY_SERVER" in res.stderr
    # the global option and the variable work the same way
    assert ws.argosy("--server", url, "pipelines", "list").code == 3
    assert ws.argosy("schedules", "list", env={"ARGOSY_SERVER": url}).code == 3


def test_server_only_commands_say_so_without_a_server(ws: Workspace) -> None:
    for args in (("schedules", "list"), ("schedules", "show", "nightly")):
        res = ws.argosy(*args)
        assert res.code == 2 and "--server" in res.stderr and res.stderr.count("\n") == 1, res
    res = ws.argosy("runs", "resume", "r1", env={"ARGOSY_SERVER": "http://127.0.0.1:9"})
    assert res.code == 2 and "resumes its runs itself" in res.stderr, res


def test_push_is_idempotent_and_version_names_are_immutable(ws: Workspace, server: Server) -> None:
    path = ws.write(PIPE.format(name="counting", offset=0), name="counting_pipe")
    first = ws.argosy("pipelines", "push", str(path), "--version", "v1", "--server", server.url)
    assert first.code == 0, first.stderr
    assert "new version" in first.stdout and "v1" in first.stdout
    again = ws.argosy("pipelines", "push", str(path), "--version", "v1", "-o", "json",
                      "--server", server.url)  # fmt: skip
    assert again.code == 0, again.stderr
    doc = again.json()
    assert doc["created"] is False and doc["version"]["tags"] == ["v1"]
    text = ws.argosy("pipelines", "push", str(path), "--server", server.url)
    assert "already there" in text.stdout

    path.write_text(PIPE.format(name="counting", offset=1))
    changed = ws.argosy("pipelines", "push", str(path), "--version", "v1", "--server", server.url)
    assert changed.code == 2
    assert changed.stderr.count("\n") == 1 and "v1" in changed.stderr, changed.stderr

    listed = ws.argosy("pipelines", "list", "-o", "json", "--server", server.url).json()
    assert "counting" in [p["name"] for p in listed["pipelines"]]
    versions = ws.argosy("pipelines", "versions", "counting", "-o", "json", "--server", server.url)
    assert doc["version"]["digest"] in [v["digest"] for v in versions.json()["versions"]]


def test_run_detach_then_list_and_show(ws: Workspace, server: Server) -> None:
    path = ws.write(PIPE.format(name="detached", offset=0), name="detached_pipe")
    res = ws.argosy("run", f"{path}:detached", "-p", "n=4", "--detach", "--server", server.url)
    assert res.code == 0, res.stderr + server.log()[-3000:]
    run_id = res.stdout.strip()
    assert re.fullmatch(r"[0-9A-Za-z]{26}", run_id), res.stdout

    listed = ws.argosy("runs", "list", "-o", "json", env={"ARGOSY_SERVER": server.url})
    assert listed.code == 0, listed.stderr
    assert run_id in [r["id"] for r in listed.json()["runs"]]
    text = ws.argosy("runs", "list", "--server", server.url)
    assert run_id in text.stdout
    shown = ws.argosy("runs", "show", run_id, "-o", "json", "--server", server.url)
    assert shown.code == 0, shown.stderr
    doc = shown.json()
    assert doc["id"] == run_id and doc["parameters"] == {"n": 4} and doc["pipeline"] == "detached"
    missing = ws.argosy("runs", "show", "0" * 26, "--server", server.url)
    assert missing.code == 2 and missing.stderr.count("\n") == 1


@pytest.mark.slow
def test_demo_runs_on_the_server_and_its_artifacts_download_verified(
    ws: Workspace, server: Server, tmp_path: Path
) -> None:
    demo = REPO / "examples" / "demo.py"
    res = ws.argosy("run", f"{demo}:breast_cancer", "--server", server.url, "--wait",
                    timeout=600)  # fmt: skip
    assert res.code == 0, res.stderr + server.log()[-3000:]
    run_id = re.search(r"run (\w{26}) ", res.stderr)
    assert run_id, res.stderr
    shown = ws.argosy("runs", "show", run_id.group(1), "-o", "json", "--server", server.url).json()
    assert shown["status"] == "succeeded"
    assert all(t["state"] in ("succeeded", "cached") for t in shown["tasks"])
    listed = ws.argosy("artifacts", "list", run_id.group(1), "-o", "json", "--server", server.url)
    artifacts = listed.json()["artifacts"]
    assert artifacts
    for a in artifacts:
        if a["format"] == "dir":
            continue
        dest = tmp_path / f"{a['node_path'].replace('/', '_')}.{a['output_name']}"
        got = ws.argosy("artifacts", "get", a["id"], "--out", str(dest), "--server", server.url)
        assert got.code == 0, got.stderr
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == a["sha256"].removeprefix("sha256:")
    # and by RUN/NODE/OUTPUT
    first = next(a for a in artifacts if a["format"] != "dir")
    ref = f"{run_id.group(1)}/{first['node_path']}/{first['output_name']}"
    got = ws.argosy(
        "artifacts", "get", ref, "--out", str(tmp_path / "by-ref"), "--server", server.url
    )
    assert got.code == 0, got.stderr
    # an interrupted download (half of the bytes in PATH.part) continues with a Range request
    whole = (tmp_path / "by-ref").read_bytes()
    (tmp_path / "resumed.part").write_bytes(whole[: len(whole) // 2])
    got = ws.argosy(
        "artifacts", "get", ref, "--out", str(tmp_path / "resumed"), "--server", server.url
    )
    assert got.code == 0, got.stderr
    assert (tmp_path / "resumed").read_bytes() == whole and not (tmp_path / "resumed.part").exists()
    logs = ws.argosy("logs", run_id.group(1), "-o", "json", "--server", server.url)
    assert logs.code == 0 and logs.json()["lines"], logs.stderr
    followed = ws.argosy("logs", run_id.group(1), "--follow", "--server", server.url)
    printed = ws.argosy("logs", run_id.group(1), "--server", server.url)
    assert followed.code == 0 and followed.stdout == printed.stdout, followed.stderr
