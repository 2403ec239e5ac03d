"""Rate limits keyed on who is calling, not on raw headers, and refusals audited in aggregate
(issue 13, defect 6), through a live server on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from argosy.api import API_PREFIX
from argosy.server.limits import client_address, parse_networks, rate_key
from argosy.stores.metadata.tables import AuditEvent
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.security_fixture import BACKENDS, Live, secure_server

PER_MINUTE = 4  # a token back every 15 s: a flood and its probes take far less, even loaded
LIMITED = {"ARGOSY_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
           "ARGOSY_TRUSTED_PROXIES": json.dumps(["10.0.0.0/8"])}  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest,
    oidc_issuer: OidcIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    with secure_server(request, oidc_issuer, tmp_path_factory, "rates", **LIMITED) as found:
        found.tenant("rl", ("viewer", "group", "rl-viewers"))
        yield found


def runs(live: Live, authorization: str, **headers: str) -> int:
    return live.call(
        "GET", f"{API_PREFIX}/tenants/rl/runs", headers={"Authorization": authorization, **headers}
    ).status_code


def spellings(n: int) -> list[str]:
    """``n`` spellings of the scheme ``Bearer`` (bearer, BEARER, bEaReR, ...)."""
    word = "bearer"
    return ["".join(c.upper() if i >> k & 1 else c for k, c in enumerate(word)) for i in range(n)]


def test_spelling_a_credential_differently_gets_no_new_bucket(live: Live) -> None:
    """The attack: 64 case variants of ``Bearer`` gave one token 64 buckets."""
    token = live.token("rhea", ["rl-viewers"])
    codes = [runs(live, f"{scheme} {token}") for scheme in spellings(64)[: 2 * PER_MINUTE]]
    assert codes.count(200) <= PER_MINUTE + 1, codes  # +1: a token refilled meanwhile
    assert codes[-1] == 429
    # another principal is not held back by the first one's flood
    assert runs(live, f"Bearer {live.token('ron', ['rl-viewers'])}") == 200


@pytest.fixture(params=BACKENDS)
def fresh(
    request: pytest.FixtureRequest,
    oidc_issuer: OidcIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """A server of this test's own (its address bucket and audit log untouched)."""
    with secure_server(request, oidc_issuer, tmp_path_factory, "flood", **LIMITED) as found:
        found.tenant("rl", ("viewer", "group", "rl-viewers"))
        yield found


def test_anonymous_and_failed_requests_share_their_address_bucket(fresh: Live) -> None:
    """The attack: each junk bearer string got a fresh bucket (unlimited requests, each one an
    audit write). Now failures count against the client address — a spoofed X-Forwarded-For
    from a peer that is not a trusted proxy changes nothing — and are audited in aggregate."""
    codes = [
        runs(fresh, f"Bearer junk-{i}", **{"X-Forwarded-For": f"10.9.{i // 250}.{i % 250}"})
        for i in range(2 * PER_MINUTE)
    ]
    assert codes.count(401) <= PER_MINUTE + 1, codes
    assert codes[-1] == 429
    # an API token that does not exist, and no credentials at all: the same bucket
    assert runs(fresh, "Bearer argosy_nope") == 429
    assert fresh.call("GET", f"{API_PREFIX}/tenants/rl/runs").status_code == 429
    # a real user from the same address is served: it is keyed on itself
    assert runs(fresh, f"Bearer {fresh.token('rhea', ['rl-viewers'])}") == 200
    with fresh.db.session() as s:
        written = list(s.scalars(select(AuditEvent).where(AuditEvent.actor == "anonymous")))
    # one event per kind of refusal so far (the first 401, the first 429), not one per request
    assert len(written) <= 3, [(e.action, e.detail) for e in written]
    fresh.server.stop(timeout=30)  # the lifespan writes the open windows' aggregates
    with fresh.db.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.actor == "anonymous")))
    counted: dict[int, int] = {}
    for event in events:
        detail: dict[str, Any] = event.detail or {}
        status = int(detail["status"])
        # an event stands for one request, an aggregate for the rest of its window
        counted[status] = counted.get(status, 0) + int(detail.get("aggregated", 1))
        assert event.source == "127.0.0.1"  # the peer: X-Forwarded-For is not believed from it
    assert counted.get(401, 0) + counted.get(429, 0) == 2 * PER_MINUTE + 2, counted
    assert len(events) <= 5


def test_the_client_address_is_believed_only_from_trusted_proxies() -> None:
    def scope(peer: str, forwarded: str | None) -> dict[str, Any]:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": (peer, 5000), "headers": headers}

    trusted = parse_networks(["10.0.0.0/8", "192.168.1.1"])
    assert client_address(scope("127.0.0.1", "1.2.3.4"), trusted) == "127.0.0.1"
    assert client_address(scope("10.0.0.5", "1.2.3.4"), trusted) == "1.2.3.4"
    # the right-most untrusted hop: what the client wrote further left is not believed
    assert client_address(scope("10.0.0.5", "6.6.6.6, 1.2.3.4, 192.168.1.1"), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.5", "garbage, 1.2.3.4"), trusted) == "1.2.3.4"
    assert client_address(scope("10.0.0.5", "10.1.1.1"), trusted) == "10.1.1.1"
    assert client_address(scope("10.0.0.5", None), trusted) == "10.0.0.5"
    assert client_address(scope("10.0.0.5", "1.2.3.4"), ()) == "10.0.0.5"
    assert rate_key(None, "1.2.3.4") == "a:1.2.3.4"
