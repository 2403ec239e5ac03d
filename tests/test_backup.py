"""Backup, restore, export and import: a backup taken during a run restores row for row, a
missing or corrupted blob is reported, a database in use is never restored over, and history
moves between SQLite and PostgreSQL (and under another tenant) without losing a value."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Connection, text

from argosy.ids import new_id
from argosy.ops.backup import import_backup, open_backup, restore, write_backup
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.metadata import db
from argosy.stores.metadata.db import MetadataStore, alembic_config, open_engine
from tests.conftest import Workspace, outputs, wait_for

if TYPE_CHECKING:
    from tests.pg_fixture import PostgresCluster
    from tests.s3_fixture import S3Endpoint


TABLES = ("tenants", "pipelines", "pipeline_versions", "runs", "tasks", "attempts",
          "artifacts", "task_inputs")  # fmt: skip

Rows = dict[str, list[dict[str, Any]]]

# prep and square finish, then slow waits at a gate with its attempt running: lineage edges,
# artifacts, finished and running tasks all exist when the backup is taken
PIPELINE = """
import time
from pathlib import Path
from argosy import step, pipeline

@step
def prep(rows: int) -> list[int]:
    return list(range(rows))

@step
def square(xs: list[int]) -> list[int]:
    return [x * x for x in xs]

@step
def slow(xs: list[int], gate: str) -> int:
    Path(gate, "slow-started").write_text("x")
    while not Path(gate, "release").exists():
        time.sleep(0.05)
    return sum(xs)

@step
def after(total: int) -> str:
    return f"total={total}"

@pipeline
def p(rows: int = 10, gate: str = "/tmp") -> str:
    xs = prep(rows=rows)
    return after(total=slow(xs=square(xs=xs), gate=gate))
"""

QUICK = """
from argosy import step, pipeline

@step
def make(n: int) -> dict:
    return {"n": n, "none": None, "pi": 3.141592653589793}

@step
def use(d: dict) -> float:
    return d["pi"] * d["n"]

@pipeline
def quick(n: int = 2) -> float:
    return use(d=make(n=n))
"""


def raw_rows(db: Path) -> Rows:
    """Every row of every table as SQLite stores it (text of JSON and times, NULL vs 'null'),
    read in one transaction."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN")
        rows = {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY id")]
                for t in TABLES}  # fmt: skip
        conn.execute("COMMIT")
    return rows


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def run_quick(ws: Workspace, **env: str) -> dict[str, Any]:
    res = ws.argosy("run", f"{ws.write(QUICK)}:quick", "-o", "json", env=env)
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = res.json()
    return doc


# -- a backup during a run ------------------------------------------------------------------------


