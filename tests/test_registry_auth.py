"""Registry authentication for ``argosy images lock`` (and ``images build --push``), against
the real docker-registry (distribution 2.8) configured with **token auth**: a small token
service this test runs checks basic credentials (or an identity token) and issues JWTs signed
with a test key, which the registry verifies with the certificate bundle it is given.

Right credentials (from ``podman login``'s auth file, an identity token, or a docker
credential helper) lock the digest podman's push reported; wrong or missing ones give one
line naming the registry and ``podman login HOST`` and exit 3, and never show a secret. A
pipeline's container step pinned ``HOST/NAME@sha256:...`` pulls the image by digest from the
registry (through ``CONTAINERS_REGISTRIES_CONF`` marking the loopback registry insecure)
after the local copy is removed. The credential files' order is checked without a registry."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from argosy.ops import registry_auth
from argosy.ops.registry_auth import Credential, RegistryAuth, auth_files, find_credential
from tests.conftest import Workspace, outputs
from tests.test_images import running_registry

PATH = "/usr/bin:/usr/sbin:/bin:/sbin"
USER, PASSWORD = "alice", "s3cret-Pa55"  # the one account the token service knows
IDENTITY_TOKEN = "idt-" + "7" * 24  # alice's OAuth2 refresh token
SERVICE, ISSUER = "argosy-test-registry", "argosy-test-token-service"


def libtrust_key_id(key: rsa.RSAPublicKey) -> str:
    """The key id distribution matches a JWT's ``kid`` with (libtrust's: base32 of the first
    240 bits of the SHA-256 of the DER public key, in groups of four)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@dataclass
