"""Authentication and authorization against a real server process and a real OIDC issuer
process (``tests.oidc_issuer``): the route x principal matrix generated from the route table,
token attacks, group-driven access, API tokens, and the fail-closed start.

One server (SQLite, a folder store) authenticates tokens of the test issuer; platform admins
are the ``platform-admins`` group. Tenants and bindings are made through the API by an admin.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from argosy.api import API_PREFIX
from argosy.auth.policy import MINIMUM_ROLE, PLATFORM_ONLY, Action, Role
from argosy.config import Settings
from argosy.ids import new_id
from argosy.server.context import ServerContext
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import User
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

ADMIN = {"sub": "root-admin", "groups": ["platform-admins"]}
VIEWER = {"sub": "vic", "groups": ["a-viewers"]}
EDITOR = {"sub": "ed", "groups": []}  # bound as a user
OWNER_A = {"sub": "olga", "groups": ["a-owners"]}
OWNER_B = {"sub": "bob", "groups": ["b-owners"]}
DUMMY_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.fixture(scope="module")
def server(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("auth-server")
    started = start_server(home, oidc_env(oidc_issuer.issuer))
    yield started
    started.stop(timeout=20)


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[MetadataStore]:
    store = MetadataStore.open(f"sqlite:///{server.home / 'argosy.db'}")
    yield store
    store.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def call(
    server: ServerProcess, method: str, path: str, token: str | None = None, **kw: Any
) -> httpx.Response:
    return httpx.request(method, server.url + path, headers=bearer(token), timeout=30, **kw)


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def tenants(server: ServerProcess, oidc_issuer: OidcIssuer) -> dict[str, str]:
    """Tenants mx-a, mx-b (matrix) and team-a (other tests), with their bindings."""
    admin = oidc_issuer.token(**ADMIN)  # type: ignore[arg-type]
    for name in ("mx-a", "mx-b", "team-a"):
        ok(call(server, "POST", f"{API_PREFIX}/tenants", admin, json={"name": name}))
    for tenant in ("mx-a", "team-a"):
        for role, kind, subject in (
            ("viewer", "group", "a-viewers"), ("editor", "user", "ed"),
            ("owner", "group", "a-owners"),
        ):  # fmt: skip
            ok(call(server, "POST", f"{API_PREFIX}/tenants/{tenant}/members", admin,
                    json={"role": role, "subject_kind": kind, "subject": subject}))  # fmt: skip
    ok(call(server, "POST", f"{API_PREFIX}/tenants/mx-b/members", admin,
            json={"role": "owner", "subject_kind": "group", "subject": "b-owners"}))  # fmt: skip
    return {"a": "mx-a", "b": "mx-b"}


# -- the route table ------------------------------------------------------------------------
def _routes() -> list[Any]:
    from argosy.server.app import create_app
    from argosy.server.identity import route_actions

    settings = Settings(insecure_dev=True)
    app = create_app(cast(ServerContext, SimpleNamespace(coordinator=None, settings=settings)))
    return [r for r in route_actions(app) if r.path.startswith(API_PREFIX)]


def test_every_api_route_declares_an_action() -> None:
    routes = _routes()
    assert len(routes) >= 25
    missing = [f"{r.method} {r.path}" for r in routes if r.action is None]
    assert not missing, f"API routes without a declared action (identity.authorized): {missing}"


def _expected(action: Action, who: str) -> bool:
    if action is Action.PUBLIC:
        return True
    if who == "anonymous":
        return False
    if action is Action.AUTHENTICATED:
        return True
    if action is Action.TASK:
        return False
    if who == "admin":
        return True
    if action in PLATFORM_ONLY:
        return False
    role = {"viewer": Role.viewer, "editor": Role.editor, "owner_a": Role.owner}.get(who)
    return role is not None and role >= MINIMUM_ROLE[action]


def _fill(path: str, tenant: str) -> str:
    path = path.replace("{tenant}", tenant)
    out = []
    for part in path.split("/"):
        if part.startswith("{"):
            part = "0" * 64 if "sha" in part else DUMMY_ID
        out.append(part)
    return "/".join(out)


def test_authorization_matrix(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    """Every API route x {anonymous, viewer, editor, owner of A, owner of B, admin} on a
    tenant-A path: allowed exactly as the route's action and the minimum role say."""
    who_tokens: dict[str, str | None] = {
        "anonymous": None,
        "viewer": oidc_issuer.token(**VIEWER),  # type: ignore[arg-type]
        "editor": oidc_issuer.token(**EDITOR),  # type: ignore[arg-type]
        "owner_a": oidc_issuer.token(**OWNER_A),  # type: ignore[arg-type]
        "owner_b": oidc_issuer.token(**OWNER_B),  # type: ignore[arg-type]
        "admin": oidc_issuer.token(**ADMIN),  # type: ignore[arg-type]
    }
    routes = [r for r in _routes() if r.action is not None]
    routes.sort(key=lambda r: r.path.endswith("/archive"))  # archiving tenant A goes last
    wrong: list[str] = []
    checked = 0
    for route in routes:
        path = _fill(route.path, tenants["a"])
        for who, token in who_tokens.items():
            body: dict[str, Any] = {"json": {}} if route.method in ("POST", "PUT", "PATCH") else {}
            response = call(server, route.method, path, token, **body)
            allowed = _expected(route.action, who)
            status = response.status_code
            if allowed and status in (401, 403):
                wrong.append(f"{who} {route.method} {path} ({route.action}): {status} "
                             f"{response.text[:200]}")  # fmt: skip
            if not allowed:
                want = 401 if who == "anonymous" else 403
                if status != want:
                    wrong.append(f"{who} {route.method} {path} ({route.action}): {status}, "
                                 f"expected {want}")  # fmt: skip
                elif status == 403 and route.method != "HEAD":
                    assert response.headers["content-type"].startswith("application/problem+json")
                    assert response.json()["detail"]
                elif status == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
            checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked >= 6 * 25