def test_backup_taken_during_a_run_restores_identical_runs_tasks_artifacts_and_lineage(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    source_db = ws.home / "argosy.db"
    engine = ws.spawn("run", f"{ws.write(PIPELINE)}:p", "-p", f"gate={gate}", "-o", "json")
    try:
        wait_for(gate / "slow-started")
        deadline = time.monotonic() + 60  # and the engine has recorded its process (a moment
        while not [a for a in raw_rows(source_db)["attempts"]  # after it started)
                   if a["state"] == "running" and a["pid"]]:  # fmt: skip
            assert time.monotonic() < deadline, "the attempt's process was never recorded"
            time.sleep(0.05)
        before = raw_rows(source_db)
        res = ws.argosy("admin", "backup", str(tmp_path / "nightly.tar"), "-o", "json")
        after_backup = raw_rows(source_db)
        assert res.code == 0, res.stderr
        summary = res.json()
        # the engine holds the run (slow is running) but writes nothing while it waits, so the
        # source as read before and after the backup is the state the backup holds
        assert before == after_backup
        (run,) = before["runs"]
        assert run["status"] == "running" and json.loads(run["engine"])["pid"] == engine.pid
        states = {t["node_path"]: t["state"] for t in before["tasks"]}
        assert states == {"prep": "succeeded", "square": "succeeded", "slow": "running",
                          "after": "pending"}  # fmt: skip
        assert summary["tables"]["artifacts"] == 2 and summary["tables"]["task_inputs"] >= 3
        assert summary["problems"] == [] and summary["revision"] == db.HEAD

        restored_db = tmp_path / "restored" / "argosy.db"
        restored_env = {"ARGOSY_DATABASE_URL": sqlite_url(restored_db)}
        res = ws.argosy("admin", "restore", str(tmp_path / "nightly.tar"), "-o", "json",
                        env=restored_env)  # fmt: skip
        assert res.code == 0, res.stderr
        doc = res.json()
        assert doc["ok"] and doc["problems"] == [] and doc["verify"] == "hash"
        assert doc["blobs"] >= 4  # two artifacts, the code package, the environment
        restored = raw_rows(restored_db)
        for table in TABLES:  # row by row, value by value
            assert restored[table] == before[table], table

        # lineage and the run as the CLI shows them are the same from both databases
        ref = f"{run['id']}/square/output"
        lineage = [ws.argosy("lineage", ref, "-o", "json", env=e) for e in ({}, restored_env)]
        assert lineage[0].code == 0 and lineage[1].code == 0, lineage[1].stderr
        assert lineage[0].json() == lineage[1].json()
        shown = ws.argosy("runs", "show", run["id"], "-o", "json", env=restored_env)
        assert shown.code == 0 and shown.json()["status"] == "running"
    finally:
        (gate / "release").write_text("go")
        _, err = engine.communicate(timeout=120)
    assert engine.returncode == 0, err
    # the source moved on; the restored database stays as it was at the backup
    assert raw_rows(source_db)["runs"][0]["status"] == "succeeded"
    assert raw_rows(restored_db)["runs"][0]["status"] == "running"

    # restored with its runs released, the run in progress is resumed and finishes there
    again = {"ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "again.db")}
    res = ws.argosy("admin", "restore", str(tmp_path / "nightly.tar"), "--release-runs",
                    env=again)  # fmt: skip
    assert res.code == 0, res.stderr
    assert "1 unfinished run(s) released" in res.stdout
    res = ws.argosy("runs", "resume", run["id"], "-o", "json", env=again)
    assert res.code == 0, res.stderr
    assert res.json()["status"] == "succeeded" and outputs(res.json()) == {"output": "total=285"}
    tasks = {t["node_path"]: t for t in raw_rows(tmp_path / "again.db")["tasks"]}
    for node in ("prep", "square"):  # finished before the backup: kept, not run again
        assert tasks[node] == next(t for t in before["tasks"] if t["node_path"] == node)


def test_backup_is_one_snapshot_while_writers_keep_committing(tmp_path: Path) -> None:
    """Each writer transaction adds a task and counts it in its run; a consistent snapshot
    has the count equal to the tasks, and the backup never blocks the writers: while its read
    transaction is open, the writer thread commits three more times (if the snapshot held a
    lock the writers need, those commits could not happen and the wait would fail)."""
    url = sqlite_url(tmp_path / "src.db")
    store = MetadataStore.open(url)
    run_id, seed = new_id(), 20_000
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores it
    with store.session() as s:
        s.execute(text("INSERT INTO tenants (id, tenant, created_at, created_by, name) "
                       "VALUES ('t', 'default', :now, 'me', 'default')"), {"now": now})  # fmt: skip
        s.execute(text("INSERT INTO pipelines (id, tenant, created_at, created_by, name) "
                       "VALUES ('p', 'default', :now, 'me', 'demo')"), {"now": now})  # fmt: skip
        s.execute(text("INSERT INTO pipeline_versions (id, tenant, created_at, created_by, "
                       "pipeline_id, digest, spec, provenance) VALUES ('v', 'default', :now, "
                       "'me', 'p', 'sha256:x', '{}', 'null')"), {"now": now})  # fmt: skip
        s.execute(
            text(
                "INSERT INTO runs (id, tenant, created_at, created_by, pipeline_id, "
                "pipeline_version_id, status, parameters, options, cancel_requested, "
                "outputs) VALUES (:id, 'default', :now, 'me', 'p', 'v', 'running', '{}', "
                "'{}', 0, :n)"
            ),
            {"id": run_id, "now": now, "n": json.dumps({"n": seed})},
        )
        task_sql = text(
            "INSERT INTO tasks (id, tenant, created_at, created_by, run_id, node_path, "
            "step_name, state, attempt_count, failures, inputs, item) VALUES (:id, 'default', "
            ":now, 'me', :run, :path, 'step', 'succeeded', 1, 0, :inputs, NULL)"
        )
        s.execute(task_sql, [{"id": new_id(), "now": now, "run": run_id, "path": f"n[{i}]",
                              "inputs": json.dumps({"i": {"value": i}})}
                             for i in range(seed)])  # fmt: skip

    commits: list[int] = []  # the task count each commit left
    stop = threading.Event()

    def writer() -> None:
        n = seed
        while not stop.is_set():
            with store.session() as s:
                s.execute(task_sql, {"id": new_id(), "now": now, "run": run_id,
                                     "path": f"n[{n}]", "inputs": "null"})  # fmt: skip
                n += 1
                s.execute(text("UPDATE runs SET outputs = :o WHERE id = :id"),
                          {"o": json.dumps({"n": n}), "id": run_id})  # fmt: skip
            commits.append(n)

    def commits_after(count: int, more: int) -> None:
        deadline = time.monotonic() + 60  # a safety net: blocked writers never get there
        while len(commits) < count + more:
            assert thread.is_alive(), "the writer stopped"
            assert time.monotonic() < deadline, "the writers were blocked by the backup"
            time.sleep(0.01)

    seen: Rows = {}
    during: list[int] = []

    def capture(conn: Connection) -> None:  # inside the backup's read transaction
        for t in TABLES:
            result = conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY id")
            seen[t] = [dict(r._mapping) for r in result]
        before = len(commits)
        commits_after(before, 3)  # writers commit while the snapshot is open
        during.extend(commits[before:])
        for t in TABLES:  # and the snapshot does not see them
            result = conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY id")
            assert [dict(r._mapping) for r in result] == seen[t], t

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        commits_after(0, 3)
        summary = write_backup(url, tmp_path / "b", on_snapshot=capture)
    finally:
        stop.set()
        thread.join()
        store.close()
    assert len(during) >= 3
    assert min(during) > summary.tables["tasks"]  # committed after the snapshot's rows
    assert len(raw_rows(tmp_path / "src.db")["tasks"]) > summary.tables["tasks"]

    with open_backup(tmp_path / "b") as backup:
        restore(backup, sqlite_url(tmp_path / "dst.db"), store=None)
    restored = raw_rows(tmp_path / "dst.db")
    for table in TABLES:
        assert restored[table] == seen[table], table
    (run,) = restored["runs"]
    assert json.loads(run["outputs"])["n"] == len(restored["tasks"]) == summary.tables["tasks"]


# -- restore -----------------------------------------------------------------------------------------


def test_restore_reports_missing_and_corrupted_blobs_and_exits_1(
    ws: Workspace, tmp_path: Path
) -> None:
    doc = run_quick(ws)
    res = ws.argosy("admin", "backup", str(tmp_path / "b"))
    assert res.code == 0, res.stderr
    assert "manifest of" in res.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    blobs = manifest["tenants"]["default"]["blobs"]
    artifacts = {e["ref"].rsplit("/", 2)[1]: sha for sha, e in blobs.items()
                 if e["ref"].startswith("artifact ")}  # fmt: skip
    assert set(artifacts) == {"make", "use"}
    store = open_artifact_store(str(ws.home / "blobs"), "default")
    gone = store.backend.local_path(store.blob_key(artifacts["make"]))
    bad = store.backend.local_path(store.blob_key(artifacts["use"]))
    assert gone is not None and bad is not None
    gone.unlink()
    bad.unlink()
    bad.write_bytes(b"not what was stored")

    env = {"ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "new.db")}
    res = ws.argosy("admin", "restore", str(tmp_path / "b"), env=env)
    assert res.code == 1
    assert f"missing: blob sha256:{artifacts['make']} of tenant 'default' is missing" in res.stderr
    assert f"artifact {doc['id']}/make/output" in res.stderr
    assert f"corrupt: blob sha256:{artifacts['use']}" in res.stderr
    assert "2 blobs missing or corrupt" in res.stderr
    assert "restored 1" in res.stdout  # the rows are restored all the same
    assert raw_rows(tmp_path / "new.db") == raw_rows(ws.home / "argosy.db")

    res = ws.argosy("admin", "restore", str(tmp_path / "b"), "--verify", "exists", "-o", "json",
                    env={"ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "newer.db")})  # fmt: skip
    assert res.code == 1
    assert [(p["sha256"], p["problem"]) for p in res.json()["problems"]] == [
        (artifacts["make"], "missing")
    ]


def test_restore_refuses_a_database_that_is_not_empty(ws: Workspace, tmp_path: Path) -> None:
    run_quick(ws)
    assert ws.argosy("admin", "backup", str(tmp_path / "b.tar.gz")).code == 0
    before = raw_rows(ws.home / "argosy.db")
    res = ws.argosy("admin", "restore", str(tmp_path / "b.tar.gz"))
    assert res.code == 2
    assert res.stderr.startswith("error: the target database")
    assert "is not empty (table pipelines has rows)" in res.stderr
    assert "argosy admin import" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert raw_rows(ws.home / "argosy.db") == before
    # a backup never overwrites either
    res = ws.argosy("admin", "backup", str(tmp_path / "b.tar.gz"))
    assert res.code == 2 and "already exists" in res.stderr


def test_restore_of_a_backup_with_blobs_fills_an_empty_artifact_store(
    ws: Workspace, tmp_path: Path
) -> None:
    doc = run_quick(ws)
    res = ws.argosy("admin", "backup", str(tmp_path / "full.tar.gz"), "--blobs", "-o", "json")
    assert res.code == 0, res.stderr
    assert res.json()["blobs_copied"] == res.json()["blobs"] >= 4
    env = {"ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "new" / "argosy.db"),
           "ARGOSY_ARTIFACT_URL": str(tmp_path / "new" / "blobs")}  # fmt: skip
    res = ws.argosy("admin", "restore", str(tmp_path / "full.tar.gz"), "-o", "json", env=env)
    assert res.code == 0, res.stderr
    assert res.json()["blobs_copied"] == res.json()["blobs"]
    assert res.json()["records_copied"] >= 4  # a log and a result per attempt
    got = ws.argosy("artifacts", "get", f"{doc['id']}/make/output", "--out",
                    str(tmp_path / "make.json"), env=env)  # fmt: skip
    assert got.code == 0, got.stderr
    assert json.loads((tmp_path / "make.json").read_text()) == {"n": 2, "none": None,
                                                               "pi": 3.141592653589793}  # fmt: skip
    logs = ws.argosy("logs", doc["id"], "-o", "json", env=env)
    assert logs.code == 0, logs.stderr


def _database_at(url: str, revision: str) -> None:
    """A database at an older ``revision`` with one tenant and one pipeline."""
    from alembic import command

    engine = open_engine(url, migrate=False)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        now = datetime.now(UTC)
        conn.execute(
            text(
                "INSERT INTO tenants (id, tenant, created_at, created_by, name) "
                "VALUES ('T1', 'team-a', :now, 'me', 'team-a')"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO pipelines (id, tenant, created_at, created_by, name) "
                "VALUES ('P1', 'team-a', :now, 'me', 'demo')"
            ),
            {"now": now},
        )
    engine.dispose()


def test_restore_of_an_older_revision_migrates_it_to_head_and_leaves_the_source_alone(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "old.db")
    _database_at(url, "0002")
    summary = write_backup(url, tmp_path / "b")
    assert summary.revision == "0002"
    with closing(sqlite3.connect(tmp_path / "old.db")) as raw:  # a backup never migrates
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
    with open_backup(tmp_path / "b") as backup:
        result = restore(backup, sqlite_url(tmp_path / "new.db"), store=None)
    assert (result.revision, result.head) == ("0002", db.HEAD)
    with closing(sqlite3.connect(tmp_path / "new.db")) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(db.HEAD,)]
        assert raw.execute("SELECT id, name FROM tenants").fetchall() == [("T1", "team-a")]


def test_import_of_an_export_from_an_older_schema_is_migrated_on_the_way(
    tmp_path: Path,
) -> None:
    old = sqlite_url(tmp_path / "old.db")
    _database_at(old, "0001")
    write_backup(old, tmp_path / "e", kind="export")
    target = sqlite_url(tmp_path / "server.db")
    with open_backup(tmp_path / "e") as export:
        result = import_backup(export, target, store=None, tenant_map={"team-a": "vision"})
    assert (result.revision, result.head) == ("0001", db.HEAD)
    assert result.tables["pipelines"] == {"inserted": 1, "present": 0, "merged": 0}
    with closing(sqlite3.connect(tmp_path / "server.db")) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(db.HEAD,)]
        assert raw.execute("SELECT id, tenant, name FROM pipelines").fetchall() == [
            ("P1", "vision", "demo")
        ]
        assert raw.execute("SELECT tenant, name FROM tenants").fetchall() == [("vision", "vision")]


# -- export and import --------------------------------------------------------------------------------


def test_export_from_sqlite_imports_into_another_sqlite_with_identical_rows(
    ws: Workspace, tmp_path: Path
) -> None:
    run_quick(ws)
    run_quick(ws)  # a second run (cached): cached_from, artifacts without attempts
    res = ws.argosy("admin", "export", str(tmp_path / "laptop.tar"))
    assert res.code == 0, res.stderr
    other = {"ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "other" / "argosy.db"),
             "ARGOSY_ARTIFACT_URL": str(tmp_path / "other" / "blobs")}  # fmt: skip
    res = ws.argosy("admin", "import", str(tmp_path / "laptop.tar"), "-o", "json", env=other)
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["ok"] and doc["blobs_copied"] == doc["blobs"]
    assert doc["tables"]["runs"] == {"inserted": 2, "present": 0, "merged": 0}
    source = raw_rows(ws.home / "argosy.db")
    assert raw_rows(tmp_path / "other" / "argosy.db") == source
    # importing again changes nothing
    res = ws.argosy("admin", "import", str(tmp_path / "laptop.tar"), "-o", "json", env=other)
    assert res.code == 0, res.stderr
    assert all(t["inserted"] == 0 for t in res.json()["tables"].values())
    assert raw_rows(tmp_path / "other" / "argosy.db") == source


def test_import_under_another_tenant_merges_pipelines_and_rekeys_blobs(
    ws: Workspace, tmp_path: Path
) -> None:
    laptop = run_quick(ws)
    assert ws.argosy("admin", "export", str(tmp_path / "e")).code == 0
    server = {"ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "srv" / "argosy.db"),
              "ARGOSY_ARTIFACT_URL": str(tmp_path / "srv" / "blobs"),
              "ARGOSY_TENANT": "team-a"}  # fmt: skip
    res = ws.argosy("run", f"{ws.write(QUICK, name='served')}:quick", "-p", "n=3", "-o", "json",
                    env=server)  # fmt: skip
    assert res.code == 0, res.stderr

    res = ws.argosy("admin", "import", str(tmp_path / "e"), "--tenant", "team-a", env=server)
    assert res.code == 0, res.stderr
    assert "tenants default -> team-a" in res.stdout
    rows = raw_rows(tmp_path / "srv" / "argosy.db")
    assert {r["tenant"] for t in TABLES for r in rows[t]} == {"team-a"}
    assert [r["name"] for r in rows["tenants"]] == ["team-a"]  # merged into the server's
    assert len(rows["pipelines"]) == 1  # same pipeline name: one pipeline, two runs
    assert {r["pipeline_id"] for r in rows["runs"]} == {rows["pipelines"][0]["id"]}
    runs = ws.argosy("runs", "list", "-o", "json", env=server)
    assert laptop["id"] in {r["id"] for r in runs.json()["runs"]}
    got = ws.argosy("artifacts", "get", f"{laptop['id']}/use/output", "--out",
                    str(tmp_path / "use.json"), env=server)  # fmt: skip
    assert got.code == 0, got.stderr  # the blob is under the server's tenant now
    assert json.loads((tmp_path / "use.json").read_text()) == pytest.approx(2 * 3.141592653589793)

    res = ws.argosy("admin", "import", str(tmp_path / "e"), "--tenant", "team-b", env=server)
    assert res.code == 2
    assert "already exists here in tenant 'team-a', not 'team-b'" in res.stderr
    res = ws.argosy("admin", "import", str(tmp_path / "e"), "--tenant", "x=team-b", env=server)
    assert res.code == 2 and "tenant 'x' is not in this export" in res.stderr


# -- PostgreSQL (and S3): a laptop's history into the shared server -----------------------------------


def test_laptop_history_moves_into_postgresql_and_s3_and_back_unchanged(
    ws: Workspace,
    tmp_path: Path,
    pg_cluster: PostgresCluster,
    pg_url: str,
    s3_env: S3Endpoint,
    s3_url: str,
) -> None:
    # the server's session time zone is not UTC: times must still come back the same
    pg_cluster.sql(f"ALTER DATABASE \"{pg_url.rsplit('/', 1)[1]}\" SET TimeZone = 'Asia/Kolkata'")
    laptop = run_quick(ws)
    run_quick(ws, ARGOSY_CACHE="false")
    source = raw_rows(ws.home / "argosy.db")
    assert ws.argosy("admin", "export", str(tmp_path / "laptop.tar.gz")).code == 0

    server = {**s3_env.argosy_env(s3_url), "ARGOSY_DATABASE_URL": pg_url,
              "ARGOSY_TENANT": "team-a"}  # fmt: skip
    res = ws.argosy("admin", "import", str(tmp_path / "laptop.tar.gz"), "--tenant", "team-a",
                    "-o", "json", env=server)  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.json()["ok"] and res.json()["blobs_copied"] == res.json()["blobs"]
    got = ws.argosy("artifacts", "get", f"{laptop['id']}/make/output", "--out",
                    str(tmp_path / "make.json"), env=server)  # fmt: skip
    assert got.code == 0, got.stderr
    engine = open_engine(pg_url, migrate=False)
    try:
        with engine.connect() as conn:
            nulls = conn.execute(text("SELECT engine IS NULL, engine::text FROM runs")).all()
            assert {tuple(r) for r in nulls} == {(False, "null")}  # JSON null, not SQL NULL
    finally:
        engine.dispose()

    # and back: a backup of the server restores into SQLite exactly as the laptop had it
    res = ws.argosy("admin", "backup", str(tmp_path / "server"), env=server)
    assert res.code == 0, res.stderr
    back = {**server, "ARGOSY_DATABASE_URL": sqlite_url(tmp_path / "back.db")}
    res = ws.argosy("admin", "restore", str(tmp_path / "server"), env=back)
    assert res.code == 0, res.stderr
    restored = raw_rows(tmp_path / "back.db")
    for table in TABLES:
        expected = [dict(r, tenant="team-a") for r in source[table]]
        if table == "tenants":
            expected = [dict(r, name="team-a") for r in expected]
        assert restored[table] == expected, table