class TokenService:
    """A token service (the registry's ``realm``): basic credentials or a refresh token in,
    a signed JWT out; anonymous callers get a token that grants nothing."""

    key: rsa.RSAPrivateKey
    url: str = ""
    asked: list[dict[str, Any]] = field(default_factory=list)  # what each call brought

    def issue(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")  # repository:ml/prep:pull,push
            if subject == USER:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}  # fmt: skip
        kid = libtrust_key_id(self.key.public_key())
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": kid})

    def answer(
        self, method: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        auth = headers.get("Authorization") or ""
        form = parse_qs(body.decode()) if method == "POST" else {}
        self.asked.append({"method": method, "basic": auth.startswith("Basic "),
                           "grant": next(iter(form.get("grant_type") or []), None)})  # fmt: skip
        scopes = (form.get("scope") if method == "POST" else query.get("scope")) or []
        if method == "POST":
            if form.get("refresh_token") != [IDENTITY_TOKEN]:
                return 401, {"error": "invalid_grant"}
            return 200, {"access_token": self.issue(USER, scopes), "expires_in": 300}
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                return 401, {"details": "wrong user or password"}
            token = self.issue(user, scopes)
        else:
            token = self.issue("", scopes)  # anonymous: a token without access
        return 200, {"token": token, "access_token": token, "expires_in": 300}


@dataclass
class Registry:
    host: str
    tokens: TokenService
    root: Path
    log: Path


def _serve_tokens(tokens: TokenService) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, doc = tokens.answer(method, parse_qs(url.query), self.headers, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "argosy test token signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry on 127.0.0.1 with token auth, and its token service."""
    root = tmp_path_factory.mktemp("token-registry")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "signer.pem").write_bytes(_self_signed(key))
    tokens = TokenService(key)
    token_server = _serve_tokens(tokens)
    tokens.url = f"http://127.0.0.1:{token_server.server_address[1]}/token"
    auth = f"""
        auth:
          token:
            realm: {tokens.url}
            service: {SERVICE}
            issuer: {ISSUER}
            rootcertbundle: {root / "signer.pem"}
    """
    try:
        with running_registry(root, auth, ready=401) as host:
            yield Registry(host, tokens, root, root / "registry.log")
    finally:
        token_server.shutdown()


def _podman_env(root: Path, host: str, auth_file: Path) -> dict[str, str]:
    """podman on these machines (runc, no ulimits), the loopback registry marked insecure,
    credentials in ``auth_file``."""
    conf = root / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    registries = root / "registries.conf"
    registries.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    return {"PATH": PATH, "CONTAINERS_CONF": str(conf),
            "CONTAINERS_REGISTRIES_CONF": str(registries), "REGISTRY_AUTH_FILE": str(auth_file),
            "ARGOSY_BUILD_TOOL": "podman"}  # fmt: skip


def _auth_file(path: Path, host: str, entry: dict[str, str]) -> Path:
    path.write_text(json.dumps({"auths": {host: entry}}))
    return path


def _basic(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _project(ws: Workspace, host: str, marker: str) -> None:
    folder = ws.root / "images" / "prep"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", folder / "busybox")
    (folder / "marker").write_text(marker)
    (folder / "Containerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\n"
    )
    (ws.root / "argosy.toml").write_text(
        f'[images.prep]\ncontext = "images/prep"\nrepository = "{host}/ml/prep"\ntag = "v1"\n'
    )


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, "wrong-" + PASSWORD, IDENTITY_TOKEN,
                       base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):  # fmt: skip
            assert secret not in text


@pytest.fixture(scope="module")
def pushed(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``argosy images build --push`` of one image with podman login's credentials, and
    ``argosy images lock``: what each reported, and the environment they ran in."""
    root = tmp_path_factory.mktemp("pushed")
    ws = Workspace(root / "proj", root / "state")
    ws.root.mkdir()
    marker = f"prep {time.time_ns()}"  # a fresh image: the registry is new, the store not
    _project(ws, registry.host, marker)
    auth_file = root / "auth.json"
    env = _podman_env(root, registry.host, auth_file)
    login = subprocess.run(
        ["podman", "login", "--tls-verify=false", "-u", USER, "--password-stdin", registry.host],
        input=PASSWORD, capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    built = ws.argosy("images", "build", "--push", "--output", "json", env=env, timeout=300)
    assert built.code == 0, built.stderr
    digest = built.json()["images"][0]["digest"]
    assert digest.startswith("sha256:")
    before = len(registry.tokens.asked)
    locked = ws.argosy("images", "lock", "--output", "json", env=env)
    assert locked.code == 0, locked.stderr
    _no_secret(built.stdout, built.stderr, locked.stdout, locked.stderr)
    asked = registry.tokens.asked[before:]
    return {"root": str(root), "home": str(ws.home), "proj": str(ws.root),
            "marker": marker, "digest": digest, "locked": locked.json()["images"]["prep"]["digest"],
            "asked": json.dumps(asked), **env}  # fmt: skip


def test_lock_with_podman_login_credentials_gives_the_pushed_digest(
    registry: Registry, pushed: dict[str, str]
) -> None:
    assert pushed["locked"] == pushed["digest"]  # what podman's push reported
    asked = json.loads(pushed["asked"])
    assert asked == [{"method": "GET", "basic": True, "grant": None}]  # one token, with basic
    # and without credentials the registry refuses the same request: the auth flow mattered
    url = f"http://{registry.host}/v2/ml/prep/manifests/v1"
    assert httpx.head(url, timeout=10).status_code == 401


@pytest.mark.parametrize("how", ["wrong password", "no credentials", "anonymous token"])
def test_lock_without_the_right_credentials_is_one_line_and_exit_3(
    registry: Registry, pushed: dict[str, str], tmp_path: Path, how: str
) -> None:
    ws = Workspace(Path(pushed["proj"]), Path(pushed["home"]))
    home = tmp_path / "home"
    home.mkdir()
    auth_file = tmp_path / "auth.json"
    if how == "wrong password":
        _auth_file(auth_file, registry.host, _basic(USER, "wrong-" + PASSWORD))
    elif how == "anonymous token":
        _auth_file(auth_file, "other.example:5000", _basic(USER, PASSWORD))  # not this host
    env = {"REGISTRY_AUTH_FILE": str(auth_file), "HOME": str(home), "XDG_CONFIG_HOME": "",
           "DOCKER_CONFIG": ""}  # fmt: skip
    res = ws.argosy("images", "lock", env=env)
    assert res.code == 3, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert f"registry {registry.host}" in lines[0]
    assert f"podman login {registry.host}" in lines[0]
    if how == "wrong password":
        assert (
            f"refused the credentials for {registry.host}/ml/prep:v1 from {auth_file}" in (lines[0])
        )
    else:
        assert "needs credentials" in lines[0] and str(auth_file) in lines[0]
    _no_secret(res.stdout, res.stderr)


def test_a_push_the_registry_refuses_is_one_line_and_exit_3(
    registry: Registry, pushed: dict[str, str], tmp_path: Path
) -> None:
    ws = Workspace(Path(pushed["proj"]), Path(pushed["home"]))
    wrong = _auth_file(tmp_path / "auth.json", registry.host, _basic(USER, "wrong-" + PASSWORD))
    env = {**{k: v for k, v in pushed.items() if k.isupper()}, "REGISTRY_AUTH_FILE": str(wrong)}
    res = ws.argosy("images", "build", "--push", "--tag", "refused", env=env, timeout=300)
    assert res.code == 3, res.stderr
    last = res.stderr.strip().splitlines()[-1]  # after the progress lines, one line
    assert f"registry {registry.host} refused to let podman push" in last
    assert f"podman login {registry.host}" in last
    _no_secret(res.stdout, res.stderr)


def test_lock_with_an_identity_token_and_with_a_credential_helper(
    registry: Registry, pushed: dict[str, str], tmp_path: Path
) -> None:
    """``identitytoken`` (an OAuth2 refresh token, as ``docker login`` to some registries
    stores) is traded at the realm with ``grant_type=refresh_token``; a ``credHelpers`` entry
    in ~/.docker/config.json runs ``docker-credential-NAME get``."""
    ws = Workspace(Path(pushed["proj"]), Path(pushed["home"]))
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    base = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(tmp_path / "none.json"),
            "XDG_CONFIG_HOME": "", "DOCKER_CONFIG": ""}  # fmt: skip

    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {f"https://{registry.host}/v1/": {"identitytoken": IDENTITY_TOKEN}}})
    )
    before = len(registry.tokens.asked)
    res = ws.argosy("images", "lock", "--output", "json", env=base)
    assert res.code == 0, res.stderr
    assert res.json()["images"]["prep"]["digest"] == pushed["digest"]
    assert registry.tokens.asked[before:] == [{"method": "POST", "basic": False,
                                               "grant": "refresh_token"}]  # fmt: skip

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-argosytest"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        f'[ "$host" = "{registry.host}" ] || exit 1\n'
        f'echo \'{{"ServerURL": "{registry.host}", "Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n'
    )
    helper.chmod(0o755)
    (home / ".docker" / "config.json").write_text(
        json.dumps({"credHelpers": {registry.host: "argosytest"}})
    )
    res = ws.argosy("images", "lock", "--output", "json",
                    env={**base, "PATH": f"{bin_dir}:{os.environ['PATH']}"})  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.json()["images"]["prep"]["digest"] == pushed["digest"]
    _no_secret(res.stdout, res.stderr)


def test_a_pinned_container_step_pulls_its_image_by_digest(
    registry: Registry, pushed: dict[str, str]
) -> None:
    """The local copy removed, a container step pinned ``HOST/ml/prep@sha256:...`` makes
    podman pull it by digest from the token-auth registry (credentials: the auth file)."""
    ws = Workspace(Path(pushed["proj"]), Path(pushed["home"]))
    env = {k: v for k, v in pushed.items() if k.isupper()}
    podman_env = {**os.environ, **env}
    # the step's podman gets REGISTRY_AUTH_FILE and CONTAINERS_REGISTRIES_CONF (the loopback
    # registry is plain HTTP) from the argosy process: the same credentials as images lock
    assert {"REGISTRY_AUTH_FILE", "CONTAINERS_REGISTRIES_CONF"} <= set(env)
    pinned = f"{registry.host}/ml/prep@{pushed['digest']}"
    for ref in (f"{registry.host}/ml/prep:v1", pinned):
        subprocess.run(
            ["podman", "rmi", "-f", ref], env=podman_env, capture_output=True, check=False
        )
    gone = subprocess.run(["podman", "image", "exists", pinned], env=podman_env, check=False)
    assert gone.returncode == 1  # not here: the run must pull it
    ws.write(
        f'''
        from argosy import container_step, pipeline

        show = container_step(name="show", image="{pinned}",
                              command=["/bin/busybox", "cp", "/marker", "{{{{outputs.out.path}}}}"],
                              outputs={{"out": str}})

        @pipeline
        def by_digest() -> str:
            return show()
        ''',
        "by_digest",
    )
    before = len(registry.tokens.asked)
    res = ws.argosy("run", "by_digest.py:by_digest", "--output", "json", env=env, timeout=300)
    assert res.code == 0, (res.stderr, res.stdout[-3000:])
    run = res.json()
    assert run["status"] == "succeeded"
    assert list(outputs(run).values()) == [pushed["marker"]]
    here = subprocess.run(["podman", "image", "exists", pinned], env=podman_env, check=False)
    assert here.returncode == 0  # pulled by its digest
    # through the token service, with alice's credentials from HOME's auth.json
    assert {"method": "GET", "basic": True, "grant": None} in registry.tokens.asked[before:]


# -- the credential files, without a registry ---------------------------------------------------
def test_the_credential_files_are_read_in_podmans_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_dir = tmp_path / "run"
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(run_dir)}
    assert auth_files(env) == [
        run_dir / "containers" / "auth.json",
        home / ".config" / "containers" / "auth.json",
        home / ".docker" / "config.json",
    ]
    named = tmp_path / "named.json"
    given = {"REGISTRY_AUTH_FILE": str(named), "DOCKER_CONFIG": "/d", "XDG_CONFIG_HOME": "/x"}
    expected = [named, Path("/x/containers/auth.json"), Path("/d/config.json")]
    assert auth_files({**env, **given}) == expected  # REGISTRY_AUTH_FILE replaces the runtime one

    host = "reg.example:5000"
    for file, user in ((home / ".docker" / "config.json", "docker"),
                       (home / ".config" / "containers" / "auth.json", "config"),
                       (run_dir / "containers" / "auth.json", "runtime")):  # fmt: skip
        file.parent.mkdir(parents=True, exist_ok=True)
        _auth_file(file, host, _basic(user, "pw"))
        found, _ = find_credential(host, "ml/prep", env)
        assert found is not None and found.username == user and found.source == str(file)
    # the first file wins only for a host it has: another host falls through to the next
    found, looked = find_credential("other.example", "x", env)
    assert found is None and looked == auth_files(env)

    # keys: the most specific repository prefix first; docker's URL forms name the host
    (run_dir / "containers" / "auth.json").write_text(json.dumps({"auths": {
        host: _basic("host", "pw"), f"{host}/ml": _basic("ns", "pw"),
        f"{host}/ml/prep": _basic("repo", "pw"),
    }}))  # fmt: skip
    assert [find_credential(host, p, env)[0].username for p in ("ml/prep", "ml/x", "y")] == [  # type: ignore[union-attr]
        "repo",
        "ns",
        "host",
    ]
    (run_dir / "containers" / "auth.json").write_text(json.dumps({"auths": {
        f"https://{host}/v1/": _basic("url", "pass:with:colons")}}))  # fmt: skip
    found, _ = find_credential(host, "ml/prep", env)
    assert found is not None and (found.username, found.password) == ("url", "pass:with:colons")
    assert "pass:with" not in repr(found)  # a credential's repr shows no secret


def test_the_challenge_parser_and_a_basic_challenge() -> None:
    scheme, params = registry_auth.parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg.example",'
        'scope="repository:ml/prep:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg.example",
                      "scope": "repository:ml/prep:pull,push"}  # fmt: skip

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") == Credential("f", "u", "p").basic:
            return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "0" * 64})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'})

    auth = RegistryAuth(Credential("f", "u", "p"), "repository:x:pull")
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        assert client.head("https://reg.example/v2/x/manifests/v1").status_code == 200
        assert client.head("https://reg.example/v2/x/manifests/v1").status_code == 200
    basic = "Basic " + base64.b64encode(b"u:p").decode()
    assert seen == [None, basic, basic]  # the second request sends what worked at once
    none = RegistryAuth(None, "repository:x:pull")
    with httpx.Client(transport=httpx.MockTransport(handler), auth=none) as client:
        assert client.head("https://reg.example/v2/x/manifests/v1").status_code == 401
    assert none.refused == "no credentials"
