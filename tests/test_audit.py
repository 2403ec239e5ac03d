"""The audit log: one hash chain under concurrent appenders (PostgreSQL), ``verify`` naming an
edited, a deleted and reordered rows (changed with raw SQL), JSON-lines export, the CLI, and
the middleware recording a mutating request, denials and an artifact download on a real
server process."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from argosy.api import API_PREFIX
from argosy.auth import audit
from argosy.ids import new_id
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import AuditEvent
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

ADMIN = {"sub": "root-admin", "groups": ["platform-admins"]}


def _append(url: str, who: str, n: int) -> None:
    store = MetadataStore.open(url)
    try:
        for i in range(n):
            with store.session() as s:
                audit.record(
                    s, actor=who, actor_kind="user", action="run.create", tenant="team-a",
                    resource=f"/api/v1/tenants/team-a/runs/{i}", outcome="allowed",
                    source="10.0.0.1", detail={"i": i},
                )  # fmt: skip
    finally:
        store.close()


def _chain(store: MetadataStore) -> list[AuditEvent]:
    with store.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all())


def _assert_one_chain(rows: list[AuditEvent]) -> None:
    previous = audit.GENESIS
    for row in rows:
        assert row.prev_hash == previous, f"fork at seq {row.seq}"
        assert audit.chain_hash(row.prev_hash, row) == row.hash
        previous = row.hash


@pytest.mark.postgresql
def test_concurrent_appenders_keep_one_chain_on_postgresql(pg_migrated_url: str) -> None:
    threads = [
        threading.Thread(target=_append, args=(pg_migrated_url, f"thread-{i}", 15))
        for i in range(6)
    ]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(pg_migrated_url, f"proc-{i}", 15)) for i in range(3)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = MetadataStore.open(pg_migrated_url)
    try:
        with store.session() as s:  # PostgreSQL text refuses NUL: it is escaped, not lost
            audit.record(s, actor="x\x00", actor_kind="anonymous", action="http.get",
                         resource="/api/v1/%00/\x00", outcome="denied")  # fmt: skip
        rows = _chain(store)
        assert len(rows) == 9 * 15 + 1 and rows[-1].resource == "/api/v1/%00/\\x00"
        _assert_one_chain(rows)
        with store.session() as s:
            assert audit.verify(s) == []
    finally:
        store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[MetadataStore, str]]:
    url = f"sqlite:///{tmp_path / 'argosy.db'}"
    store = MetadataStore.open(url)
    yield store, url
    store.close()


def _fill(store: MetadataStore, n: int, tenant: str = "team-a") -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(n):
        with store.session() as s:
            audit.record(
                s, actor="alice", actor_kind="user", action="run.create",
                tenant=tenant if i % 2 == 0 else "team-b", resource=f"/r/{i}",
                outcome="allowed", source="127.0.0.1", detail={"i": i},
                at=base + timedelta(hours=i),
            )  # fmt: skip


def test_verify_detects_an_edited_a_deleted_and_reordered_rows(
    sqlite_store: tuple[MetadataStore, str], tmp_path: Path
) -> None:
    store, url = sqlite_store
    _fill(store, 12)
    with store.session() as s:
        assert audit.verify(s) == []
    db = sqlite3.connect(tmp_path / "argosy.db")
    with db:
        db.execute("UPDATE audit_events SET outcome = 'denied' WHERE seq = 3")  # edited
        db.execute("DELETE FROM audit_events WHERE seq = 6")  # deleted
        db.execute("UPDATE audit_events SET seq = -1 WHERE seq = 9")  # 9 and 10 swapped
        db.execute("UPDATE audit_events SET seq = 9 WHERE seq = 10")
        db.execute("UPDATE audit_events SET seq = 10 WHERE seq = -1")
    db.close()
    with store.session() as s:
        problems = audit.verify(s)
    kinds = {(p.kind, p.seq) for p in problems}
    assert ("edited", 3) in kinds
    assert ("deleted", 7) in kinds and "seq 6-6 missing" in str(
        next(p for p in problems if p.kind == "deleted")
    )
    assert {("reordered", 9), ("reordered", 10)} <= kinds
    assert not any(p.kind == "edited" and p.seq != 3 for p in problems)

    cli = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "admin", "audit", "verify"],
        env={**os.environ, "ARGOSY_DATABASE_URL": url, "ARGOSY_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    assert "edited: event 3" in cli.stdout and "deleted" in cli.stdout
    assert "reordered" in cli.stdout


def test_an_intact_log_verifies_and_exports_json_lines(
    sqlite_store: tuple[MetadataStore, str], tmp_path: Path
) -> None:
    store, url = sqlite_store
    _fill(store, 6)
    with store.session() as s:
        lines = list(audit.export(s))
        since = list(audit.export(s, since=datetime(2026, 3, 1, 3, tzinfo=UTC), tenant="team-a"))
    docs = [json.loads(line) for line in lines]
    assert [d["seq"] for d in docs] == [1, 2, 3, 4, 5, 6]
    assert all(line.endswith("\n") for line in lines)
    assert docs[0]["prev_hash"] == audit.GENESIS and docs[1]["prev_hash"] == docs[0]["hash"]
    assert [json.loads(line)["detail"]["i"] for line in since] == [4]

    env = {**os.environ, "ARGOSY_DATABASE_URL": url, "ARGOSY_HOME": str(tmp_path)}
    ok = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "admin", "audit", "verify"], env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0 and "intact: 6 events" in ok.stdout
    out = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "admin", "audit", "export", "--tenant",
         "team-b", "--since", "2026-03-01T02:00:00Z"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["detail"]["i"] for x in out.stdout.splitlines()] == [3, 5]


def test_secret_looking_detail_values_are_masked(sqlite_store: tuple[MetadataStore, str]) -> None:
    store, _ = sqlite_store
    with store.session() as s:
        event = audit.record(
            s, actor="bob", actor_kind="user", action="token.write", tenant="t",
            detail={"token": "argosy_abc", "nested": {"client_secret": "x"}, "tokens_revoked": 2},
        )  # fmt: skip
        assert event.detail == {"token": "***", "nested": {"client_secret": "***"},
                                "tokens_revoked": 2}  # fmt: skip


# -- the middleware, on a real server ----------------------------------------------------------
@pytest.fixture(scope="module")
def server(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("audit-server")
    started = start_server(
        home, oidc_env(oidc_issuer.issuer, ARGOSY_ENCRYPTION="false", ARGOSY_SCIM_TOKEN="s3cr3t")
    )
    yield started
    started.stop(timeout=20)


def _events(server: ServerProcess) -> list[dict[str, Any]]:
    store = MetadataStore.open(f"sqlite:///{server.home / 'argosy.db'}")
    try:
        with store.session() as s:
            return [json.loads(line) for line in audit.export(s)]
    finally:
        store.close()


def _insert_artifact(server: ServerProcess, tenant: str, payload: bytes) -> str:
    """An artifact row (foreign keys off: no run needed) and its blob in the tenant's store."""
    info = open_artifact_store(str(server.home / "blobs"), tenant).put_bytes(payload)
    db = sqlite3.connect(server.home / "argosy.db")
    art_id = new_id()
    values: dict[str, Any] = {
        "id": art_id, "tenant": tenant, "created_at": datetime.now(UTC).isoformat(" "),
        "created_by": "test", "node_path": "make", "output_name": "out", "type": "bytes",
        "format": "bytes", "sha256": info.sha256, "size": info.size,
    }  # fmt: skip
    for _, name, kind, notnull, default, _pk in db.execute("PRAGMA table_info(artifacts)"):
        if name not in values and notnull and default is None:
            values[name] = 0 if "INT" in kind.upper() else new_id()
    with db:
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute(
            f"INSERT INTO artifacts ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            list(values.values()),
        )
    db.close()
    return art_id


