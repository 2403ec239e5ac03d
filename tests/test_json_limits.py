"""JSON inputs are bounded in depth and size before validation (issue 13, defect 5), through a
live server on SQLite and PostgreSQL: a deeply nested value is refused with 422 naming the
limit — never stored to break later reads — on every JSON route, SCIM included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from argosy.api import API_PREFIX
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.security_fixture import BACKENDS, Live, secure_server

SCIM_TOKEN = "json-scim-token-0123456789"
LIMIT = 32  # the default max_json_depth


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest,
    oidc_issuer: OidcIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    with secure_server(
        request, oidc_issuer, tmp_path_factory, "json", ARGOSY_SCIM_TOKEN=SCIM_TOKEN
    ) as found:
        found.tenant("deep", ("owner", "user", "otto"))
        yield found


def nested(levels: int) -> Any:
    """A value ``levels`` deep: [[[...{"leaf": 1}...]]] (lists, and one object at the bottom)."""
    value: Any = {"leaf": 1}
    for _ in range(levels - 1):
        value = [value]
    return value


def test_deep_tenant_settings_are_refused_and_reads_keep_working(live: Live) -> None:
    """The attack: an owner stores 300-level settings; the tenant and the admins' tenant list
    then answered 500 for everyone."""
    otto = live.token("otto")
    path = f"{API_PREFIX}/tenants/deep/settings"
    deep = live.call("PATCH", path, otto, json={"settings": {"x": nested(300)}})
    assert deep.status_code == 422, deep.text
    problem = deep.json()
    assert problem["code"] == "json_too_deep" and str(LIMIT) in problem["detail"]
    assert live.call("GET", f"{API_PREFIX}/tenants/deep", otto).status_code == 200
    assert live.call("GET", f"{API_PREFIX}/tenants", live.admin()).status_code == 200
    # the deepest a body may be (the settings object is 2 levels down) round-trips
    fine = live.call("PATCH", path, otto, json={"settings": {"x": nested(LIMIT - 2)}})
    assert fine.status_code == 200, fine.text
    assert live.ok("GET", f"{API_PREFIX}/tenants/deep", otto)["settings"]["x"] == nested(LIMIT - 2)
    assert live.call("GET", f"{API_PREFIX}/tenants", live.admin()).status_code == 200


def test_deep_schedule_parameters_are_refused(live: Live) -> None:
    otto = live.token("otto")
    body = {"name": "s", "pipeline": "p", "cron": "0 * * * *", "parameters": {"x": nested(300)}}
    refused = live.call("POST", f"{API_PREFIX}/tenants/deep/schedules", otto, json=body)
    assert refused.status_code == 422 and refused.json()["code"] == "json_too_deep"
    assert live.call("GET", f"{API_PREFIX}/tenants/deep/schedules", otto).status_code == 200


def test_scim_answers_422_not_500_to_a_100000_level_body(live: Live) -> None:
    body = "[" * 100_000 + "]" * 100_000
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}
    for method, path in (("POST", "/scim/v2/Users"), ("POST", "/scim/v2/Groups")):
        refused = live.call(method, path, content=body.encode(), headers=headers)
        assert refused.status_code == 422, refused.text
    # brackets inside strings are data, not depth
    user = {"userName": "[" * 200 + "@example.com", "externalId": "brackets", "active": True}
    created = live.call("POST", "/scim/v2/Users", content=json.dumps(user).encode(),
                        headers=headers)  # fmt: skip
    assert created.status_code == 201, created.text
