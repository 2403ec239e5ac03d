"""Production promotions that need a second owner's approval (the tenant's promotion policy),
through the real CLI: on the local state folder (two users by ``ARGOSY_USER``) and on a server
that authenticates two owners and an editor with a real OIDC issuer process. The requester
cannot approve their own request, another owner's approval moves the alias (its history names
both), a denied or expired request moves nothing, and both homes give the same documents."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from argosy import api
from argosy.api import API_PREFIX
from argosy.service import ServiceContext, approvals, promotions
from argosy.stores.metadata.tables import Approval, AuditEvent, RegisteredModel
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
    assert "asked by olga" in text.stderr
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


# -- one pending request per move, held by the database ----------------------------------------
BACKENDS = [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgresql)]
ALIASES = ("production", "champion", "gold")  # all reserved: 2 versions x 3 aliases = 6 moves


@pytest.fixture(params=BACKENDS)
def registered(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """A state folder (SQLite, or a database of the test PostgreSQL server) holding model
    ``m`` with versions 1 and 2, whose tenant reserves three aliases for approval."""
    url = request.getfixturevalue("pg_migrated_url") if request.param == "postgresql" else None
    ws = Workspace(tmp_path / "proj", tmp_path / "state", url)
    ws.root.mkdir()
    ws.write(PIPES, "approved_models")
    run = ws.argosy("run", "approved_models.py:two", "-q", "--output", "json")
    assert run.code == 0, run.stderr
    for node in ("a", "b"):
        done = ws.argosy("models", "register", "m", f"{run.json()['id']}/{node}")
        assert done.code == 0, done.stderr
    policy = ws.argosy("models", "policy", *(f"--approval={a}" for a in ALIASES))
    assert policy.code == 0, policy.stderr
    return ws


def _pending(ws: Workspace) -> list[tuple[str, str, str | None]]:
    """(created_by, detail, subject) of every pending promotion request, straight from the DB."""
    local = ws.local()
    with local.metadata.session() as s:
        rows = s.scalars(select(Approval).where(Approval.state == "pending")).all()
        return sorted((r.created_by, str(r.detail), r.subject) for r in rows)


def _at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """The ``calls``, each in a thread of its own, released together by a barrier; their
    results, in order."""
    n = len(calls)
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def test_two_identical_requests_sent_at_once_to_a_server_make_one(
    registered: Workspace, tmp_path: Path
) -> None:
    """Two clients PUT the same production promotion at the same moment, six times (each a
    move of its own): both get 202 and the same request, and the database holds one."""
    ws = registered
    env = {"ARGOSY_DATABASE_URL": ws.database_url} if ws.database_url else {}
    server = start_server(ws.home, env, stderr_path=tmp_path / "server.log")
    try:
        base = f"{server.api}/models/m/aliases"
        moves = [(alias, version) for alias in ALIASES for version in (1, 2)]
        for alias, version in moves:
            body = {"version": version, "reason": "race"}
            with httpx.Client(timeout=60) as c1, httpx.Client(timeout=60) as c2:
                puts = [partial(c.put, f"{base}/{alias}", json=body) for c in (c1, c2)]
                answers = _at_once(puts)
            assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
            ids = {r.json()["id"] for r in answers}
            assert len(ids) == 1, (alias, version, ids)
        pending = _pending(ws)
        assert len(pending) == len(moves), pending
        assert {p[2] for p in pending} == {f"{a}:{v}" for a, v in moves}
    finally:
        server.stop(timeout=20)


def test_the_database_keeps_one_pending_request_when_both_looked_first(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made certain: both callers look for a pending request before either has
    inserted one (both see none), then both insert. The partial unique index refuses the
    second insert, which then answers with the first request — here asked by two different
    owners, so the second ask is an audit event naming the first requester."""
    ws = registered
    local = ws.local()
    tenant = local.settings.tenant

    def ctx(actor: str) -> ServiceContext:
        return ServiceContext(metadata=local.metadata, store=local.store, tenant=tenant,
                              actor=actor, attempts_dir=local.settings.attempts_dir)  # fmt: skip

    looked = threading.Barrier(2)
    real = approvals.pending_for
    first_look: set[int] = set()

    def pending_for(*args: Any) -> Any:
        found = real(*args)
        me = threading.get_ident()
        if me not in first_look:  # each thread's first look waits for the other's
            first_look.add(me)
            assert found is None
            looked.wait(timeout=30)
        return found

    now = datetime.now(UTC)
    users = ("olga", "bob")
    body = api.ModelPromote(version=1, reason="both")
    with monkeypatch.context() as patched:
        patched.setattr(approvals, "pending_for", pending_for)
        docs = _at_once(
            [partial(promotions.promote, ctx(u), "m", "production", body, now) for u in users]
        )
    assert all(isinstance(d, api.PromotionRequest) for d in docs)
    assert docs[0].id == docs[1].id and docs[0].state == "pending"
    first = docs[0].requested_by
    assert first in users and docs[1].requested_by == first
    assert _pending(ws) == [(first, str({"model": "m", "alias": "production", "version": 1}),
                             "production:1")]  # fmt: skip

    # the second person's ask is kept, naming whose request it joined
    with local.metadata.session() as s:
        asks = s.scalars(select(AuditEvent).where(AuditEvent.action == "promotion.request")).all()
        kept = sorted((e.actor, (e.detail or {}).get("pending_by")) for e in asks)
    second = next(u for u in users if u != first)
    assert kept == sorted([(first, None), (second, first)])

    # the database itself refuses a second pending request for the move, whoever inserts it
    with pytest.raises(IntegrityError):
        approvals.request(ctx("carl"), "promotion", "model", _model_id(ws), "", now,
                          subject="production:1")  # fmt: skip
    # once decided, the same move can be asked for again
    decided = promotions.decide(ctx(second), docs[0].id, api.PromotionDecision(approve=False),
                                now)  # fmt: skip
    assert decided.state == "denied"
    again = promotions.promote(ctx("olga"), "m", "production", body, now)
    assert isinstance(again, api.PromotionRequest) and again.id != docs[0].id


def _model_id(ws: Workspace) -> str:
    with ws.local().metadata.session() as s:
        found = s.scalar(select(RegisteredModel.id).where(RegisteredModel.name == "m"))
        assert found is not None
        return found