def test_unknown_tenants_look_forbidden_to_all_but_admins(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    owner_b = oidc_issuer.token(**OWNER_B)  # type: ignore[arg-type]
    admin = oidc_issuer.token(**ADMIN)  # type: ignore[arg-type]
    unknown = call(server, "GET", f"{API_PREFIX}/tenants/no-such-team/runs", owner_b)
    other = call(server, "GET", f"{API_PREFIX}/tenants/team-a/runs", owner_b)
    assert unknown.status_code == other.status_code == 403
    assert "no role" in unknown.json()["detail"] and "no role" in other.json()["detail"]
    assert call(server, "GET", f"{API_PREFIX}/tenants/no-such-team/runs", admin).status_code == 404
    mine = ok(call(server, "GET", f"{API_PREFIX}/tenants", owner_b))
    assert [t["name"] for t in mine] == ["mx-b"]
    me = ok(call(server, "GET", f"{API_PREFIX}/me", oidc_issuer.token(**OWNER_A)))  # type: ignore[arg-type]
    assert me["subject"] == "olga" and me["roles"] == {"mx-a": "owner", "team-a": "owner"}


# -- token attacks --------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(oidc_issuer: OidcIssuer) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {"iss": oidc_issuer.issuer, "sub": "vic", "aud": "argosy", "iat": now,
            "exp": now + 300, "groups": ["a-viewers"]}  # fmt: skip


def _refused(server: ServerProcess, token: str, why: str) -> None:
    response = call(server, "GET", f"{API_PREFIX}/tenants/team-a/runs", token)
    assert response.status_code == 401, (why, response.text)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"'), challenge
    assert response.json()["detail"], why


def test_token_attacks_are_refused(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    good = oidc_issuer.token(**VIEWER)  # type: ignore[arg-type]
    assert call(server, "GET", f"{API_PREFIX}/tenants/team-a/runs", good).status_code == 200
    claims = _claims(oidc_issuer)
    header = {"typ": "at+jwt", "kid": "key-1"}
    none_token = (
        _b64(json.dumps({**header, "alg": "none"}).encode()) + "."
        + _b64(json.dumps(claims).encode()) + "."
    )  # fmt: skip
    _refused(server, none_token, "alg none")
    signing = (
        _b64(json.dumps({**header, "alg": "HS256"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    import hashlib
    import hmac

    mac = hmac.new(oidc_issuer.public_pem(), signing.encode(), hashlib.sha256).digest()
    _refused(server, signing + "." + _b64(mac), "HS256 with the public key as secret")
    _refused(server, oidc_issuer.token(**VIEWER, iss="https://evil.example"), "wrong iss")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, aud="another-api"), "wrong aud")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, exp_in=-600), "expired")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, nbf_in=600), "nbf in the future")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, exp_in=None), "no exp")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, typ="JWT"), "an ID token (typ JWT)")  # type: ignore[arg-type]
    _refused(server, oidc_issuer.token(**VIEWER, typ=None), "an ID token (no typ)")  # type: ignore[arg-type]
    head, payload, signature = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["groups"] = ["a-owners"]
    _refused(server, f"{head}.{_b64(json.dumps(tampered).encode())}.{signature}", "tampered")
    _refused(server, "not-a-jwt", "garbage")


