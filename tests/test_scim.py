"""SCIM 2.0 against a real server process: Entra-ID-style and Okta-style payloads, filters and
paging, groups, discovery, SCIM errors, and deprovisioning that revokes sessions and API
tokens at once, refuses the user's next OIDC token, and is audited."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from argosy.auth import audit
from argosy.ids import new_id
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import ApiToken, BrowserSession, User
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

TOKEN = "scim-test-token-0123456789"
SCIM = "application/scim+json"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture(scope="module")
def server(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("scim-server")
    started = start_server(home, oidc_env(oidc_issuer.issuer, ARGOSY_SCIM_TOKEN=TOKEN))
    yield started
    started.stop(timeout=20)


@pytest.fixture(scope="module")
def db(server: ServerProcess) -> Iterator[MetadataStore]:
    store = MetadataStore.open(f"sqlite:///{server.home / 'argosy.db'}")
    yield store
    store.close()


def scim(
    server: ServerProcess, method: str, path: str, body: Any = None, token: str | None = TOKEN,
    **params: Any,
) -> httpx.Response:  # fmt: skip
    headers = {"Content-Type": SCIM, "Accept": SCIM}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = json.dumps(body) if body is not None else None
    return httpx.request(
        method, f"{server.url}/scim/v2{path}", headers=headers, content=content,
        params=params or None, timeout=30,
    )  # fmt: skip


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    if response.content:
        assert response.headers["content-type"].startswith(SCIM)
        return response.json()
    return None


def error(response: httpx.Response, status: int, scim_type: str | None = None) -> None:
    assert response.status_code == status, response.text
    doc = response.json()
    assert doc["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert doc["status"] == str(status) and doc["detail"]
    if scim_type:
        assert doc["scimType"] == scim_type


def _credentials(db: MetadataStore, subject: str) -> tuple[str, str]:
    """A live browser session and an API token of ``subject`` (as login and 'tokens create'
    would store them)."""
    now = datetime.now(UTC)
    session_id = hashlib.sha256(new_id().encode()).hexdigest()
    token_id = new_id()
    with db.session() as s:
        s.add(BrowserSession(
            id=session_id, subject=subject, claims={"name": subject}, csrf_hash="0" * 64,
            created_at=now, expires_at=now + timedelta(hours=8), revoked_at=None,
        ))  # fmt: skip
        s.add(ApiToken(
            id=token_id, tenant="default", created_at=now, created_by=subject, name="ci",
            role="editor", token_hash=hashlib.sha256(token_id.encode()).hexdigest(),
            prefix="argosy_x", expires_at=now + timedelta(days=1), revoked_at=None,
            last_used_at=None,
        ))  # fmt: skip
    return session_id, token_id


def _revoked(db: MetadataStore, session_id: str, token_id: str) -> tuple[bool, bool]:
    with db.session() as s:
        session_row = s.get(BrowserSession, session_id)
        token_row = s.get(ApiToken, token_id)
        assert session_row is not None and token_row is not None
        return session_row.revoked_at is not None, token_row.revoked_at is not None


def test_scim_needs_its_bearer_token_and_is_off_without_one(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    error(scim(server, "GET", "/Users", token=None), 401)
    error(scim(server, "GET", "/Users", token="wrong"), 401)
    assert (
        scim(server, "GET", "/Users", token=None).headers["www-authenticate"].startswith("Bearer")
    )
    off = start_server(tmp_path_factory.mktemp("no-scim"), {"ARGOSY_INSECURE_DEV": "true"})
    try:
        got = httpx.get(f"{off.url}/scim/v2/Users", headers={"Authorization": "Bearer x"})
        assert got.status_code == 404
    finally:
        off.stop(timeout=20)


def test_discovery_documents(server: ServerProcess) -> None:
    config = ok(scim(server, "GET", "/ServiceProviderConfig"))
    assert config["patch"]["supported"] is True and config["bulk"]["supported"] is False
    schemas = ok(scim(server, "GET", "/Schemas"))
    assert {r["name"] for r in schemas["Resources"]} == {"User", "Group"}
    types = ok(scim(server, "GET", "/ResourceTypes"))
    assert {r["endpoint"] for r in types["Resources"]} == {"/Users", "/Groups"}


def test_entra_id_provisioning_and_deprovisioning(
    server: ServerProcess, db: MetadataStore, oidc_issuer: OidcIssuer
) -> None:
    created = ok(scim(server, "POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "entra-oid-1", "userName": "ada@contoso.com", "active": True,
        "displayName": "Ada L", "name": {"givenName": "Ada", "familyName": "L"},
        "emails": [{"primary": True, "type": "work", "value": "ada@contoso.com"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "ML"},
    }), 201)  # fmt: skip
    uid = created["id"]
    assert created["active"] is True and created["externalId"] == "entra-oid-1"
    # Entra checks for an existing user first, by a filter
    found = ok(scim(server, "GET", "/Users", filter='userName eq "ADA@contoso.com"'))
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == uid
    assert ok(scim(server, "GET", "/Users", filter='externalId eq "nobody"'))["totalResults"] == 0
    error(scim(server, "POST", "/Users", {"userName": "ada@contoso.com"}), 409, "uniqueness")
    error(scim(server, "GET", "/Users", filter='userName co "ada"'), 400, "invalidFilter")

    patched = ok(scim(server, "PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "displayName", "value": "Ada Lovelace"},
        {"op": "Add", "path": 'emails[type eq "work"].value', "value": "ada@fabrikam.com"},
        {"op": "Replace", "path": "name.givenName", "value": "Ada"},
    ]}))  # fmt: skip
    assert patched["displayName"] == "Ada Lovelace"
    assert patched["emails"] == [{"value": "ada@fabrikam.com", "type": "work"}]

    token = oidc_issuer.token(sub="entra-oid-1", groups=[])
    me = httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    session_id, token_id = _credentials(db, "entra-oid-1")
    assert _revoked(db, session_id, token_id) == (False, False)

    off = ok(scim(server, "PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]}))  # fmt: skip
    assert off["active"] is False
    assert _revoked(db, session_id, token_id) == (True, True)
    refused = httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "deactivated" in refused.text
    with db.session() as s:
        user = s.scalars(select(User).where(User.id == uid)).one()
        assert user.active is False and user.deactivated_at is not None
        events = [json.loads(line) for line in audit.export(s)]
    gone = [e for e in events if e["action"] == "scim.user.deactivate"]
    assert gone and gone[-1]["detail"] == {
        "user": "entra-oid-1", "userName": "ada@contoso.com", "sessions_revoked": 1,
        "tokens_revoked": 1,
    }  # fmt: skip
    assert gone[-1]["actor"] == "scim" and gone[-1]["outcome"] == "allowed"
    assert TOKEN not in json.dumps(events)

    back = ok(scim(server, "PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "True"}]}))  # fmt: skip
    assert back["active"] is True
    error(scim(server, "PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "maybe"}]}), 400, "invalidValue")  # fmt: skip
    error(scim(server, "PATCH", f"/Users/{uid}", {"Operations": [{"op": "move"}]}), 400)
    error(scim(server, "GET", "/Users/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)


def test_okta_provisioning_paging_and_delete(server: ServerProcess, db: MetadataStore) -> None:
    ids = []
    for i in range(5):
        doc = ok(scim(server, "POST", "/Users", {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"okta{i}@example.com", "externalId": f"00uokta{i}",
            "name": {"givenName": "O", "familyName": str(i)}, "active": True,
            "emails": [{"primary": True, "value": f"okta{i}@example.com", "type": "work"}],
        }), 201)  # fmt: skip
        ids.append(doc["id"])
    total = ok(scim(server, "GET", "/Users"))["totalResults"]
    page = ok(scim(server, "GET", "/Users", startIndex=2, count=2))
    assert page["startIndex"] == 2 and page["itemsPerPage"] == 2 and page["totalResults"] == total
    everything = ok(scim(server, "GET", "/Users", count=200))["Resources"]
    assert [r["id"] for r in page["Resources"]] == [r["id"] for r in everything[1:3]]

    session_id, token_id = _credentials(db, "00uokta0")
    off = ok(scim(server, "PATCH", f"/Users/{ids[0]}", {"schemas": [PATCH], "Operations": [
        {"op": "replace", "value": {"active": False}}]}))  # fmt: skip
    assert off["active"] is False and _revoked(db, session_id, token_id) == (True, True)

    replaced = ok(scim(server, "PUT", f"/Users/{ids[1]}", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": ids[1],
        "userName": "okta1-renamed@example.com", "externalId": "00uokta1", "active": True,
    }))  # fmt: skip
    assert replaced["userName"] == "okta1-renamed@example.com"

    session_id, token_id = _credentials(db, "00uokta2")
    assert scim(server, "DELETE", f"/Users/{ids[2]}").status_code == 204
    assert _revoked(db, session_id, token_id) == (True, True)
    assert ok(scim(server, "GET", f"/Users/{ids[2]}"))["active"] is False


def test_groups_members_add_remove_rename_delete(server: ServerProcess) -> None:
    users = [
        ok(scim(server, "POST", "/Users", {"userName": f"g{i}@example.com"}), 201)["id"]
        for i in range(3)
    ]
    group = ok(scim(server, "POST", "/Groups", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "ml-team",
        "members": [{"value": users[0]}],
    }), 201)  # fmt: skip
    gid = group["id"]
    assert [m["value"] for m in group["members"]] == [users[0]]
    # Entra: add members by path
    ok(scim(server, "PATCH", f"/Groups/{gid}", {"schemas": [PATCH], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": users[1]}, {"value": users[2]}]}]}))  # fmt: skip
    # Okta: remove one member by a value filter, and rename
    doc = ok(scim(server, "PATCH", f"/Groups/{gid}", {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": f'members[value eq "{users[0]}"]'},
        {"op": "replace", "value": {"id": gid, "displayName": "ml-platform"}}]}))  # fmt: skip
    assert {m["value"] for m in doc["members"]} == {users[1], users[2]}
    assert doc["displayName"] == "ml-platform"
    # Entra: remove with a members list value
    doc = ok(scim(server, "PATCH", f"/Groups/{gid}", {"schemas": [PATCH], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"value": users[1]}]}]}))  # fmt: skip
    assert [m["value"] for m in doc["members"]] == [users[2]]
    listed = ok(scim(server, "GET", "/Groups", filter='displayName eq "ml-platform"'))
    assert listed["totalResults"] == 1
    error(scim(server, "PATCH", f"/Groups/{gid}", {"Operations": [
        {"op": "add", "path": "members", "value": [{"value": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}]}]}),
        400)  # fmt: skip
    error(scim(server, "POST", "/Groups", {"displayName": "ml-platform"}), 409, "uniqueness")
    assert scim(server, "DELETE", f"/Groups/{gid}").status_code == 204
    error(scim(server, "GET", f"/Groups/{gid}"), 404)
