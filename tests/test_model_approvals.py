"""Production promotions that need a second owner's approval (the tenant's promotion policy),
through the real CLI: on the local state folder (two users by ``ARGOSY_USER``) and on a server
that authenticates two owners and an editor with a real OIDC issuer process. The requester
cannot approve their own request, another owner's approval moves the alias (its history names
both), a denied or expired request moves nothing, and both homes give the same documents."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from argosy.api import API_PREFIX
from tests.conftest import Workspace
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import oidc_env, start_server

PIPES = """
from argosy import pipeline, step


@step
def a() -> dict:
    return {"weights": [1, 2, 3]}


@step
def b() -> dict:
    return {"weights": [4, 5, 6]}


@pipeline
def two() -> dict:
    a()
    return b()
"""

As = Callable[[str], dict[str, str]]  # a user's name -> the environment the CLI acts as them


def _flow(ws: Workspace, as_: As, server: list[str], editor: str | None) -> dict[str, Any]:
    """olga asks, bob decides: approve, deny, expire. The documents, by step."""

    def cli(user: str, *args: str) -> Any:
        return ws.argosy(*args, *server, env=as_(user))

    def ok(user: str, *args: str) -> Any:
        res = cli(user, *args, "--output", "json")
        assert res.code == 0, res.stderr
        return res.json()

    ws.write(PIPES, "approved_models")
    run = ok("olga", "run", "approved_models.py:two", "-q")
    assert run["status"] == "succeeded"
    ok("olga", "models", "register", "m", f"{run['id']}/a")
    ok("olga", "models", "register", "m", f"{run['id']}/b")
    docs: dict[str, Any] = {}
    docs["policy"] = ok("olga", "models", "policy", "--approval", "production")
    assert docs["policy"]["approval"] == ["production"]
    assert docs["policy"]["expire_after_days"] == 7

    # an alias the policy does not name moves at once
    staged = ok("olga", "models", "promote", "m", "1", "--alias", "staging")
    assert staged["version"] == 1 and staged["requested_by"] is None

    # production: a pending request, not a move; asking again gives the same request
    asked = ok("olga", "models", "promote", "m", "1", "--alias", "production", "-m", "good")
    docs["request"] = asked
    assert (asked["state"], asked["version"], asked["requested_by"]) == ("pending", 1, "olga")
    assert asked["reason"] == "good" and asked["expires_at"] and asked["event"] is None
    again = ok("olga", "models", "promote", "m", "1", "--alias", "production", "-m", "good")
    assert again["id"] == asked["id"]
    assert ok("olga", "models", "show", "m")["aliases"] == {"staging": 1}
    text = cli("olga", "models", "promote", "m", "1", "--alias", "production")
    assert text.code == 0 and f"argosy models approve {asked['id']}" in text.stderr
    pending = ok("bob", "models", "requests", "--state", "pending")["requests"]
    assert [r["id"] for r in pending] == [asked["id"]]

    # the requester cannot approve their own; an editor cannot approve at all
    own = cli("olga", "models", "approve", asked["id"])
    assert own.code == 2 and "cannot decide it" in own.stderr, own.stderr
    if editor is not None:
        refused = cli(editor, "models", "approve", asked["id"])
        assert refused.code == 3 and "model.approve needs the owner role" in refused.stderr
    assert ok("olga", "models", "show", "m")["aliases"] == {"staging": 1}

    # another owner approves: the alias moves, and its history names both
    approved = ok("bob", "models", "approve", asked["id"], "-m", "checked")
    docs["approved"] = approved
    assert (approved["state"], approved["decided_by"], approved["comment"]) == (
        "approved", "bob", "checked"
    )  # fmt: skip
    event = approved["event"]
    assert (event["version"], event["previous_version"], event["by"]) == (1, None, "bob")
    assert (event["requested_by"], event["approved_by"], event["approval"]) == (
        "olga", "bob", asked["id"]
    )  # fmt: skip
    assert ok("olga", "models", "show", "m@production")["version"] == 1
    history = ok("olga", "models", "history", "m", "--alias", "production")["events"]
    assert [(e["version"], e["requested_by"], e["approved_by"]) for e in history] == [
        (1, "olga", "bob")
    ]
    docs["history"] = history
    twice = cli("bob", "models", "approve", asked["id"])
    assert twice.code == 2 and "already approved" in twice.stderr

    # denied: nothing moves
    second = ok("olga", "models", "promote", "m", "2", "--alias", "production")
    assert second["state"] == "pending" and second["id"] != asked["id"]
    denied = ok("bob", "models", "deny", second["id"], "-m", "not yet")
    assert (denied["state"], denied["event"]) == ("denied", None)
    assert ok("olga", "models", "show", "m")["aliases"] == {"production": 1, "staging": 1}

    # expired undecided: nothing moves, and it can no longer be approved
    ok("olga", "models", "policy", "--expire-after-days", "0.00003")  # 2.6 s
    third = ok("olga", "models", "promote", "m", "2", "--alias", "production")
    assert third["state"] == "pending" and third["id"] not in (asked["id"], second["id"])
    time.sleep(3.5)
    late = cli("bob", "models", "approve", third["id"])
    assert late.code == 2 and "expired undecided" in late.stderr, late.stderr
    expired = ok("bob", "models", "requests", "--state", "expired")["requests"]
    assert [r["id"] for r in expired] == [third["id"]]
    assert ok("olga", "models", "show", "m")["aliases"] == {"production": 1, "staging": 1}
    states = [r["state"] for r in ok("olga", "models", "requests")["requests"]]
    assert states == ["expired", "denied", "approved"]
    assert len(ok("olga", "models", "history", "m", "--alias", "production")["events"]) == 1

    # with no alias reserved, production moves at once again
    ok("olga", "models", "policy", "--no-approval")
    moved = ok("olga", "models", "promote", "m", "2", "--alias", "production")
    assert (moved["version"], moved["previous_version"], moved["by"]) == (2, 1, "olga")
    return docs


def _shape(doc: Any) -> Any:
    """A document's structure (keys and value types), not its values."""
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_shape(doc[0])] if doc else []
    return type(doc).__name__


