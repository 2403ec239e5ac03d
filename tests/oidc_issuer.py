"""A real OIDC issuer for tests, run as a separate process (``python -m tests.oidc_issuer``).

It serves what a resource server needs over HTTP: the discovery document
(``/.well-known/openid-configuration``) and the key set (``/jwks``, RSA keys), and signs
tokens on request through a test-only endpoint (``POST /sign`` with the claims and header
fields). ``POST /rotate`` adds a new signing key (older keys stay published); ``GET /stats``
counts the key-set fetches. It prints ``oidc issuer listening on URL`` once it serves.

The session-scoped fixture :func:`oidc_issuer` starts one and exposes ``.issuer``,
``.token(...)``, ``.rotate()``, ``.public_pem()`` and ``.jwks_requests``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

LISTENING = re.compile(r"oidc issuer listening on (http://\S+)")


class _Issuer:
    def __init__(self) -> None:
        self.url = ""
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.current = ""
        self.jwks_requests = 0
        self.lock = threading.Lock()
        self.rotate()

    def rotate(self) -> str:
        with self.lock:
            kid = f"key-{len(self.keys) + 1}"
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.current = kid
            return kid

    def jwks(self) -> dict[str, Any]:
        with self.lock:
            self.jwks_requests += 1
            keys = []
            for kid, key in self.keys.items():
                jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
                jwk.update(kid=kid, use="sig", alg="RS256")
                keys.append(jwk)
        return {"keys": keys}

    def sign(self, request: dict[str, Any]) -> str:
        claims = dict(request.get("claims", {}))
        headers = dict(request.get("headers", {}))
        alg = headers.pop("alg", "RS256")
        kid = headers.get("kid") or self.current
        headers["kid"] = kid
        key = self.keys.get(kid) or self.keys[self.current]  # an unknown kid: still signed
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    def public_pem(self, kid: str | None = None) -> bytes:
        key = self.keys[kid or self.current]
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _handler(issuer: _Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: object, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._send(200, {
                    "issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                    "token_endpoint": f"{issuer.url}/token",
                    "id_token_signing_alg_values_supported": ["RS256"],
                })  # fmt: skip
            elif self.path == "/jwks":
                self._send(200, issuer.jwks())
            elif self.path == "/stats":
                self._send(200, {"jwks_requests": issuer.jwks_requests})
            elif self.path == "/public.pem":
                self._send(200, issuer.public_pem(), "application/x-pem-file")
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/sign":
                self._send(200, {"token": issuer.sign(body)})
            elif self.path == "/rotate":
                self._send(200, {"kid": issuer.rotate()})
            else:
                self._send(404, {"error": "not found"})

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.oidc_issuer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    issuer = _Issuer()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(issuer))
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"oidc issuer listening on {issuer.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


# -- the fixture --------------------------------------------------------------------------------
@dataclass
class OidcIssuer:
    """A running issuer process: ``issuer`` (its URL) and helpers to get tokens from it."""

    issuer: str
    process: subprocess.Popen[bytes]

    def token(
        self,
        sub: str = "alice",
        groups: list[str] | None = None,
        *,
        aud: str | list[str] | None = "argosy",
        typ: str | None = "at+jwt",
        exp_in: float | None = 300,
        nbf_in: float | None = None,
        iat_in: float = 0,
        kid: str | None = None,
        alg: str = "RS256",
        iss: str | None = None,
        name: str | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by the issuer (``None`` leaves a claim out)."""
        now = time.time()
        body: dict[str, Any] = {"iss": iss or self.issuer, "sub": sub, "iat": int(now + iat_in)}
        if aud is not None:
            body["aud"] = aud
        if exp_in is not None:
            body["exp"] = int(now + exp_in)
        if nbf_in is not None:
            body["nbf"] = int(now + nbf_in)
        if groups is not None:
            body["groups"] = groups
        body["preferred_username"] = name or sub
        body.update(claims)
        headers: dict[str, Any] = {"alg": alg}
        if typ is not None:
            headers["typ"] = typ
        if kid is not None:
            headers["kid"] = kid
        response = httpx.post(f"{self.issuer}/sign", json={"claims": body, "headers": headers})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def rotate(self) -> str:
        kid: str = httpx.post(f"{self.issuer}/rotate", json={}).json()["kid"]
        return kid

    def public_pem(self) -> bytes:
        return httpx.get(f"{self.issuer}/public.pem").content

    @property
    def jwks_requests(self) -> int:
        count: int = httpx.get(f"{self.issuer}/stats").json()["jwks_requests"]
        return count


def start_issuer(timeout: float = 30) -> OidcIssuer:
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_issuer", "--port", "0"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline().decode()
    found = LISTENING.search(line)
    if not found or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"the test OIDC issuer did not start: {line!r}")
    return OidcIssuer(found.group(1), process)


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[OidcIssuer]:
    """A real OIDC issuer process for the whole session."""
    issuer = start_issuer()
    try:
        yield issuer
    finally:
        issuer.process.terminate()
        try:
            issuer.process.wait(10)
        except subprocess.TimeoutExpired:
            issuer.process.kill()
            issuer.process.wait()


if __name__ == "__main__":
    sys.exit(main())
