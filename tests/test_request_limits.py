"""Bodies are read only after authentication, under the route's own limits (issue 13, defect 2),
through a live server on SQLite and PostgreSQL: an anonymous 200 MB body is refused before it is
read (the server's memory does not grow), a body's size and media type are judged by the route
and not by the client's headers (413/415), and slow headers or bodies are cut off (408)."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request

from argosy.api import API_PREFIX
from argosy.config import Settings
from argosy.server import admission
from argosy.server.limits import accepts
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.security_fixture import BACKENDS, Live, secure_server

MB = 1024 * 1024


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest,
    oidc_issuer: OidcIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    with secure_server(
        request, oidc_issuer, tmp_path_factory, "limits",
        ARGOSY_REQUEST_HEADER_TIMEOUT="1.5", ARGOSY_REQUEST_BODY_TIMEOUT="1.5",
        ARGOSY_MAX_JSON_BYTES=str(64 * 1024),
    ) as found:  # fmt: skip
        found.tenant("lim", ("editor", "user", "ed"))
        yield found


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def send_chunked(url: str, path: str, total: int, headers: str = "") -> tuple[int, int]:
    """POST ``total`` bytes of ``text/plain`` as a chunked body, stopping as soon as the server
    answers; (status, bytes sent)."""
    sock = _connect(url)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n{headers}"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"x" * MB
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer (or the close) is already there
            sock.sendall(frame)
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection on the rest of the body
    answer = sock.recv(65536)
    sock.close()
    return _status(answer), sent


def test_an_anonymous_body_is_refused_before_it_is_read(live: Live) -> None:
    """The attack: 200 MB of text/plain, chunked, to a JSON route, with no credentials."""
    pid = live.server.process.pid
    assert live.call("GET", "/healthz").status_code == 200
    before = peak_rss(pid)
    status, sent = send_chunked(live.url, f"{API_PREFIX}/tenants/lim/runs", 200 * MB)
    grown = peak_rss(pid) - before
    print(f"\nanonymous 200 MB body: {status} after {sent / MB:.0f} MB sent; server peak RSS "
          f"grew {grown / MB:.1f} MB")  # fmt: skip
    assert status == 401
    assert grown < 20 * MB
    assert sent < 100 * MB  # answered long before the body was through
    # and with a (junk) credential: refused the same way, unread
    status, sent = send_chunked(live.url, f"{API_PREFIX}/tenants/lim/runs", 50 * MB,
                                headers="Authorization: Bearer argosy_junk\r\n")  # fmt: skip
    assert status == 401 and sent < 50 * MB


def test_the_route_decides_the_limit_and_the_media_type(live: Live) -> None:
    ed = live.token("ed")
    runs = f"{API_PREFIX}/tenants/lim/runs"
    # an unexpected type is refused before the body is read, whatever its size
    plain = live.call("POST", runs, ed, content=b"x" * 1000, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and plain.json()["code"] == "unsupported_media_type"
    octets = live.call("POST", runs, ed, content=b"{}",
                       headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert octets.status_code == 415
    # JSON over the route's limit: declared, or streamed without a length
    big = json.dumps({"pipeline": "p", "parameters": {"x": "y" * 70_000}}).encode()
    declared = live.call(
        "POST", runs, ed, content=big, headers={"Content-Type": "application/json"}
    )
    assert declared.status_code == 413 and declared.json()["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    streamed = live.call("POST", runs, ed, content=chunks(),
                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert streamed.status_code == 413
    # the blob route streams octets, and takes no JSON
    blobs = f"{API_PREFIX}/tenants/lim/blobs/{'0' * 64}"
    assert live.call("PUT", blobs, ed, content=b"{}",
                     headers={"Content-Type": "application/json"}).status_code == 415  # fmt: skip
    # within the limits, the request is served
    fine = live.call("POST", runs, ed, json={"pipeline": "nope"})
    assert fine.status_code == 404, fine.text


def test_slow_headers_and_slow_bodies_are_cut_off(live: Live) -> None:
    sock = _connect(live.url)
    sock.sendall(b"GET /api/v1/me HTTP/1.1\r\nHost: test\r\n")  # ... and never the blank line
    started = time.monotonic()
    answer = sock.recv(65536)
    waited = time.monotonic() - started
    assert _status(answer) == 408 and 1.0 < waited < 10, (answer, waited)
    assert sock.recv(10) == b""  # and closed
    sock.close()

    sock = _connect(live.url)  # a connection that never says anything
    assert _status(sock.recv(65536)) == 408
    sock.close()

    ed = live.token("ed")
    sock = _connect(live.url)
    sock.sendall(
        f"POST {API_PREFIX}/tenants/lim/runs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "
        f"{ed}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        '{"pipeline": '.encode()
    )
    started = time.monotonic()
    answer = b""
    while chunk := sock.recv(65536):  # until the server closes the connection
        answer += chunk
    assert _status(answer) == 408 and time.monotonic() - started < 10
    assert b"request_timeout" in answer
    sock.close()
    assert live.call("GET", "/healthz").status_code == 200


def test_a_signed_body_is_read_before_authentication_but_only_64_kib() -> None:
    """A webhook authenticated by a signature over its body (no such route ships yet): its body
    is read before any gate, never beyond 64 KiB, whatever the route asks for."""
    app = FastAPI()
    app.state.context = SimpleNamespace(settings=Settings(insecure_dev=True))

    @app.post("/hook")
    @accepts("signed", max_bytes=10 * MB, media_types=["application/json"])
    async def hook(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    admission.install(app)
    json_type = {"Content-Type": "application/json"}

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.post("/hook", content=b"x" * 1000, headers=json_type),
                await client.post("/hook", content=b"x" * 65 * 1024, headers=json_type),
                await client.post("/hook", content=b"x", headers={"Content-Type": "text/plain"}),
            ]

    small, big, plain = anyio.run(calls)
    assert small.status_code == 200 and small.json() == {"read": 1000}
    assert big.status_code == 413
    assert plain.status_code == 415


def test_every_api_route_has_a_gate_admission_can_run() -> None:
    """Each API route's declared-action dependency runs before its body (Admission.rules
    raises for one it cannot call), and bodies follow the route, not the request."""
    from fastapi import routing

    from argosy.server.app import create_app
    from argosy.server.context import ServerContext

    context = ServerContext.open(
        Settings(insecure_dev=True, home=Path(__import__("tempfile").mkdtemp()))
    )
    app = create_app(context)
    gate = admission.Admission(app, app)
    kinds = {}
    for route in routing.iter_route_contexts(app.router.routes):
        policy, found = gate.rules(route)
        if str(route.path).startswith(("/api/v1/tenants", "/api/v1/task-store", "/scim")):
            assert found is not None, route.path
        for method in route.methods or ():
            kinds[(method, route.path)] = policy.kind
    context.metadata.close()
    assert kinds[("PUT", "/api/v1/tenants/{tenant}/blobs/{sha256}")] == "upload"
    assert kinds[("POST", "/api/v1/tenants/{tenant}/runs")] == "json"
    assert kinds[("GET", "/api/v1/tenants/{tenant}/runs")] == "none"
    assert kinds[("PUT", "/api/v1/task-store/{key:path}")] == "upload"
    assert kinds[("PATCH", "/scim/v2/Users/{user_id}")] == "json"