def test_production_needs_a_second_owner_locally_and_on_a_server(
    ws: Workspace, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    local = _flow(ws, lambda user: {"ARGOSY_USER": user}, [], None)

    server = start_server(tmp_path / "server", oidc_env(oidc_issuer.issuer))
    try:
        admin = oidc_issuer.token(sub="root-admin", groups=["platform-admins"])
        headers = {"Authorization": f"Bearer {admin}"}
        base = f"{server.url}{API_PREFIX}/tenants"
        assert httpx.post(base, json={"name": "ml"}, headers=headers, timeout=30).is_success
        for role, kind, subject in (("owner", "group", "ml-owners"), ("editor", "user", "ed")):
            made = httpx.post(f"{base}/ml/members", headers=headers, timeout=30,
                              json={"role": role, "subject_kind": kind, "subject": subject})  # fmt: skip
            assert made.is_success, made.text

        def as_(user: str) -> dict[str, str]:
            groups = [] if user == "ed" else ["ml-owners"]
            token = oidc_issuer.token(sub=user, groups=groups)
            return {"ARGOSY_TOKEN": token, "ARGOSY_TENANT": "ml"}

        remote_ws = Workspace(tmp_path / "remote", tmp_path / "remote-state")
        remote_ws.root.mkdir()
        remote = _flow(remote_ws, as_, ["--server", server.url], "ed")
        assert _shape(remote) == _shape(local)

        # each step is in the tenant's audit log, the refusals too
        audit = httpx.get(f"{base}/ml/audit", params={"limit": 200}, headers=headers, timeout=30)
        events = audit.json()["items"]
        actions = [e["action"] for e in events]
        for action in ("promotion.policy", "promotion.request", "promotion.approved",
                       "promotion.denied", "promotion.expired"):  # fmt: skip
            assert action in actions, (action, sorted(set(actions)))
        refused = {(e["actor"], e["action"]) for e in events if e["outcome"] == "denied"}
        assert ("ed", "model.approve") in refused and ("olga", "promotion.decide") in refused
    finally:
        server.stop(timeout=20)


@pytest.mark.parametrize("alias", ["Production", "-x"])
def test_a_policy_names_valid_aliases(ws: Workspace, alias: str) -> None:
    res = ws.argosy("models", "policy", "--approval", alias)
    assert res.code == 2 and "is no alias name" in res.stderr