def test_unknown_kids_refetch_the_key_set_at_most_once(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    ok(call(server, "GET", f"{API_PREFIX}/me", oidc_issuer.token(**VIEWER)))  # type: ignore[arg-type]
    before = oidc_issuer.jwks_requests
    for i in range(50):
        _refused(server, oidc_issuer.token(**VIEWER, kid=f"made-up-{i}"), "unknown kid")  # type: ignore[arg-type]
    assert oidc_issuer.jwks_requests - before <= 1


# -- group-driven access and deactivation ---------------------------------------------------
def test_groups_decide_access_at_the_next_request(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    runs = f"{API_PREFIX}/tenants/team-a/runs"
    # the IdP adds a user to a bound group: access at the next token, nothing changed here
    newcomer = oidc_issuer.token(sub="nina", groups=[])
    assert call(server, "GET", runs, newcomer).status_code == 403
    assert (
        call(server, "GET", runs, oidc_issuer.token(sub="nina", groups=["a-viewers"])).status_code
        == 200
    )
    # an owner removes the group's binding: the same token loses access at its next request
    owner = oidc_issuer.token(**OWNER_A)  # type: ignore[arg-type]
    ok(call(server, "POST", f"{API_PREFIX}/tenants/team-a/members", owner,
            json={"role": "viewer", "subject_kind": "group", "subject": "temp-readers"}))  # fmt: skip
    reader = oidc_issuer.token(sub="tim", groups=["temp-readers"])
    assert call(server, "GET", runs, reader).status_code == 200
    members = ok(call(server, "GET", f"{API_PREFIX}/tenants/team-a/members", owner))
    binding = next(m for m in members if m["subject"] == "temp-readers")
    deleted = call(server, "DELETE", f"{API_PREFIX}/tenants/team-a/members/{binding['id']}", owner)
    assert deleted.status_code == 204
    assert call(server, "GET", runs, reader).status_code == 403


def test_a_deactivated_user_is_refused(
    server: ServerProcess, oidc_issuer: OidcIssuer, db: MetadataStore, tenants: dict[str, str]
) -> None:
    token = oidc_issuer.token(sub="dave", groups=["a-viewers"])
    runs = f"{API_PREFIX}/tenants/team-a/runs"
    assert call(server, "GET", runs, token).status_code == 200
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(User(id=new_id(), external_id="dave", user_name="dave", active=False,
                   created_at=now, updated_at=now, deactivated_at=now))  # fmt: skip
    response = call(server, "GET", runs, token)
    assert response.status_code == 401 and "deactivated" in response.json()["detail"]


# -- API tokens -----------------------------------------------------------------------------
def test_api_tokens(
    server: ServerProcess, oidc_issuer: OidcIssuer, db: MetadataStore, tenants: dict[str, str]
) -> None:
    base = f"{API_PREFIX}/tenants/team-a"
    owner = oidc_issuer.token(**OWNER_A)  # type: ignore[arg-type]
    created = ok(call(server, "POST", f"{base}/tokens", owner,
                      json={"name": "ci", "role": "editor", "expires_in_days": 30}))  # fmt: skip
    token = created["token"]
    assert token.startswith("argosy_") and created["prefix"] == token[:12]
    listed = ok(call(server, "GET", f"{base}/tokens", owner))
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    # it acts with its role in its tenant only
    assert call(server, "GET", f"{base}/runs", token).status_code == 200
    assert call(server, "GET", f"{base}/members", token).status_code == 403
    assert call(server, "GET", f"{API_PREFIX}/tenants/mx-a/runs", token).status_code == 403
    me = ok(call(server, "GET", f"{API_PREFIX}/me", token))
    assert me["kind"] == "service" and me["roles"] == {"team-a": "editor"}
    # a token never exceeds its creator's role
    editor = oidc_issuer.token(**EDITOR)  # type: ignore[arg-type]
    assert (
        call(
            server,
            "POST",
            f"{base}/tokens",
            editor,
            json={"name": "x", "role": "viewer", "expires_in_days": 1},
        ).status_code
        == 403
    )
    owner_token = ok(
        call(
            server,
            "POST",
            f"{base}/tokens",
            owner,
            json={"name": "own", "role": "owner", "expires_in_days": 1},
        )
    )["token"]
    # an owner token can mint tokens, but not above owner; an editor one cannot at all
    too_high = call(server, "POST", f"{base}/tokens", token,
                    json={"name": "y", "role": "owner", "expires_in_days": 1})  # fmt: skip
    assert too_high.status_code == 403
    assert (
        call(
            server,
            "POST",
            f"{base}/tokens",
            owner_token,
            json={"name": "z", "role": "owner", "expires_in_days": 1},
        ).status_code
        == 201
    )
    # revoked: refused with a clear message
    ok(call(server, "DELETE", f"{base}/tokens/{created['id']}", owner))
    revoked = call(server, "GET", f"{base}/runs", token)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    # expired
    expiring = ok(call(server, "POST", f"{base}/tokens", owner,
                       json={"name": "old", "role": "viewer", "expires_in_days": 1}))  # fmt: skip
    from sqlalchemy import update

    from argosy.stores.metadata.tables import ApiToken

    with db.session() as s:
        s.execute(update(ApiToken).where(ApiToken.id == expiring["id"])
                  .values(expires_at=datetime(2020, 1, 1, tzinfo=UTC)))  # fmt: skip
    expired = call(server, "GET", f"{base}/runs", expiring["token"])
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert call(server, "GET", f"{base}/runs", "argosy_not-a-real-token").status_code == 401


def test_token_role_is_capped_by_the_creator(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str]
) -> None:
    """A token-owner principal that is only editor cannot mint an owner token (unit level)."""
    from argosy.auth.tokens import create_token
    from argosy.errors import UsageError

    with pytest.raises(UsageError, match="cannot create a token with the owner role"):
        create_token(
            cast(Any, None), tenant="t", name="n", role=Role.owner,
            lifetime=__import__("datetime").timedelta(days=1), created_by="u",
            creator_role=Role.editor, now=datetime.now(UTC),
        )  # fmt: skip


# -- fail closed ----------------------------------------------------------------------------
def test_the_server_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "argosy.server.serve", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "ARGOSY_OIDC_ISSUER" in lines[0] and "--insecure-dev" in lines[0]
    # insecure development mode: loopback only
    env["ARGOSY_INSECURE_DEV"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "argosy.server.serve", "--port", "0", "--host", "0.0.0.0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "0.0.0.0" in done.stderr and "--insecure-dev" in done.stderr


def test_insecure_dev_announces_itself(tmp_path: Path) -> None:
    server = start_server(tmp_path / "dev")
    try:
        response = httpx.get(f"{server.url}{API_PREFIX}/me", timeout=10)
        assert response.headers["x-argosy-insecure"] == "true"
        assert response.json()["kind"] == "local" and response.json()["insecure"] is True
        assert "INSECURE" in server.log()
    finally:
        server.stop(timeout=20)


# -- the CLI --------------------------------------------------------------------------------
def test_cli_tenants_members_tokens_and_login(
    server: ServerProcess, oidc_issuer: OidcIssuer, tenants: dict[str, str], tmp_path: Path
) -> None:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    base.update(ARGOSY_SERVER=server.url, XDG_CONFIG_HOME=str(tmp_path / "config"),
                ARGOSY_HOME=str(tmp_path / "state"))  # fmt: skip

    def argosy(*args: str, token: str | None = None, tenant: str = "default") -> Any:
        env = dict(base, ARGOSY_TENANT=tenant)
        if token:
            env["ARGOSY_TOKEN"] = token
        return subprocess.run([sys.executable, "-m", "argosy.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    admin = oidc_issuer.token(**ADMIN)  # type: ignore[arg-type]
    done = argosy("login", "--token", admin)
    assert done.returncode == 0, done.stderr
    assert "root-admin" in done.stdout
    stored = tmp_path / "config" / "argosy" / "credentials"
    assert stored.stat().st_mode & 0o777 == 0o600
    # the stored token is used when ARGOSY_TOKEN is unset
    assert argosy("tenants", "create", "cli-team").returncode == 0
    done = argosy("members", "add", "--role", "owner", "--group", "cli-owners", tenant="cli-team")
    assert done.returncode == 0, done.stderr
    listed = json.loads(argosy("members", "list", "-o", "json", tenant="cli-team").stdout)
    assert [(m["role"], m["subject"]) for m in listed["members"]] == [("owner", "cli-owners")]
    owner = oidc_issuer.token(sub="cleo", groups=["cli-owners"])
    done = argosy("tokens", "create", "ci", "--role", "editor", "--expires-in", "30d",
                  token=owner, tenant="cli-team")  # fmt: skip
    assert done.returncode == 0, done.stderr
    api_token = done.stdout.splitlines()[0]
    assert api_token.startswith("argosy_")
    tokens = json.loads(
        argosy("tokens", "list", "-o", "json", token=owner, tenant="cli-team").stdout
    )
    assert api_token not in json.dumps(tokens)
    assert argosy("tokens", "list", token=api_token, tenant="cli-team").returncode == 3
    done = argosy("tenants", "create", "nope", token=owner)
    assert done.returncode == 3 and "403" in done.stderr and "platform admin" in done.stderr
    assert argosy("tokens", "revoke", tokens["tokens"][0]["id"], token=owner,
                  tenant="cli-team").returncode == 0  # fmt: skip
    done = argosy("tenants", "list", token=api_token)
    assert done.returncode == 3 and "revoked" in done.stderr
