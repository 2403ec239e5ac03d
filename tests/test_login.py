"""Browser login (authorization code + PKCE, session and CSRF cookies, logout) and CLI device
login, against a real server process and the real test issuer (``tests.oidc_issuer``).

Redirects are followed by hand so every hop is checked; cookies are sent as a ``Cookie``
header (the Secure ones would not be sent over http by a cookie jar).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from argosy.api import API_PREFIX
from argosy.ids import new_id
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import AuditEvent, User
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

CLIENT_ID = "argosy-web"


@pytest.fixture(scope="module")
def server(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("login-server")
    env = oidc_env(oidc_issuer.issuer, ARGOSY_OIDC_CLIENT_ID=CLIENT_ID,
                   ARGOSY_SESSION_COOKIE_SECURE="false")  # fmt: skip
    started = start_server(home, env)
    oidc_issuer.add_user("ada", ["platform-admins"], name="Ada L.")
    yield started
    started.stop(timeout=20)


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[MetadataStore]:
    store = MetadataStore.open(f"sqlite:///{server.home / 'argosy.db'}")
    yield store
    store.close()


# -- helpers ----------------------------------------------------------------------------------
def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """name -> {"value": ..., attribute (lowercase) -> value or ""} of each Set-Cookie."""
    found: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = [p.strip() for p in header.split(";")]
        name, _, value = first.partition("=")
        entry = {"value": value.strip('"')}
        for attribute in attributes:
            key, _, val = attribute.partition("=")
            entry[key.lower()] = val
        found[name] = entry
    return found


def cookie_header(**cookies: str) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


@dataclass
class Started:
    """A login sent to the issuer: the issuer URL, the state and the binding cookie."""

    authorize_url: str
    state: str
    binding: str


def start_login(server: ServerProcess, user: str, next: str | None = None,
                host: str | None = None) -> Started:  # fmt: skip
    params = {"login_hint": user}
    if next is not None:
        params["next"] = next
    headers = {"Host": host} if host else {}
    r = httpx.get(f"{server.url}/auth/login", params=params, headers=headers, timeout=30)
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["scope"] == ["openid profile groups"] and query["nonce"][0]
    binding = set_cookies(r)["argosy_login"]
    assert "httponly" in binding and binding["samesite"].lower() == "lax"
    return Started(location, query["state"][0], binding["value"])


def at_issuer(started: Started) -> str:
    """The callback URL the issuer redirects the browser to."""
    r = httpx.get(started.authorize_url, timeout=30)
    assert r.status_code == 302, r.text
    return str(r.headers["location"])


def callback(server: ServerProcess, url: str, binding: str | None, host: str | None = None,
             **replace: str) -> httpx.Response:  # fmt: skip
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(replace)
    headers = cookie_header(argosy_login=binding) if binding else {}
    if host:
        headers["Host"] = host
    return httpx.get(f"{server.url}{parts.path}", params=query, headers=headers, timeout=30)


@dataclass
class Browser:
    session: str
    csrf: str
    landing: str
    cookies: dict[str, dict[str, str]]

    def headers(self, csrf: str | None = None) -> dict[str, str]:
        found = cookie_header(argosy_session=self.session, argosy_csrf=self.csrf)
        if csrf is not None:
            found["X-CSRF-Token"] = csrf
        return found


def browser_login(server: ServerProcess, user: str, next: str | None = None,
                  host: str | None = None) -> Browser:  # fmt: skip
    started = start_login(server, user, next, host)
    r = callback(server, at_issuer(started), started.binding, host)
    assert r.status_code == 302, r.text
    cookies = set_cookies(r)
    return Browser(cookies["argosy_session"]["value"], cookies["argosy_csrf"]["value"],
                   r.headers["location"], cookies)  # fmt: skip


def me(server: ServerProcess, browser: Browser) -> httpx.Response:
    return httpx.get(f"{server.url}{API_PREFIX}/me", headers=browser.headers(), timeout=30)


def audit_events(db: MetadataStore, action: str) -> list[AuditEvent]:
    with db.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# -- browser login ----------------------------------------------------------------------------
def test_browser_login_sets_session_cookies(server: ServerProcess, db: MetadataStore) -> None:
    browser = browser_login(server, "ada", next="/runs?page=2")
    assert browser.landing == "/runs?page=2"
    session, csrf = browser.cookies["argosy_session"], browser.cookies["argosy_csrf"]
    assert len(base64.urlsafe_b64decode(session["value"] + "=")) == 32
    assert "httponly" in session and session["samesite"].lower() == "lax"
    assert session["path"] == "/" and int(session["max-age"]) == 8 * 3600
    assert "secure" not in session  # ARGOSY_SESSION_COOKIE_SECURE=false on 127.0.0.1
    assert "httponly" not in csrf and csrf["samesite"].lower() == "lax"  # the page reads it
    assert browser.cookies["argosy_login"]["max-age"] == "0"  # the login cookie is cleared
    found = me(server, browser)
    assert found.status_code == 200, found.text
    doc = found.json()
    assert doc["subject"] == "ada" and doc["name"] == "Ada L." and doc["platform_admin"]
    assert doc["groups"] == ["platform-admins"]
    # the database holds hashes only
    with db.session() as s:
        from argosy.stores.metadata.tables import BrowserSession

        row = s.get(BrowserSession, hashlib.sha256(browser.session.encode()).hexdigest())
        assert row is not None and row.subject == "ada"
        assert row.csrf_hash == hashlib.sha256(browser.csrf.encode()).hexdigest()
    assert any(e.actor == "ada" and e.outcome == "allowed" for e in audit_events(db, "auth.login"))


def test_cookies_are_secure_except_on_localhost(server: ServerProcess) -> None:
    """With the setting off, only a localhost request gets cookies without Secure."""
    browser = browser_login(server, "ada", host="argosy.example")
    for name in ("argosy_session", "argosy_csrf"):
        assert "secure" in browser.cookies[name], browser.cookies[name]


def test_secure_cookies_when_the_setting_is_on(oidc_issuer: OidcIssuer, tmp_path: Path) -> None:
    env = oidc_env(oidc_issuer.issuer, ARGOSY_OIDC_CLIENT_ID=CLIENT_ID)
    secure_server = start_server(tmp_path / "secure", env)
    try:
        browser = browser_login(secure_server, "ada")
        for name in ("argosy_session", "argosy_csrf"):
            attributes = browser.cookies[name]
            assert "secure" in attributes and attributes["samesite"].lower() == "lax"
        assert "httponly" in browser.cookies["argosy_session"]
        assert me(secure_server, browser).status_code == 200
    finally:
        secure_server.stop(timeout=20)


def test_csrf_is_required_for_cookie_changes(server: ServerProcess) -> None:
    browser = browser_login(server, "ada")
    url = f"{server.url}{API_PREFIX}/tenants"
    for csrf in (None, "wrong-token", ""):
        r = httpx.post(url, json={"name": "csrf-team"}, headers=browser.headers(csrf))
        assert r.status_code == 403, r.text
        assert "CSRF" in r.json()["detail"]
    # the header must match the session's token, not just the (attacker-set) cookie
    forged = cookie_header(argosy_session=browser.session, argosy_csrf="x" * 43)
    r = httpx.post(url, json={"name": "csrf-team"}, headers={**forged, "X-CSRF-Token": "x" * 43})
    assert r.status_code == 403
    r = httpx.post(url, json={"name": "csrf-team"}, headers=browser.headers(browser.csrf))
    assert r.status_code == 201, r.text
    # reads need no CSRF token
    assert httpx.get(f"{url}/csrf-team", headers=browser.headers()).status_code == 200


def test_logout_revokes_the_session(server: ServerProcess, db: MetadataStore) -> None:
    browser = browser_login(server, "ada")
    logout = f"{server.url}/auth/logout"
    assert httpx.post(logout, headers=browser.headers()).status_code == 403  # no CSRF token
    assert me(server, browser).status_code == 200
    r = httpx.post(logout, headers=browser.headers(browser.csrf))
    assert r.status_code == 204, r.text
    cleared = set_cookies(r)
    assert cleared["argosy_session"]["max-age"] == "0" and cleared["argosy_csrf"]["max-age"] == "0"
    r = me(server, browser)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert any(e.actor == "ada" for e in audit_events(db, "auth.logout"))


def test_tampered_or_foreign_state_is_refused(server: ServerProcess, db: MetadataStore) -> None:
    started = start_login(server, "ada")
    url = at_issuer(started)
    tampered = started.state[:-2] + ("AA" if not started.state.endswith("AA") else "BB")
    r = callback(server, url, started.binding, state=tampered)
    assert r.status_code == 400 and "state" in r.json()["detail"]
    assert "set-cookie" not in r.headers
    # the right state, but from another browser (no or another binding cookie)
    started = start_login(server, "ada")
    r = callback(server, at_issuer(started), None)
    assert r.status_code == 400 and "another browser" in r.json()["detail"]
    r = callback(server, f"{server.url}/auth/callback?code=x", started.binding)
    assert r.status_code == 400
    assert any(e.outcome == "failed" for e in audit_events(db, "auth.login"))


def test_a_replayed_code_is_refused(server: ServerProcess) -> None:
    started = start_login(server, "ada")
    url = at_issuer(started)
    assert callback(server, url, started.binding).status_code == 302
    # the same callback again: the state is used up
    r = callback(server, url, started.binding)
    assert r.status_code == 400 and "used" in r.json()["detail"]
    # the old code with a fresh login's state: the issuer refuses the spent code
    fresh = start_login(server, "ada")
    code = parse_qs(urlsplit(url).query)["code"][0]
    r = callback(server, at_issuer(fresh), fresh.binding, code=code)
    assert r.status_code == 400 and "invalid_grant" in r.json()["detail"], r.text


def test_pkce_verifier_mismatch_is_refused(server: ServerProcess, oidc_issuer: OidcIssuer) -> None:
    # a code issued for login A, redeemed with login B's verifier (through Argosy)
    a, b = start_login(server, "ada"), start_login(server, "ada")
    code_a = parse_qs(urlsplit(at_issuer(a)).query)["code"][0]
    r = callback(server, at_issuer(b), b.binding, code=code_a)
    assert r.status_code == 400 and "invalid_grant" in r.json()["detail"], r.text
    # and directly at the issuer
    c = start_login(server, "ada")
    query = {k: v[0] for k, v in parse_qs(urlsplit(c.authorize_url).query).items()}
    code = parse_qs(urlsplit(at_issuer(c)).query)["code"][0]
    r = httpx.post(f"{oidc_issuer.issuer}/token", data={
        "grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID,
        "redirect_uri": query["redirect_uri"], "code_verifier": "x" * 64,
    })  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "PKCE" in r.json()["error_description"]


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "evil", "/a\r\nb"]
)
def test_open_redirects_are_refused(server: ServerProcess, target: str) -> None:
    r = httpx.get(f"{server.url}/auth/login", params={"next": target}, timeout=30)
    assert r.status_code == 400, r.text
    assert "next" in r.json()["detail"] and "location" not in r.headers


def test_a_deactivated_user_cannot_log_in_and_loses_the_session(
    server: ServerProcess, db: MetadataStore
) -> None:
    browser = browser_login(server, "dora")
    assert me(server, browser).status_code == 200
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(User(id=new_id(), external_id="dora", user_name="dora", display_name=None,
                   emails=None, active=False, created_at=now, updated_at=now,
                   deactivated_at=now))  # fmt: skip
    assert me(server, browser).status_code == 401
    started = start_login(server, "dora")
    r = callback(server, at_issuer(started), started.binding)
    assert r.status_code == 403 and "deactivated" in r.json()["detail"]
    assert "set-cookie" not in r.headers or "argosy_session" not in set_cookies(r)
    denied = [e for e in audit_events(db, "auth.login") if e.actor == "dora"]
    assert any(e.outcome == "denied" for e in denied)


def test_an_identity_provider_refusal_is_a_403(server: ServerProcess) -> None:
    started = start_login(server, "deny")
    url = at_issuer(started)
    assert "error=access_denied" in url
    r = callback(server, url, started.binding)
    assert r.status_code == 403 and "access_denied" in r.json()["detail"]


# -- CLI device login -------------------------------------------------------------------------
def test_auth_config_names_the_device_endpoint(
    server: ServerProcess, oidc_issuer: OidcIssuer
) -> None:
    doc = httpx.get(f"{server.url}{API_PREFIX}/auth/config").json()
    assert doc["client_id"] == CLIENT_ID and doc["issuer"] == oidc_issuer.issuer
    assert doc["device_authorization_endpoint"] == f"{oidc_issuer.issuer}/device_authorization"


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               ARGOSY_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1")  # fmt: skip
    return env


def _start_device_login(server: ServerProcess, env: dict[str, str]) -> tuple[Any, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "argosy.cli.main", "login", "--server", server.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "enter the code" in line, (line, process.stderr.read() if process.stderr else "")
    return process, line.rsplit(" ", 1)[1].strip()


def test_device_login_through_the_cli(
    server: ServerProcess, oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    env = _cli_env(tmp_path)
    process, user_code = _start_device_login(server, env)
    _wait_for_polls(oidc_issuer, user_code, 1)  # the CLI polls: authorization_pending
    approved = oidc_issuer.device("approve", user_code, sub="devon")
    assert approved.status_code == 200, approved.text
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "logged in" in out and "devon" in out
    stored = json.loads((tmp_path / "config" / "argosy" / "credentials").read_text())
    entry = stored[server.url]
    assert entry["access_token"] and entry["refresh_token"]
    done = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "tenants", "list"],
        env=dict(env, ARGOSY_SERVER=server.url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    # the access token expires: the next command trades the refresh token once, transparently
    path = tmp_path / "config" / "argosy" / "credentials"
    expired = oidc_issuer.token(sub="devon", exp_in=-600, iat_in=-900)
    path.write_text(json.dumps({server.url: dict(entry, access_token=expired)}))
    again = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "tenants", "list"],
        env=dict(env, ARGOSY_SERVER=server.url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    renewed = json.loads(path.read_text())[server.url]
    assert renewed["access_token"] != expired
    assert renewed["refresh_token"] != entry["refresh_token"]  # rotated by the issuer

    # a refresh token that no longer works: one line, exit 3, saying to log in again
    path.write_text(json.dumps({server.url: dict(entry, access_token=expired)}))  # used one
    refused = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "tenants", "list"],
        env=dict(env, ARGOSY_SERVER=server.url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 3 and len(refused.stderr.strip().splitlines()) == 1
    assert "argosy login" in refused.stderr


@pytest.mark.parametrize("action", ["expire", "deny"])
def test_device_login_refused_or_expired_exits_3(
    server: ServerProcess, oidc_issuer: OidcIssuer, tmp_path: Path, action: str
) -> None:
    process, user_code = _start_device_login(server, _cli_env(tmp_path))
    assert oidc_issuer.device(action, user_code).status_code == 200
    out, err = process.communicate(timeout=30)
    assert process.returncode == 3, (out, err)
    assert len(err.strip().splitlines()) == 1
    assert ("expired" if action == "expire" else "refused") in err
    assert not (tmp_path / "config" / "argosy" / "credentials").exists()


def _wait_for_polls(oidc_issuer: OidcIssuer, user_code: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 60
    while len(polls := oidc_issuer.device_polls(user_code)) < count:
        assert time.monotonic() < deadline, f"the CLI polled {len(polls)} times, not {count}"
        time.sleep(0.05)
    return polls


def test_the_cli_waits_5_s_longer_after_slow_down(
    server: ServerProcess, oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    """RFC 8628 3.5: after a ``slow_down`` answer the CLI adds 5 s to its polling interval
    (the issuer's interval is 1 s). Measured on the issuer's clock, between the polls it saw."""
    process, user_code = _start_device_login(server, _cli_env(tmp_path))
    _wait_for_polls(oidc_issuer, user_code, 1)
    assert oidc_issuer.device("slow_down", user_code).status_code == 200
    polls = _wait_for_polls(oidc_issuer, user_code, 3)
    assert oidc_issuer.device("approve", user_code, sub="sam").status_code == 200
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    (_, first), (slowed_at, second), (next_at, third) = polls[:3]
    assert (first, second, third) == ("pending", "slow_down", "pending")
    assert next_at - slowed_at >= 6 - 0.05  # 1 s interval + 5 s


def test_the_test_issuer_answers_fast_pollers_with_slow_down(oidc_issuer: OidcIssuer) -> None:
    """(The test issuer's own behaviour, which the CLI tests above rely on.)"""
    start = httpx.post(f"{oidc_issuer.issuer}/device_authorization",
                       data={"client_id": CLIENT_ID, "scope": "openid"}).json()  # fmt: skip
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start["device_code"], "client_id": CLIENT_ID}  # fmt: skip
    first = httpx.post(f"{oidc_issuer.issuer}/token", data=form).json()
    second = httpx.post(f"{oidc_issuer.issuer}/token", data=form).json()
    assert first["error"] == "authorization_pending" and second["error"] == "slow_down"