def test_middleware_records_mutations_denials_and_downloads(
    server: ServerProcess, oidc_issuer: OidcIssuer
) -> None:
    admin = {"Authorization": f"Bearer {oidc_issuer.token(**ADMIN)}"}  # type: ignore[arg-type]
    created = httpx.post(f"{server.url}{API_PREFIX}/tenants", json={"name": "aud-a"},
                         headers=admin, timeout=30)  # fmt: skip
    assert created.status_code == 201, created.text
    anonymous = httpx.get(f"{server.url}{API_PREFIX}/tenants/aud-a/runs", timeout=30)
    assert anonymous.status_code == 401
    stranger = oidc_issuer.token(sub="mallory", groups=["nobody"])
    forbidden = httpx.post(
        f"{server.url}{API_PREFIX}/tenants/aud-a/runs", json={"pipeline": "p"},
        headers={"Authorization": f"Bearer {stranger}"}, timeout=30,
    )  # fmt: skip
    assert forbidden.status_code == 403
    payload = b"secret model weights"
    art = _insert_artifact(server, "aud-a", payload)
    got = httpx.get(f"{server.url}{API_PREFIX}/tenants/aud-a/artifacts/{art}/content",
                    headers=admin, timeout=30)  # fmt: skip
    assert got.status_code == 200 and got.content == payload
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith("attachment")
    scim = httpx.get(f"{server.url}/scim/v2/Users", headers={"Authorization": "Bearer wrong"},
                     timeout=30)  # fmt: skip
    assert scim.status_code == 401
    reads = httpx.get(f"{server.url}{API_PREFIX}/tenants/aud-a/runs", headers=admin, timeout=30)
    assert reads.status_code == 200

    events = _events(server)
    by = {(e["action"], e["outcome"], e["actor"]): e for e in events}
    made = by[("tenant.create", "allowed", "root-admin")]
    assert made["resource"] == f"{API_PREFIX}/tenants" and made["source"] == "127.0.0.1"
    assert made["detail"]["status"] == 201 and made["actor_kind"] == "user"
    denied = by[("run.read", "denied", "anonymous")]
    assert denied["tenant"] == "aud-a" and denied["detail"]["status"] == 401
    assert by[("run.create", "denied", "mallory")]["detail"]["status"] == 403
    download = by[("artifact.read", "allowed", "root-admin")]
    assert download["resource"].endswith(f"/artifacts/{art}/content")
    assert by[("scim", "denied", "anonymous")]["resource"] == "/scim/v2/Users"
    # plain reads are not recorded; no token ever appears in an event
    assert not any(e["action"] == "run.read" and e["outcome"] == "allowed" for e in events)
    text_of_log = json.dumps(events)
    assert stranger not in text_of_log and "wrong" not in text_of_log

    # owners read the tenant's log, admins everything and the export
    listed = httpx.get(f"{server.url}{API_PREFIX}/tenants/aud-a/audit", headers=admin,
                       params={"outcome": "denied", "limit": 1}, timeout=30).json()  # fmt: skip
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    more = httpx.get(f"{server.url}{API_PREFIX}/tenants/aud-a/audit", headers=admin,
                     params={"outcome": "denied", "cursor": listed["next_cursor"]},
                     timeout=30).json()  # fmt: skip
    assert {e["actor"] for e in listed["items"] + more["items"]} == {"anonymous", "mallory"}
    assert httpx.get(f"{server.url}{API_PREFIX}/audit", timeout=30).status_code == 401
    nobody = httpx.get(f"{server.url}{API_PREFIX}/audit",
                       headers={"Authorization": f"Bearer {stranger}"}, timeout=30)  # fmt: skip
    assert nobody.status_code == 403
    exported = httpx.get(f"{server.url}{API_PREFIX}/audit/export", headers=admin, timeout=30)
    assert exported.status_code == 200
    lines = [json.loads(x) for x in exported.text.splitlines()]
    assert lines and [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)
    store = MetadataStore.open(f"sqlite:///{server.home / 'argosy.db'}")
    try:
        with store.session() as s:
            assert audit.verify(s) == []  # the server's appends form one unbroken chain
            # the export is the log itself: every event up to its last one, in order
            stored = s.scalars(
                select(AuditEvent.seq)
                .where(AuditEvent.seq <= lines[-1]["seq"])
                .order_by(AuditEvent.seq)
            ).all()
            assert list(stored) == [x["seq"] for x in lines]
    finally:
        store.close()
