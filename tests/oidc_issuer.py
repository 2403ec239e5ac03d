"""A real OIDC issuer for tests, run as a separate process (``python -m tests.oidc_issuer``).

It serves what a resource server needs over HTTP: the discovery document
(``/.well-known/openid-configuration``) and the key set (``/jwks``, RSA keys), and signs
tokens on request through a test-only endpoint (``POST /sign`` with the claims and header
fields). ``POST /rotate`` adds a new signing key (older keys stay published); ``GET /stats``
counts the key-set fetches. It prints ``oidc issuer listening on URL`` once it serves.

It is also an authorization server for browser and CLI login (advertised in discovery):

- ``GET /authorize`` (authorization code flow, PKCE S256 required): no login page; it
  redirects straight back to ``redirect_uri`` with a code for the user named by
  ``login_hint`` (``login_hint=deny`` answers ``error=access_denied``);
- ``POST /token`` (form): ``authorization_code`` (checks client_id, redirect_uri, the PKCE
  ``code_verifier`` against the stored challenge, codes are single-use) and
  ``urn:ietf:params:oauth:grant-type:device_code`` (``authorization_pending`` until approved,
  ``slow_down`` when polled faster than ``interval``, ``expired_token``, ``access_denied``);
  it answers an ``id_token`` (aud = client_id, the nonce) and an ``access_token`` (JWT typ
  ``at+jwt``, aud = ``--audience``, default ``argosy``) with the user's ``groups``;
- ``POST /device_authorization`` (form: client_id, scope): a device code and user code.

Test-only endpoints (JSON): ``POST /users`` ``{sub, groups, name}`` sets a user's groups;
``POST /device/approve`` ``{user_code, sub}``, ``/device/deny`` and ``/device/expire``
``{user_code}`` decide a pending device login; ``/device/slow_down`` ``{user_code}`` makes the
next poll answer ``slow_down``; ``GET /device/polls?user_code=`` lists each poll of that login
(the issuer's monotonic clock, and its answer).

The session-scoped fixture :func:`oidc_issuer` starts one and exposes ``.issuer``,
``.token(...)``, ``.rotate()``, ``.public_pem()``, ``.jwks_requests``, ``.add_user(...)``
and ``.device(action, user_code, sub)``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

LISTENING = re.compile(r"oidc issuer listening on (http://\S+)")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class OAuthError(Exception):
    """An OAuth error answer (RFC 6749 5.2): ``error`` and HTTP ``status``."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(error)
        self.error, self.description, self.status = error, description, status


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class _Issuer:
    def __init__(self, audience: str = "argosy") -> None:
        self.url = ""
        self.audience = audience
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.current = ""
        self.jwks_requests = 0
        self.token_requests = 0
        self.users: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}  # by device_code
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.rotate()

    # -- login --------------------------------------------------------------------------------
    def user(self, sub: str) -> dict[str, Any]:
        return self.users.setdefault(sub, {"groups": [], "name": sub})

    def authorize(self, query: dict[str, str]) -> str:
        """The URL the browser is sent back to (with a code, or an error)."""
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri.startswith(("http://", "https://")):
            raise OAuthError("invalid_request", "redirect_uri is missing or not absolute")
        back: dict[str, str] = {}
        if "state" in query:
            back["state"] = query["state"]
        hint = query.get("login_hint", "alice")
        if query.get("response_type") != "code" or not query.get("client_id"):
            back.update(error="unsupported_response_type")
        elif not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
            back.update(error="invalid_request", error_description="PKCE S256 is required")
        elif hint == "deny":
            back.update(error="access_denied", error_description="the user said no")
        else:
            code = secrets.token_urlsafe(24)
            with self.lock:
                self.user(hint)
                self.codes[code] = {
                    "client_id": query["client_id"], "redirect_uri": redirect_uri,
                    "challenge": query["code_challenge"], "nonce": query.get("nonce"),
                    "sub": hint, "scope": query.get("scope", ""), "used": False,
                    "expires": time.time() + 60,
                }  # fmt: skip
            back["code"] = code
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return f"{redirect_uri}{separator}{urlencode(back)}"

    def tokens(self, sub: str, client_id: str, nonce: str | None) -> dict[str, Any]:
        now = int(time.time())
        with self.lock:
            user = dict(self.user(sub))
        common = {"iss": self.url, "sub": sub, "iat": now, "exp": now + 300,
                  "preferred_username": user["name"], "groups": list(user["groups"])}  # fmt: skip
        id_claims = dict(common, aud=client_id)
        if nonce:
            id_claims["nonce"] = nonce
        access = dict(common, aud=self.audience, client_id=client_id, scope="openid profile")
        refresh = secrets.token_urlsafe(24)
        with self.lock:
            self.refresh_tokens[refresh] = {"sub": sub, "client_id": client_id}
        return {
            "token_type": "Bearer", "expires_in": 300,
            "id_token": self.sign({"claims": id_claims, "headers": {"typ": "JWT"}}),
            "access_token": self.sign({"claims": access, "headers": {"typ": "at+jwt"}}),
            "refresh_token": refresh,
        }  # fmt: skip

    def _refresh_grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Refresh tokens rotate: each is good for one use."""
        with self.lock:
            found = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
        if found is None or found["client_id"] != form.get("client_id"):
            raise OAuthError("invalid_grant", "unknown or used refresh token")
        return self.tokens(found["sub"], found["client_id"], None)

    def token(self, form: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            self.token_requests += 1
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._code_grant(form)
        if grant == DEVICE_GRANT:
            return self._device_grant(form)
        if grant == "refresh_token":
            return self._refresh_grant(form)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r}")

    def _code_grant(self, form: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            found = self.codes.get(form.get("code", ""))
            if found is None:
                raise OAuthError("invalid_grant", "unknown code")
            if found["used"]:
                raise OAuthError("invalid_grant", "the code was already used")
            found["used"] = True  # single use, even when the rest of the request is wrong
        if found["expires"] < time.time():
            raise OAuthError("invalid_grant", "the code expired")
        if form.get("client_id") != found["client_id"]:
            raise OAuthError("invalid_client", "client_id does not match the code", 401)
        if form.get("redirect_uri") != found["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri does not match the code")
        verifier = form.get("code_verifier", "")
        if not verifier or not secrets.compare_digest(_s256(verifier), found["challenge"]):
            raise OAuthError("invalid_grant", "PKCE code_verifier does not match the challenge")
        return self.tokens(found["sub"], found["client_id"], found["nonce"])

    # -- device flow (RFC 8628) -----------------------------------------------------------------
    def device_authorization(self, form: dict[str, str]) -> dict[str, Any]:
        if not form.get("client_id"):
            raise OAuthError("invalid_client", "client_id is required", 401)
        device_code = secrets.token_urlsafe(24)
        user_code = "-".join(secrets.token_hex(2).upper() for _ in range(2))
        with self.lock:
            self.devices[device_code] = {
                "user_code": user_code, "client_id": form["client_id"], "status": "pending",
                "expires": time.time() + 120, "interval": 1.0, "last_poll": 0.0, "sub": None,
                "polls": [], "slow_down": False,
            }  # fmt: skip
        return {
            "device_code": device_code, "user_code": user_code,
            "verification_uri": f"{self.url}/device",
            "verification_uri_complete": f"{self.url}/device?user_code={user_code}",
            "expires_in": 120, "interval": 1,
        }  # fmt: skip

    def _device_grant(self, form: dict[str, str]) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            found = self.devices.get(form.get("device_code", ""))
            if found is None or found["client_id"] != form.get("client_id"):
                raise OAuthError("invalid_grant", "unknown device code")
            if found["status"] == "expired" or found["expires"] < time.time():
                raise OAuthError("expired_token", "the device code expired")
            if found["status"] == "denied":
                raise OAuthError("access_denied", "the user refused")
            if found["status"] == "used":
                raise OAuthError("invalid_grant", "the device code was already used")
            early = now - found["last_poll"] < found["interval"] - 0.05
            found["last_poll"] = now
            if early or found["slow_down"]:
                found["slow_down"] = False
                found["polls"].append((now, "slow_down"))
                found["interval"] += 1.0  # RFC 8628 says 5 s; 1 s keeps the tests short
                raise OAuthError("slow_down", "polling too fast")
            found["polls"].append((now, found["status"]))
            if found["status"] == "pending":
                raise OAuthError("authorization_pending", "not approved yet")
            found["status"] = "used"
            sub, client_id = found["sub"], found["client_id"]
        return self.tokens(sub, client_id, None)

    def decide(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for found in self.devices.values():
                if found["user_code"] == body.get("user_code") and found["status"] == "pending":
                    if action == "slow_down":
                        found["slow_down"] = True
                    elif action == "approve":
                        found["status"], found["sub"] = "approved", body.get("sub", "alice")
                        self.user(found["sub"])
                    else:
                        found["status"] = {"deny": "denied", "expire": "expired"}[action]
                    return {"status": found["status"]}
        raise OAuthError("invalid_request", "no pending device login with that user_code", 404)

    def polls(self, user_code: str) -> list[tuple[float, str]]:
        with self.lock:
            for found in self.devices.values():
                if found["user_code"] == user_code:
                    return list(found["polls"])
        raise OAuthError("invalid_request", "no device login with that user_code", 404)

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

        def _error(self, exc: OAuthError) -> None:
            headers = {"Cache-Control": "no-store"}
            body = {"error": exc.error, "error_description": exc.description}
            data = json.dumps(body).encode()
            self.send_response(exc.status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            if parts.path == "/.well-known/openid-configuration":
                self._send(200, {
                    "issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                    "authorization_endpoint": f"{issuer.url}/authorize",
                    "token_endpoint": f"{issuer.url}/token",
                    "device_authorization_endpoint": f"{issuer.url}/device_authorization",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code", DEVICE_GRANT, "refresh_token"],
                    "code_challenge_methods_supported": ["S256"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                })  # fmt: skip
            elif parts.path == "/jwks":
                self._send(200, issuer.jwks())
            elif parts.path == "/stats":
                self._send(200, {"jwks_requests": issuer.jwks_requests,
                                 "token_requests": issuer.token_requests})  # fmt: skip
            elif parts.path == "/public.pem":
                self._send(200, issuer.public_pem(), "application/x-pem-file")
            elif parts.path == "/authorize":
                try:
                    location = issuer.authorize(query)
                except OAuthError as exc:
                    self._error(exc)
                    return
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parts.path == "/device/polls":
                try:
                    self._send(200, {"polls": issuer.polls(query.get("user_code", ""))})
                except OAuthError as exc:
                    self._error(exc)
            elif parts.path == "/device":
                self._send(200, b"<p>device login (approved by tests)</p>", "text/html")
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            path = urlsplit(self.path).path
            try:
                if path in ("/token", "/device_authorization"):
                    form = dict(parse_qsl(raw.decode()))
                    if path == "/token":
                        self._send(200, issuer.token(form))
                    else:
                        self._send(200, issuer.device_authorization(form))
                    return
                body = json.loads(raw or b"{}")
                if path == "/sign":
                    self._send(200, {"token": issuer.sign(body)})
                elif path == "/rotate":
                    self._send(200, {"kid": issuer.rotate()})
                elif path == "/users":
                    with issuer.lock:
                        issuer.users[body["sub"]] = {
                            "groups": list(body.get("groups", [])),
                            "name": body.get("name") or body["sub"],
                        }
                    self._send(200, {"sub": body["sub"]})
                elif path in ("/device/approve", "/device/deny", "/device/expire",
                              "/device/slow_down"):  # fmt: skip
                    self._send(200, issuer.decide(path.rsplit("/", 1)[1], body))
                else:
                    self._send(404, {"error": "not found"})
            except OAuthError as exc:
                self._error(exc)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.oidc_issuer")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--audience", default="argosy", help="aud of the access tokens it issues")
    args = parser.parse_args(argv)
    issuer = _Issuer(args.audience)
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

    def add_user(self, sub: str, groups: list[str] | None = None, name: str | None = None) -> None:
        """Set the groups (and display name) the issuer puts in ``sub``'s login tokens."""
        response = httpx.post(
            f"{self.issuer}/users", json={"sub": sub, "groups": groups or [], "name": name}
        )
        response.raise_for_status()

    def device_polls(self, user_code: str) -> list[tuple[float, str]]:
        """Each poll of a device login so far: (the issuer's monotonic time, its answer)."""
        response = httpx.get(f"{self.issuer}/device/polls", params={"user_code": user_code})
        response.raise_for_status()
        return [(t, answer) for t, answer in response.json()["polls"]]

    def device(self, action: str, user_code: str, sub: str | None = None) -> httpx.Response:
        """Decide a pending device login: ``approve`` (as ``sub``), ``deny`` or ``expire``;
        or ``slow_down``: its next poll is answered ``slow_down``."""
        body: dict[str, Any] = {"user_code": user_code}
        if sub is not None:
            body["sub"] = sub
        return httpx.post(f"{self.issuer}/device/{action}", json=body)


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
