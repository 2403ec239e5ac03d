"""API tokens minted by tokens (issue 13, defect 1), through a live server on SQLite and
PostgreSQL: a token's authority is checked along its whole chain at every use — deactivating
the user, demoting them (a binding or a group they lost) or revoking a parent takes effect at
the next request of every token below."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from argosy.api import API_PREFIX
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.security_fixture import BACKENDS, Live, secure_server

SCIM_TOKEN = "chains-scim-token-0123456789"
SCIM = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest,
    oidc_issuer: OidcIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    with secure_server(
        request, oidc_issuer, tmp_path_factory, "chains", ARGOSY_SCIM_TOKEN=SCIM_TOKEN
    ) as found:
        yield found


def mint(live: Live, tenant: str, by: str, role: str = "owner", name: str = "t") -> dict[str, Any]:
    created: dict[str, Any] = live.ok(
        "POST", f"{API_PREFIX}/tenants/{tenant}/tokens", by,
        json={"name": name, "role": role, "expires_in_days": 365},
    )  # fmt: skip
    return created


def status(live: Live, method: str, tenant: str, path: str, token: str, **kw: Any) -> int:
    return live.call(method, f"{API_PREFIX}/tenants/{tenant}{path}", token, **kw).status_code


def can_mint(live: Live, tenant: str, token: str) -> int:
    return status(live, "POST", tenant, "/tokens", token,
                  json={"name": "x", "role": "owner", "expires_in_days": 365})  # fmt: skip


def test_a_token_minted_by_a_token_dies_with_its_deprovisioned_user(live: Live) -> None:
    """The attack: user -> T1 -> T2; SCIM deactivates the user; T2 must not live on."""
    user = live.ok("POST", "/scim/v2/Users", headers=SCIM, json={
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "uma@example.com", "externalId": "uma", "active": True,
    })  # fmt: skip
    live.ok("POST", "/scim/v2/Groups", headers=SCIM, json={
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "deprov-owners", "members": [{"value": user["id"]}],
    })  # fmt: skip
    tenant = live.tenant("deprov", ("owner", "group", "deprov-owners"))
    uma = live.token("uma", ["deprov-owners"])
    t1 = mint(live, tenant, uma)["token"]
    t2 = mint(live, tenant, t1)["token"]
    t3 = mint(live, tenant, t2)["token"]  # a chain three deep
    assert all(status(live, "GET", tenant, "/runs", t) == 200 for t in (uma, t1, t2, t3))

    live.ok("PATCH", f"/scim/v2/Users/{user['id']}", headers=SCIM, json={
        "schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": False}],
    })  # fmt: skip
    for token in (uma, t1, t2, t3):
        refused = live.call("GET", f"{API_PREFIX}/tenants/{tenant}/runs", token)
        assert refused.status_code == 401, refused.text
    assert can_mint(live, tenant, t2) == 401


def test_demoting_the_user_lowers_every_token_of_their_chains(live: Live) -> None:
    admin = live.admin()
    tenant = live.tenant("demote", ("owner", "user", "dee"))
    dee = live.token("dee")
    t1 = mint(live, tenant, dee)
    t2 = mint(live, tenant, t1["token"])["token"]
    assert can_mint(live, tenant, t2) == 201

    bindings = live.ok("GET", f"{API_PREFIX}/tenants/{tenant}/members", admin)
    (owner,) = [b for b in bindings if b["subject"] == "dee"]
    live.ok("DELETE", f"{API_PREFIX}/tenants/{tenant}/members/{owner['id']}", admin)
    live.ok("POST", f"{API_PREFIX}/tenants/{tenant}/members", admin,
            json={"role": "viewer", "subject_kind": "user", "subject": "dee"})  # fmt: skip
    # an owner token of a viewer: reads, but neither mints nor changes anything
    assert status(live, "GET", tenant, "/runs", t2) == 200
    assert can_mint(live, tenant, t2) == 403
    assert status(live, "POST", tenant, "/runs", t2, json={"pipeline": "nope"}) == 403
    assert live.ok("GET", f"{API_PREFIX}/me", t2)["roles"] == {tenant: "viewer"}

    (viewer,) = live.ok("GET", f"{API_PREFIX}/tenants/{tenant}/members", admin)
    live.ok("DELETE", f"{API_PREFIX}/tenants/{tenant}/members/{viewer['id']}", admin)
    assert status(live, "GET", tenant, "/runs", t2) == 403  # no role left at all


def test_a_group_lost_at_the_latest_login_lowers_the_tokens(live: Live) -> None:
    tenant = live.tenant("regroup", ("owner", "group", "rg-owners"))
    gus = live.token("gus", ["rg-owners"])
    t1 = mint(live, tenant, gus)["token"]
    assert can_mint(live, tenant, t1) == 201
    # gus logs in again, no longer in the group: the server now knows gus without it
    assert live.call("GET", f"{API_PREFIX}/me", live.token("gus", [])).status_code == 200
    assert status(live, "GET", tenant, "/runs", t1) == 403
    assert can_mint(live, tenant, t1) == 403


def test_revoking_a_token_revokes_what_it_minted(live: Live) -> None:
    tenant = live.tenant("revoke", ("owner", "user", "rita"))
    rita = live.token("rita")
    t1 = mint(live, tenant, rita, name="parent")
    t2 = mint(live, tenant, t1["token"], name="child")
    t3 = mint(live, tenant, t2["token"], role="viewer", name="grandchild")
    assert status(live, "GET", tenant, "/runs", t3["token"]) == 200
    live.ok("DELETE", f"{API_PREFIX}/tenants/{tenant}/tokens/{t1['id']}", rita)
    for token in (t1, t2, t3):
        refused = live.call("GET", f"{API_PREFIX}/tenants/{tenant}/runs", token["token"])
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    listed = {t["name"]: t for t in live.ok("GET", f"{API_PREFIX}/tenants/{tenant}/tokens", rita)}
    assert all(listed[n]["revoked_at"] for n in ("parent", "child", "grandchild"))


def test_a_token_never_mints_above_its_chain(live: Live) -> None:
    tenant = live.tenant("capped", ("editor", "user", "eve"), ("owner", "user", "oscar"))
    oscar = live.token("oscar")
    editor_token = mint(live, tenant, oscar, role="editor")["token"]
    assert can_mint(live, tenant, editor_token) == 403  # editors do not manage tokens
    owner_token = mint(live, tenant, oscar)["token"]
    viewer = mint(live, tenant, owner_token, role="viewer")["token"]
    assert status(live, "POST", tenant, "/runs", viewer, json={"pipeline": "nope"}) == 403
