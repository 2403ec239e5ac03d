"""The security core, in process and fast (the mutation tests' selection, ``make mutation``):
the authorization function, task tokens and grants, the task-store route, tenant secrets and
API token basics. The end-to-end versions (real servers, real identity providers) are in
test_auth.py, test_task_credentials.py and test_secrets.py; these pin each decision down so
that a changed comparison or constant fails a test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from argosy.auth.policy import Action, Binding, Role, authorize, role_in
from argosy.auth.principal import Principal
from argosy.auth.task_credentials import TaskClaims, TaskGrants, TaskTokenError, TaskTokens
from argosy.auth.tokens import (
    MAX_CHAIN,
    TOKEN_SUBJECT,
    InvalidApiToken,
    check_lifetime,
    create_token,
    hash_token,
    is_api_token,
    parse_lifetime,
    resolve,
    revoke_minted,
    revoke_token,
)
from argosy.errors import IntegrityError, NotFoundError, UsageError
from argosy.ids import new_id
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.keys import LocalKeyProvider, TenantKeys
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import ApiToken, Attempt, RoleBinding, Task, User
from argosy.stores.secrets import MAX_VALUE_BYTES, TenantSecrets

with warnings.catch_warnings():  # Starlette asks for httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

# -- the authorization function ---------------------------------------------------------------
# Written by hand from the role list in docs/security.md: the least role each action needs
# ("P": platform admins only; "-": not through roles at all).
LEAST_ROLE = {
    Action.PIPELINE_READ: "viewer", Action.RUN_READ: "viewer", Action.ARTIFACT_READ: "viewer",
    Action.LOG_READ: "viewer", Action.SCHEDULE_READ: "viewer", Action.TENANT_READ: "viewer",
    Action.BLOB_WRITE: "editor", Action.PIPELINE_PUSH: "editor", Action.RUN_CREATE: "editor",
    Action.RUN_CANCEL: "editor", Action.RUN_RETRY: "editor", Action.SCHEDULE_WRITE: "editor",
    Action.MEMBER_READ: "owner", Action.MEMBER_WRITE: "owner", Action.TOKEN_READ: "owner",
    Action.TOKEN_WRITE: "owner", Action.SECRET_READ: "owner", Action.SECRET_WRITE: "owner",
    Action.TENANT_SETTINGS_WRITE: "owner", Action.AUDIT_READ: "owner",
    Action.RETRIEVAL_APPROVE: "owner", Action.LEGAL_HOLD_WRITE: "owner", Action.RUN_DELETE: "owner",
    Action.COST_READ: "viewer", Action.RETRIEVAL_REQUEST: "viewer",
    Action.MODEL_READ: "viewer", Action.MODEL_WRITE: "editor", Action.MODEL_PROMOTE: "editor",
    Action.MODEL_APPROVE: "owner",
    Action.TENANT_CREATE: "P", Action.TENANT_ARCHIVE: "P", Action.TENANT_QUOTAS_WRITE: "P",
    Action.TENANT_LIST_ALL: "P", Action.AUDIT_READ_ALL: "P", Action.SCIM: "P",
    Action.METRICS_READ: "P", Action.COST_READ_ALL: "P", Action.GC: "P", Action.LIFECYCLE_RUN: "P",
    Action.PUBLIC: "-", Action.AUTHENTICATED: "-", Action.TASK: "-",
}  # fmt: skip
RANK = {"viewer": 1, "editor": 2, "owner": 3}
BINDINGS = [
    Binding("viewer", "group", "readers"),
    Binding("editor", "user", "ed"),
    Binding("owner", "group", "owners"),
    Binding("viewer", "user", "ollie"),  # ollie is also in "owners": the highest role counts
]
ANON = Principal(subject="anonymous", name="anonymous", kind="anonymous")
TASK = Principal(subject="task:1", name="task", kind="task")
LOCAL = Principal(subject="me", name="me", kind="local")
ADMIN = Principal(subject="root", name="root", platform_admin=True)
STRANGER = Principal(subject="sam", name="sam", groups=("elsewhere",))


def member(role: str) -> Principal:
    return {
        "viewer": Principal(subject="vic", name="vic", groups=("readers", "x")),
        "editor": Principal(subject="ed", name="ed"),
        "owner": Principal(subject="ollie", name="ollie", groups=("owners",)),
    }[role]


def service(role: str, tenant: str = "team") -> Principal:
    return Principal(subject="token:1", name="token", kind="service", token_tenant=tenant,
                     token_role=role)  # fmt: skip


def test_every_action_has_a_hand_written_row() -> None:
    assert set(LEAST_ROLE) == set(Action)


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_authorize_follows_the_hand_written_roles(action: Action) -> None:
    least = LEAST_ROLE[action]
    decide = lambda who: authorize(who, "team", action, BINDINGS).allowed  # noqa: E731
    # anyone for public routes; any authenticated principal for "authenticated" ones
    assert decide(ANON) is (action is Action.PUBLIC)
    assert decide(TASK) is (action in (Action.PUBLIC, Action.AUTHENTICATED, Action.TASK))
    for who in (LOCAL, ADMIN):
        assert decide(who) is (action is not Action.TASK), who
    assert decide(STRANGER) is (action in (Action.PUBLIC, Action.AUTHENTICATED))
    for role in ("viewer", "editor", "owner"):
        expected = least in RANK and RANK[role] >= RANK[least]
        if action in (Action.PUBLIC, Action.AUTHENTICATED):
            expected = True
        assert decide(member(role)) is expected, role
        assert decide(service(role)) is expected, f"token {role}"
        # a token of another tenant has no role here
        other = authorize(service(role, "other"), "team", action, BINDINGS).allowed
        assert other is (action in (Action.PUBLIC, Action.AUTHENTICATED)), f"foreign {role}"


def test_decisions_say_why() -> None:
    viewer = member("viewer")
    denied = authorize(viewer, "team", Action.RUN_CANCEL, BINDINGS)
    assert not denied.allowed and denied.role is Role.viewer
    assert denied.reason == ("run.cancel needs the editor role in tenant 'team'; vic is viewer")
    allowed = authorize(viewer, "team", Action.RUN_READ, BINDINGS)
    assert (allowed.allowed, allowed.reason, allowed.role) == (True, "viewer in 'team'",
                                                                Role.viewer)  # fmt: skip
    nobody = authorize(STRANGER, "team", Action.RUN_READ, BINDINGS)
    assert nobody.reason == "sam has no role in tenant 'team'" and nobody.role is None
    assert authorize(viewer, None, Action.RUN_READ, BINDINGS).reason == "run.read needs a tenant"
    assert authorize(viewer, None, Action.RUN_READ, BINDINGS).allowed is False
    assert authorize(viewer, "team", Action.SCIM, BINDINGS).reason == "scim needs a platform admin"
    assert authorize(ANON, "team", Action.RUN_READ).reason.startswith("not authenticated")
    assert authorize(ADMIN, "team", Action.SCIM).reason == "platform admin"
    assert authorize(LOCAL, "team", Action.SCIM).reason == "local mode"
    assert authorize(TASK, None, Action.TASK).reason == "task token"
    assert authorize(viewer, None, Action.TASK).reason == "only task processes use this"
    assert authorize(ANON, None, Action.PUBLIC).reason == "public"
    assert authorize(viewer, None, Action.AUTHENTICATED).reason == "authenticated"


def test_role_in_takes_the_highest_matching_binding() -> None:
    assert role_in(member("owner"), "team", BINDINGS) is Role.owner  # user viewer + group owner
    assert role_in(member("viewer"), "team", BINDINGS) is Role.viewer
    assert role_in(Principal(subject="readers", name="x"), "team", BINDINGS) is None  # a user
    assert role_in(Principal(subject="x", name="x", groups=("ed",)), "team", BINDINGS) is None
    assert role_in(ANON, "team", BINDINGS) is None
    assert role_in(service("editor"), "team", BINDINGS) is Role.editor
    assert role_in(service("editor", "other"), "team", BINDINGS) is None
    no_role = Principal(subject="t", name="t", kind="service", token_tenant="team")
    assert role_in(no_role, "team", BINDINGS) is None
    assert Role.parse("owner") is Role.owner
    with pytest.raises(ValueError, match="unknown role 'admin'; use viewer, editor or owner"):
        Role.parse("admin")


# -- task tokens and grants -------------------------------------------------------------------
CLAIMS = TaskClaims("att-1", "team", "run-1", "train", 2, expires=2_000_000_000.0)


def test_task_tokens_carry_their_claims_and_refuse_every_change() -> None:
    tokens = TaskTokens(b"k" * 32)
    token = tokens.mint(CLAIMS)
    prefix, body, mac = token.split(".")
    assert prefix == "argosy-task"
    assert json.loads(base64.urlsafe_b64decode(body + "==")) == {
        "a": "att-1", "t": "team", "r": "run-1", "n": "train", "k": 2, "e": 2_000_000_000.0,
    }  # fmt: skip
    assert tokens.verify(token, now=1_999_999_999.0) == CLAIMS
    assert CLAIMS.record_prefix == "tenants/team/runs/run-1/train/2/"
    with pytest.raises(TaskTokenError, match="task token of attempt att-1 has expired"):
        tokens.verify(token, now=2_000_000_000.0)  # expiry is exclusive
    with pytest.raises(TaskTokenError, match="not issued by this server instance"):
        TaskTokens(b"j" * 32).verify(token, now=0)
    with pytest.raises(TaskTokenError, match="not issued by this server instance"):
        tokens.verify(f"argosy-tusk.{body}.{mac}", now=0)
    other = json.dumps({"a": "att-1", "t": "other", "r": "run-1", "n": "train", "k": 2,
                        "e": 2e9}, separators=(",", ":")).encode()  # fmt: skip
    forged = base64.urlsafe_b64encode(other).rstrip(b"=").decode()
    with pytest.raises(TaskTokenError, match="not issued by this server instance"):
        tokens.verify(f"argosy-task.{forged}.{mac}", now=0)
    for malformed in ("nonsense", "a.b", "a.b.c.d", ""):
        with pytest.raises(TaskTokenError, match="malformed task token"):
            tokens.verify(malformed, now=0)
    assert TaskTokens().mint(CLAIMS) != TaskTokens().mint(CLAIMS)  # a random key each


def test_task_grants_read_inputs_code_and_collections() -> None:
    grants = TaskGrants()
    grants.add(
        "att-1", "run-1",
        {"x": {"artifact": {"sha256": "a" * 64}}, "xs": {"artifact": {"sha256": "c" * 64,
         "format": "collection"}}, "p": {"value": 3}, "q": 7},
        ["sha256:" + "d" * 64, None, "e" * 64],
    )  # fmt: skip
    grants.add("att-2", "run-2", {}, [])
    grant = grants.get("att-1")
    assert grant is not None and grant.run_id == "run-1"
    assert grant.reads == {"a" * 64, "c" * 64, "d" * 64, "e" * 64}
    assert grant.collections == ["c" * 64] and grant.written == set()
    assert grants.get("nope") is None
    grants.revoke_run("run-1")
    assert grants.get("att-1") is None and grants.get("att-2") is not None


# -- the task-store route ---------------------------------------------------------------------
def blob_key(tenant: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"tenants/{tenant}/blobs/sha256/{sha[:2]}/{sha}"


@pytest.fixture(scope="module")
def task_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The task-store router in process, over a real state folder: one finished local run
    whose attempt is set back to ``running`` (a task token is good only while its attempt
    runs), and a token for it."""
    import subprocess
    import sys

    from argosy.server.problems import install
    from argosy.server.routes import task_store as route

    root = tmp_path_factory.mktemp("task-store")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "ts_pipe.py").write_text(
        "from argosy import pipeline, step\n\n@step\ndef train() -> int:\n    return 1\n\n"
        "@pipeline\ndef tsp():\n    train()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(root / "state")
    done = subprocess.run([sys.executable, "-m", "argosy.cli.main", "run", "ts_pipe.py:tsp"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    metadata = MetadataStore.open(f"sqlite:///{root / 'state' / 'argosy.db'}")
    with metadata.session() as s:
        attempt = s.scalars(select(Attempt)).one()
        task = s.get_one(Task, attempt.task_id)
        attempt.state = "running"
        claims = TaskClaims(attempt.id, "default", attempt.run_id, task.node_path,
                            attempt.number, expires=2_000_000_000.0)  # fmt: skip
    stores: dict[str, Any] = {}

    def store(tenant: str) -> Any:
        if tenant not in stores:
            stores[tenant] = open_artifact_store(str(root / "state" / "blobs"), tenant)
        return stores[tenant]

    context = SimpleNamespace(
        task_tokens=TaskTokens(), task_grants=TaskGrants(), store=store, metadata=metadata,
        settings=SimpleNamespace(home=root / "state"),
    )  # fmt: skip
    app = FastAPI()
    app.state.context = context
    install(app)
    app.include_router(route.router)
    with TestClient(app) as client:
        yield SimpleNamespace(client=client, context=context, store=store, claims=claims)
    metadata.close()


def test_the_task_store_admits_only_live_task_tokens(task_store: SimpleNamespace) -> None:
    context, client, claims = task_store.context, task_store.client, task_store.claims
    tokens: TaskTokens = context.task_tokens
    context.task_grants.add(claims.attempt_id, claims.run_id, {}, [])
    key = f"/api/v1/task-store/{claims.record_prefix}probe.json"
    assert client.get(key).status_code == 401
    user = client.get(key, headers={"Authorization": "Bearer eyJ.user.token"})
    assert user.status_code == 403 and user.json()["code"] == "task_access_denied"
    forged = TaskTokens().mint(claims)
    refused = client.get(key, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_task_token"
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    old = TaskClaims(claims.attempt_id, claims.tenant, claims.run_id, claims.node_path,
                     claims.number, expires=1.0)  # fmt: skip
    expired = tokens.mint(old)
    assert client.get(key, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    live = {"Authorization": f"Bearer {tokens.mint(claims)}"}
    assert client.put(key, content=b"{}", headers=live).status_code == 201
    assert client.get(key, headers=live).content == b"{}"


def test_the_task_store_keeps_each_attempt_to_its_own_data(task_store: SimpleNamespace) -> None:
    context, client, claims = task_store.context, task_store.client, task_store.claims
    tokens: TaskTokens = context.task_tokens
    tenant, mine_prefix = claims.tenant, claims.record_prefix
    store = task_store.store(tenant)
    mine, theirs, elements = b"my input", b"someone else's", [b"el-0", b"el-1"]
    infos = {d: store.put_bytes(d) for d in (mine, theirs, *elements)}
    collection = store.put_bytes(json.dumps(
        [{"sha256": infos[e].sha256} for e in elements] + [None]).encode())  # fmt: skip
    context.task_grants.add(claims.attempt_id, claims.run_id, {
        "x": {"artifact": {"sha256": infos[mine].sha256}},
        "xs": {"artifact": {"sha256": collection.sha256, "format": "collection"}},
    }, [])  # fmt: skip
    auth = {"Authorization": f"Bearer {tokens.mint(claims)}"}
    api = "/api/v1/task-store/"

    def status(method: str, key: str, **kw: Any) -> int:
        return client.request(method, api + key, headers=auth, **kw).status_code

    # blobs: its inputs (and a collection's elements) read; others refused
    assert status("GET", blob_key(tenant, mine)) == 200
    assert status("GET", blob_key(tenant, elements[1])) == 200
    assert status("GET", blob_key(tenant, theirs)) == 403
    new = b"my output"
    assert status("PUT", blob_key(tenant, new), content=new) == 201
    assert status("GET", blob_key(tenant, new)) == 200  # what it wrote, it reads back
    wrong = client.put(api + blob_key(tenant, b"claimed"), content=b"other", headers=auth)
    assert wrong.status_code == 422 and wrong.json()["code"] == "blob_hash_mismatch"
    # records: its own attempt's only
    assert status("PUT", f"{mine_prefix}log.jsonl", content=b"x") == 201
    assert status("GET", f"{mine_prefix}log.jsonl") == 200
    run_prefix = f"tenants/{tenant}/runs/{claims.run_id}/"
    for other in (f"{run_prefix}{claims.node_path}/{claims.number + 1}/log.jsonl",  # another number
                  f"{run_prefix}{claims.node_path}-2/{claims.number}/log.jsonl",  # a sibling
                  f"tenants/{tenant}/runs/run-9/{claims.node_path}/1/log.jsonl",  # another run
                  f"{mine_prefix}../../../run-9/x",
                  f"tenants/other/runs/{claims.run_id}/{claims.node_path}/1/log.jsonl",
                  blob_key("other", mine)):  # fmt: skip
        for method in ("GET", "PUT", "HEAD"):
            assert status(method, other, content=b"x") == 403, (method, other)
    listed = client.get(api.rstrip("/"), params={"prefix": mine_prefix}, headers=auth)
    assert f"{mine_prefix}log.jsonl" in listed.json()["keys"]
    assert client.get(api.rstrip("/"), params={"prefix": f"tenants/{tenant}/runs/"},
                      headers=auth).status_code == 403  # fmt: skip
    # quarantine: renaming a corrupt blob of its tenant into it, nothing else
    assert status("GET", f"tenants/{tenant}/quarantine/x") == 403
    for body in ({"key": blob_key(tenant, mine), "new_key": f"tenants/{tenant}/elsewhere"},
                 {"key": f"{mine_prefix}log.jsonl", "new_key": f"tenants/{tenant}/quarantine/l"},
                 {"key": blob_key("other", mine), "new_key": f"tenants/{tenant}/quarantine/z"}):  # fmt: skip
        assert client.post("/api/v1/task-store-rename", json=body,
                           headers=auth).status_code == 403, body  # fmt: skip
    # an attempt that is over: its token is void
    context.task_grants.revoke_run(claims.run_id)
    over = client.get(api + blob_key(tenant, mine), headers=auth)
    assert over.status_code == 401 and "its task token is void" in over.json()["detail"]
    context.task_grants.add(claims.attempt_id, claims.run_id, {}, [])  # a grant, but settled:
    with context.metadata.session() as s:
        s.get_one(Attempt, claims.attempt_id).state = "succeeded"
    assert status("GET", f"{mine_prefix}log.jsonl") == 401


# -- tenant secrets ---------------------------------------------------------------------------
@pytest.fixture
def metadata(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'argosy.db'}")
    yield store
    store.close()


def test_secrets_round_trip_and_refuse_bad_names_sizes_and_copies(
    metadata: MetadataStore, tmp_path: Path
) -> None:
    keys = TenantKeys(metadata, LocalKeyProvider(tmp_path / "kek"))
    secrets = TenantSecrets(metadata, keys)
    plain = "hf-plaintext-v1"  # long enough never to turn up in random ciphertext by chance
    row = secrets.put("team", "HF_TOKEN", plain, "olga")
    assert (row.name, row.created_by, row.updated_by) == ("HF_TOKEN", "olga", "olga")
    sealed = base64.b64decode(row.ciphertext)
    assert plain not in row.ciphertext and plain.encode() not in sealed
    assert len(sealed) == 12 + len(plain) + 16  # nonce, ciphertext, tag
    again = secrets.put("team", "HF_TOKEN", "v2", "ed")
    assert again.id == row.id and again.updated_by == "ed" and again.created_by == "olga"
    secrets.put("team", "A_FIRST", "a", "olga")
    secrets.put("other", "HF_TOKEN", "theirs", "x")
    assert [r.name for r in secrets.list("team")] == ["A_FIRST", "HF_TOKEN"]
    assert secrets.open("team", ["HF_TOKEN", "A_FIRST", "MISSING"]) == {"HF_TOKEN": "v2",
                                                                        "A_FIRST": "a"}  # fmt: skip
    assert secrets.open("team", []) == {}
    assert secrets.open("other", ["HF_TOKEN"]) == {"HF_TOKEN": "theirs"}
    # a rotated key: old secrets still open, new ones use the new key
    keys.rotate("team")
    secrets.put("team", "NEWER", "n", "olga")
    assert secrets.open("team", ["HF_TOKEN", "NEWER"]) == {"HF_TOKEN": "v2", "NEWER": "n"}
    # names and sizes
    for bad in ("not-a-var", "1ABC", "", "A" * 256, "A B"):
        with pytest.raises(UsageError, match="is not valid"):
            secrets.put("team", bad, "x", "olga")
    secrets.put("team", "_OK9", "x", "olga")
    secrets.put("team", "A" * 255, "x", "olga")
    secrets.put("team", "BIG", "x" * MAX_VALUE_BYTES, "olga")
    with pytest.raises(UsageError, match="larger than 64 KiB"):
        secrets.put("team", "BIG", "x" * (MAX_VALUE_BYTES + 1), "olga")
    with pytest.raises(UsageError, match="larger than 64 KiB"):
        secrets.put("team", "BIG", "é" * (MAX_VALUE_BYTES // 2 + 1), "olga")  # bytes, not chars
    # delete
    secrets.delete("team", "A_FIRST")
    with pytest.raises(NotFoundError, match="tenant 'team' has no secret 'A_FIRST'"):
        secrets.delete("team", "A_FIRST")
    assert secrets.open("other", ["HF_TOKEN"]) == {"HF_TOKEN": "theirs"}  # untouched
    secrets.put("team", "SHARED_NAME", "ours", "olga")
    secrets.put("other", "SHARED_NAME", "theirs", "x")
    secrets.delete("team", "SHARED_NAME")  # the same name in another tenant stays
    assert secrets.open("other", ["SHARED_NAME"]) == {"SHARED_NAME": "theirs"}
    # a ciphertext copied to another name (same tenant, same key) does not open
    from sqlalchemy import update

    from argosy.stores.metadata.tables import Secret

    with metadata.session() as s:
        s.execute(update(Secret).where(Secret.tenant == "team", Secret.name == "NEWER")
                  .values(ciphertext=again.ciphertext, key_id=again.key_id))  # fmt: skip
    with pytest.raises(IntegrityError, match="secret 'NEWER' of tenant 'team' does not decrypt"):
        secrets.open("team", ["NEWER"])
    assert secrets.open("team", ["HF_TOKEN"]) == {"HF_TOKEN": "v2"}


# -- API tokens -------------------------------------------------------------------------------
def test_token_lifetimes() -> None:
    assert parse_lifetime("30d") == timedelta(days=30)
    assert parse_lifetime(" 12H ") == timedelta(hours=12)
    assert parse_lifetime("90m") == timedelta(minutes=90)
    assert parse_lifetime("45s") == timedelta(seconds=45)
    assert parse_lifetime("2") == timedelta(days=2)
    assert parse_lifetime("365d") == timedelta(days=365)
    for bad in ("soon", "d", "x30d"):
        with pytest.raises(UsageError, match="invalid expiry"):
            parse_lifetime(bad)
    with pytest.raises(UsageError, match="at most 365 days"):
        parse_lifetime("366d")
    with pytest.raises(UsageError, match="at most 365 days"):
        check_lifetime(timedelta(days=365, seconds=1))
    for never in ("0d", "-1d"):
        with pytest.raises(UsageError, match="must be in the future"):
            parse_lifetime(never)


def test_tokens_are_stored_hashed_and_resolve_to_their_role(metadata: MetadataStore) -> None:
    now = datetime.now(UTC)
    with metadata.session() as s:
        row, token = create_token(s, tenant="team", name="ci", role=Role.editor,
                                  lifetime=timedelta(days=1), created_by="root",
                                  creator_role=None, now=now)  # fmt: skip
        assert is_api_token(token) and not is_api_token("eyJhbGciOi.x.y")
        assert row.token_hash == hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (row.token_hash, row.prefix) and token.startswith(row.prefix)
        assert row.expires_at == now + timedelta(days=1) and row.role == "editor"
        # a token never exceeds its creator's role; equal is fine
        create_token(s, tenant="team", name="eq", role=Role.editor, lifetime=timedelta(days=1),
                     created_by="ed", creator_role=Role.editor, now=now)  # fmt: skip
        with pytest.raises(UsageError, match="you are editor in tenant 'team' and cannot"):
            create_token(s, tenant="team", name="up", role=Role.owner,
                         lifetime=timedelta(days=1), created_by="ed",
                         creator_role=Role.editor, now=now)  # fmt: skip
    with metadata.session() as s:
        principal = resolve(s, token, now)
        assert (principal.kind, principal.token_tenant) == ("service", "team")
        assert principal.subject == f"token:{row.id}"
        with pytest.raises(InvalidApiToken, match="unknown API token"):
            resolve(s, token + "x", now)
        with pytest.raises(InvalidApiToken, match="expired"):
            resolve(s, token, now + timedelta(days=1, seconds=1))
        revoke_token(s, "team", row.id, now)
    with metadata.session() as s, pytest.raises(InvalidApiToken, match="revoked"):
        resolve(s, token, now)


def test_token_chains_act_with_the_lowest_role_and_die_with_any_link(
    metadata: MetadataStore,
) -> None:
    """Tokens minted by tokens (issue 13), in-process so mutants of the chain rules are
    reached: a token acts with the lowest role along its chain and its user's standing now;
    a revoked or expired link, a link of another tenant, a missing or looping parent, a chain
    longer than MAX_CHAIN and a deactivated user each void it; revoking a token revokes
    everything it minted; last use is written at most once a minute."""
    now = datetime.now(UTC)
    day = timedelta(days=1)

    def mint(s: Any, by: str, role: Role, tenant: str = "team") -> tuple[ApiToken, str]:
        return create_token(s, tenant=tenant, name="t", role=role, lifetime=day,
                            created_by=by, creator_role=None, now=now)  # fmt: skip

    def role_of(token: str, at: datetime = now) -> str | None:
        with metadata.session() as s:
            return resolve(s, token, at).token_role

    def void(token: str, says: str) -> None:
        with metadata.session() as s, pytest.raises(InvalidApiToken, match=says):
            resolve(s, token, now)

    with metadata.session() as s:
        binding = RoleBinding(id=new_id(), tenant="team", created_at=now, created_by="t",
                              role="owner", subject_kind="user", subject="olga")  # fmt: skip
        s.add(binding)
        a, a_token = mint(s, "olga", Role.owner)
        b, b_token = mint(s, TOKEN_SUBJECT + a.id, Role.editor)
        c, c_token = mint(s, TOKEN_SUBJECT + b.id, Role.owner)  # above its parent's role
        ids = {"a": a.id, "b": b.id, "c": c.id}
    assert [role_of(t) for t in (a_token, b_token, c_token)] == ["owner", "editor", "editor"]

    with metadata.session() as s:  # the user's standing now caps the whole chain
        s.get_one(RoleBinding, binding.id).role = "viewer"
    assert [role_of(t) for t in (a_token, b_token, c_token)] == ["viewer", "viewer", "viewer"]
    with metadata.session() as s:
        s.delete(s.get_one(RoleBinding, binding.id))
    assert role_of(c_token) is None  # valid, but no role left: every action refused

    with metadata.session() as s:  # last use: written at most once a minute
        assert s.get_one(ApiToken, ids["c"]).last_used_at is not None
        s.get_one(ApiToken, ids["c"]).last_used_at = now
    for later, written in ((30, now), (61, now + timedelta(seconds=61))):
        role_of(c_token, now + timedelta(seconds=later))
        with metadata.session() as s:
            used = s.get_one(ApiToken, ids["c"]).last_used_at
            assert used is not None and used.replace(tzinfo=UTC) == written, later

    with metadata.session() as s:  # an expired parent voids its children, not its parent
        s.get_one(ApiToken, ids["b"]).expires_at = now - timedelta(seconds=1)
    void(b_token, r"expired at")
    void(c_token, r"is void \(token .* of the chain that created it has expired\)")
    role_of(a_token)
    with metadata.session() as s:
        s.get_one(ApiToken, ids["b"]).expires_at = now + day
        s.get_one(ApiToken, ids["b"]).tenant = "other"
    void(c_token, "is of another tenant")
    with metadata.session() as s:
        s.get_one(ApiToken, ids["b"]).tenant = "team"
        s.add(User(id=new_id(), external_id="olga", user_name="olga", active=False,
                   created_at=now, updated_at=now))  # fmt: skip
    void(c_token, "belongs to a deactivated user")
    void(a_token, "belongs to a deactivated user")
    with metadata.session() as s:
        s.execute(update(User).where(User.external_id == "olga").values(active=True))

    with metadata.session() as s:  # a revoked parent voids what it minted ...
        s.get_one(ApiToken, ids["a"]).revoked_at = now
    void(a_token, "was revoked; create a new one")
    void(c_token, r"is void \(token .* was revoked\)")
    with metadata.session() as s:  # ... and revoking it revokes those too, at any depth
        revoke_token(s, "team", ids["a"], now)
        assert all(s.get_one(ApiToken, i).revoked_at is not None for i in ids.values())
        assert revoke_minted(s, [ids["a"]], now) == 0  # revoked already: none counted again
    void(c_token, "was revoked; create a new one")

    with metadata.session() as s:  # broken chains: a missing parent, a loop, too long
        _, orphan_token = mint(s, TOKEN_SUBJECT + "01NOSUCHTOKEN0000000000000", Role.viewer)
        loop, loop_token = mint(s, "olga", Role.viewer)
        loop.created_by = TOKEN_SUBJECT + loop.id
        chain, chain_tokens = mint(s, "olga", Role.viewer), []
        for _ in range(MAX_CHAIN):
            chain = mint(s, TOKEN_SUBJECT + chain[0].id, Role.viewer)
            chain_tokens.append(chain[1])
        fresh = [mint(s, "olga", Role.viewer) for _ in range(2)]
        assert revoke_minted(s, [fresh[0][0].id, fresh[1][0].id], now) == 0  # minted nothing
    for token in (orphan_token, loop_token, chain_tokens[-1]):
        void(token, "the token that created it is gone")
    assert role_of(chain_tokens[MAX_CHAIN - 2]) is None  # MAX_CHAIN links: still accepted
