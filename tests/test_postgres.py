"""The PostgreSQL metadata backend, against a real server started for the session:
migrations build exactly the models' schema (as on SQLite), durability settings are checked,
transient disconnects are retried where that is safe, work claiming skips locked rows, and a
run survives the server being down for 20 s."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from argosy.client.local import open_local
from argosy.config import load_settings
from argosy.engine.engine import _RunLoop
from argosy.errors import StoreError
from argosy.ids import new_id
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.spec.parameters import bind_parameters
from argosy.states import TaskState
from argosy.stores.metadata import db
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore, open_engine
from argosy.stores.metadata.tables import Attempt, Run, Task
from tests.conftest import Workspace, alive, outputs, wait_for
from tests.test_migrations import schema_differences

if TYPE_CHECKING:
    from tests.pg_fixture import PostgresCluster

# the session's PostgreSQL server (pg_cluster) and a database per test (pg_url)

# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def store(pg_url: str) -> Iterator[MetadataStore]:
    opened = MetadataStore.open(pg_url)
    try:
        yield opened
    finally:
        opened.close()


# -- migrations ----------------------------------------------------------------------------------


def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    results: list[object] = []

    def open_one() -> None:
        try:
            MetadataStore.open(pg_url).close()
            results.append("ok")
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == ["ok"] * 4
    engine = open_engine(pg_url, migrate=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [
                (db.HEAD,)
            ]
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


# -- opening, settings, durability -----------------------------------------------------------------


def test_plain_postgres_urls_mean_psycopg_3(pg_url: str) -> None:
    assert db.normalize_url("postgres://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert db.normalize_url("postgresql://u@h:5433/d") == "postgresql+psycopg://u@h:5433/d"
    assert db.normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    store = MetadataStore.open(plain)
    try:
        assert store.engine.dialect.driver == "psycopg"
        assert db.current_revision(store.engine) == db.HEAD
    finally:
        store.close()


def test_connections_are_pre_pinged_pooled_and_bounded(store: MetadataStore) -> None:
    pool = store.engine.pool
    assert pool._pre_ping
    assert pool.timeout() == db.POOL_TIMEOUT_S  # type: ignore[attr-defined]
    assert pool.size() == db.POOL_SIZE  # type: ignore[attr-defined]
    with store.session() as s:
        assert s.execute(text("SHOW statement_timeout")).scalar() == "1min"
        assert s.execute(text("SHOW lock_timeout")).scalar() == "30s"
        assert s.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "10min"
        assert s.execute(text("SHOW application_name")).scalar() == "argosy"
        assert s.execute(text("SHOW TimeZone")).scalar() == "UTC"


def test_times_come_back_in_utc_whatever_the_database_time_zone(
    pg_cluster: PostgresCluster, pg_url: str
) -> None:
    pg_cluster.sql(f"ALTER DATABASE \"{pg_url.rsplit('/', 1)[1]}\" SET TimeZone = 'Asia/Kolkata'")
    store = MetadataStore.open(pg_url)
    try:
        with store.session() as s:
            q.ensure_tenant(s, "team-a", "alice")
        with store.session() as s:
            created = s.scalar(text("SELECT created_at FROM tenants"))
        assert created.utcoffset() == timedelta(0)
        assert abs((created - q.now()).total_seconds()) < 60
    finally:
        store.close()


def test_settings_in_the_url_win_over_the_defaults(pg_url: str) -> None:
    store = MetadataStore.open(pg_url + "?application_name=mine&options=-c%20lock_timeout%3D5s")
    try:
        with store.session() as s:
            assert s.execute(text("SHOW application_name")).scalar() == "mine"
            assert s.execute(text("SHOW lock_timeout")).scalar() == "5s"
            assert s.execute(text("SHOW statement_timeout")).scalar() == "1min"  # still ours
    finally:
        store.close()


def test_unreachable_server_is_one_clear_line_naming_host_and_what_to_check() -> None:
    from tests.pg_fixture import free_port

    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        MetadataStore.open(f"postgresql://argosy@127.0.0.1:{port}/argosy", wait=1.0)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}/argosy" in message
    assert "Connection refused" in message
    assert "check that PostgreSQL runs there" in message


def test_a_missing_database_is_not_retried_and_says_how_to_create_it(
    pg_cluster: PostgresCluster,
) -> None:
    attempts: list[str] = []

    def count(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        attempts.append(str(cparams.get("dbname")))

    event.listen(Engine, "do_connect", count)  # every engine's connection attempts
    try:
        with pytest.raises(StoreError, match=r"does not exist; create the database first"):
            MetadataStore.open(pg_cluster.url("no_such_db"), wait=30)
    finally:
        event.remove(Engine, "do_connect", count)
    assert attempts == ["no_such_db"]  # one attempt, although 30 s of retries were allowed


def test_durability_settings_are_checked_at_start_up(
    pg_cluster: PostgresCluster, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="argosy.metadata")
    open_engine(pg_url).dispose()
    assert [r for r in caplog.records if r.name == "argosy.metadata"] == []

    database = pg_url.rsplit("/", 1)[1]
    pg_cluster.sql(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    pg_cluster.sql("ALTER SYSTEM SET fsync = off")
    pg_cluster.sql("SELECT pg_reload_conf()")
    try:
        deadline = time.monotonic() + 10
        while pg_cluster.sql("SHOW fsync") != "off":  # the reload is asynchronous
            assert time.monotonic() < deadline
            time.sleep(0.05)
        caplog.clear()
        engine = open_engine(pg_url)
        try:
            assert db.check_durability(engine) == ["fsync=off", "synchronous_commit=off"]
        finally:
            engine.dispose()
    finally:
        pg_cluster.sql("ALTER SYSTEM RESET fsync")
        pg_cluster.sql("SELECT pg_reload_conf()")
    warned = [r.getMessage() for r in caplog.records if r.name == "argosy.metadata"]
    assert len(warned) == 2  # once when opening, once from the explicit check
    assert "\n" not in warned[0]
    assert "fsync=off and synchronous_commit=off" in warned[0]
    assert database in warned[0]


# -- retries -----------------------------------------------------------------------------------------


def test_idempotent_reads_are_retried_across_a_server_restart(
    pg_cluster: PostgresCluster, store: MetadataStore
) -> None:
    with store.session() as s:
        q.ensure_tenant(s, "team-a", "alice")
    failed = threading.Event()
    attempts: list[int] = []

    def connecting(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        attempts.append(1)
        if not pg_cluster.running():
            failed.set()  # this attempt meets the outage

    def come_back() -> None:
        assert failed.wait(60), "the read never tried to connect during the outage"
        pg_cluster.start()

    event.listen(store.engine, "do_connect", connecting)
    pg_cluster.stop("fast")  # the outage has begun: the pool's connections are cut
    restart = threading.Thread(target=come_back)
    restart.start()
    try:
        names = store.retrying(
            lambda s: s.scalars(text("SELECT name FROM tenants")).all(), seconds=60
        )
    finally:
        restart.join(90)
        if not pg_cluster.running():
            pg_cluster.start()
        event.remove(store.engine, "do_connect", connecting)
    assert names == ["team-a"]
    assert failed.is_set() and len(attempts) >= 2  # refused during the outage, then served
    assert db.retry(lambda: db.current_revision(store.engine), seconds=5) == db.HEAD


def test_errors_that_are_not_transient_are_not_retried(store: MetadataStore) -> None:
    calls = 0

    def bad(s: object) -> object:
        nonlocal calls
        calls += 1
        return s.execute(text("SELECT * FROM no_such_table"))  # type: ignore[attr-defined]

    with pytest.raises(ProgrammingError):
        store.retrying(bad, seconds=30)
    assert calls == 1


# -- claiming work -------------------------------------------------------------------------------


def _queued_tasks(store: MetadataStore, count: int) -> set[str]:
    with store.session() as s:
        q.ensure_tenant(s, "default", "alice")
        now = q.now()
        ids = set()
        s.execute(
            text(
                "INSERT INTO pipelines (id, tenant, name, created_at, created_by) "
                "VALUES ('01PIPELINE000000000000000A', 'default', 'p', :now, 'alice')"
            ),
            {"now": now},
        )
        s.execute(
            text(
                "INSERT INTO pipeline_versions (id, tenant, pipeline_id, digest, spec, created_at,"
                " created_by) VALUES ('01VERSION0000000000000000A', 'default',"
                " '01PIPELINE000000000000000A', 'sha256:x', '{}', :now, 'alice')"
            ),
            {"now": now},
        )
        run = Run(
            id=new_id(), tenant="default", pipeline_id="01PIPELINE000000000000000A",
            pipeline_version_id="01VERSION0000000000000000A", status="running", parameters={},
            options={}, cancel_requested=False, created_at=now, created_by="alice",
        )  # fmt: skip
        s.add(run)
        s.flush()
        for i in range(count):
            task = Task(
                id=new_id(), tenant="default", run_id=run.id, node_path=f"t{i}", step_name="t",
                state=TaskState.QUEUED, attempt_count=0, failures=0, queued_at=now,
                created_at=now, created_by="alice",
            )  # fmt: skip
            s.add(task)
            ids.add(task.id)
    return ids


def test_concurrent_claims_get_disjoint_tasks_and_skip_locked_rows(store: MetadataStore) -> None:
    queued = _queued_tasks(store, 6)
    with store.session() as first, store.session() as second:
        a = {t.id for t in q.claim_queued_tasks(first, "default", 4)}
        b = {t.id for t in q.claim_queued_tasks(second, "default", 4)}  # does not wait for first
        assert len(a) == 4
        assert len(b) == 2
        assert a.isdisjoint(b)
        assert a | b == queued
        with store.session() as third:
            assert q.claim_queued_tasks(third, "default", 4) == []
        for task in q.claim_queued_tasks(first, "default", 4):  # a transaction sees its own locks
            task.state = TaskState.RUNNING
    with store.session() as s:  # the claims ended with their transactions
        states = {i: st for i, st in s.execute(select(Task.id, Task.state))}
        assert {i for i, st in states.items() if st == TaskState.RUNNING} == a
        assert {t.id for t in q.claim_queued_tasks(s, "default", 10)} == b
        assert q.claim_queued_tasks(s, "other-tenant", 10) == []


def test_claiming_also_works_on_sqlite(tmp_path: Path) -> None:
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'argosy.db'}")
    try:
        queued = _queued_tasks(store, 3)
        with store.session() as s:
            assert {t.id for t in q.claim_queued_tasks(s, "default", 10)} == queued
    finally:
        store.close()


# -- outages during a run ------------------------------------------------------------------------

OUTAGE = """
import time
from pathlib import Path
from argosy import step, pipeline

@step
def square(i: int, gate: str) -> int:
    Path(gate, f"square-{i}").write_text("started")
    time.sleep(3)
    return i * i

@step
def total(a: int, b: int, c: int, d: int) -> int:
    return a + b + c + d

@step
def describe(t: int) -> str:
    return f"total={t}"

@pipeline
def outage(gate: str = "/tmp") -> str:
    sq = [square(i=i, gate=gate) for i in range(4)]
    return describe(t=total(a=sq[0], b=sq[1], c=sq[2], d=sq[3]))
"""


@pytest.mark.slow
def test_a_run_survives_the_database_being_down_for_20_seconds(
    ws: Workspace, pg_cluster: PostgresCluster, pg_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(OUTAGE)
    proc = ws.spawn(
        "run", str(path), "-p", f"gate={gate}", "--max-cpus", "2", "--output", "json",
        env={"ARGOSY_DATABASE_URL": pg_url},
    )  # fmt: skip
    try:
        wait_for(gate / "square-0")
        wait_for(gate / "square-1")
        pg_cluster.stop("fast")
        try:
            # the two attempts end while the server is down; nothing can be written
            down = time.monotonic()
            while time.monotonic() - down < 20:
                assert proc.poll() is None, "the engine exited while the database was down"
                time.sleep(0.5)
            assert not (gate / "square-2").exists(), "a task started without the database"
        finally:
            pg_cluster.start()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "database unreachable, retrying for up to 600 s" in err
    assert "database reachable again" in err
    doc = json.loads(out)
    assert doc["status"] == "succeeded"
    assert outputs(doc) == {"output": "total=14"}
    steps = {s["node_path"]: s for s in doc["tasks"]}
    assert set(steps) == {"square", "square-2", "square-3", "square-4", "total", "describe"}
    for node, step in steps.items():
        assert step["state"] == "succeeded", node
        ok = [a for a in step["attempts"] if a["state"] == "succeeded"]
        assert len(ok) == 1, f"{node}: {step['attempts']}"
    # in the database too: one succeeded attempt and one row per output, per task
    store = MetadataStore.open(pg_url)
    try:
        with store.session() as s:
            run = s.get_one(Run, doc["id"])
            assert run.status == "succeeded"
            assert run.engine is None
            per_task: dict[str, int] = {}
            for attempt in q.attempts_of(s, run.id):
                per_task.setdefault(attempt.task_id, 0)
                per_task[attempt.task_id] += attempt.state == "succeeded"
            assert sorted(per_task.values()) == [1] * 6
            arts = q.artifacts_of(s, run.id)
            assert sorted(a.node_path for a in arts) == sorted(steps)
    finally:
        store.close()


GIVE_UP = """
import time
from pathlib import Path
from argosy import step, pipeline

@step
def wait(gate: str) -> int:
    first = not Path(gate, "first").exists()
    Path(gate, "first").write_text("started")
    Path(gate, "pid").write_text(str(__import__("os").getpid()))
    if first:
        time.sleep(120)
    return 7

@pipeline
def give_up(gate: str = "/tmp") -> int:
    return wait(gate=gate)
"""


def test_the_engine_gives_up_after_db_retry_seconds_and_resume_finishes_the_run(
    ws: Workspace,
    pg_cluster: PostgresCluster,
    pg_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="argosy.engine")
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(GIVE_UP)
    monkeypatch.chdir(ws.root)
    local = open_local(load_settings(home=ws.home, database_url=pg_url))
    try:
        compiled = compile_pipeline(load_pipeline(str(path)), cache_dir=ws.home / "cache")
        engine = local.engine()
        engine.db_retry_seconds = 2.0
        run_id = engine.submit(compiled, bind_parameters(compiled.spec, {"gate": str(gate)}))
        with local.metadata.session() as s:
            run = s.get_one(Run, run_id)
            spec, options = q.get_spec(s, run), dict(run.options)
        engine._claim(run_id)
        loop = _RunLoop(engine, run_id, spec, dict(run.parameters), options)

        def outage() -> None:
            wait_for(gate / "pid")
            pg_cluster.stop("fast")

        stopper = threading.Thread(target=outage)
        stopper.start()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="was unreachable for 2 s") as info:
                loop.run()
            assert time.monotonic() - started < 60
        finally:
            stopper.join(60)
            pg_cluster.start()
        assert f"argosy runs resume {run_id}" in str(info.value)
        assert not alive(int((gate / "pid").read_text())), "the attempt outlived its engine"
        warned = [r.getMessage() for r in caplog.records if r.name == "argosy.engine"]
        assert warned[0].startswith("database unreachable, retrying for up to 2 s")

        # nothing was lost: resuming re-runs the ended attempt and finishes the run
        engine._release(run_id)  # as Engine.execute does (this test drove the loop itself)
        res = ws.argosy("runs", "resume", run_id, "-o", "json", env={"ARGOSY_DATABASE_URL": pg_url})
        assert res.code == 0, res.stderr
        assert outputs(res.json()) == {"output": 7}
        with local.metadata.session() as s:
            attempts = s.scalars(select(Attempt).where(Attempt.run_id == run_id)).all()
            assert [(a.number, a.state) for a in attempts] == [(1, "failed"), (2, "succeeded")]
    finally:
        local.metadata.close()


FLAPPING = """
import time
from argosy import step, pipeline

@step
def numbers(n: int) -> list:
    return list(range(n))

@step
def double(i: int) -> int:
    time.sleep(0.2)
    return i * 2

@step
def add(xs: list) -> int:
    return sum(xs)

@pipeline
def flapping(n: int = 40) -> int:
    return add(xs=double.map(numbers(n=n)))
"""


def _a_task_started(store: MetadataStore) -> bool:
    try:
        with store.session() as s:
            return s.scalar(select(Attempt.id).limit(1)) is not None
    except ProgrammingError:  # the CLI has not made the tables yet
        return False


@pytest.mark.slow
def test_short_outages_at_any_moment_lose_nothing_and_run_nothing_twice(
    ws: Workspace, pg_cluster: PostgresCluster, pg_url: str
) -> None:
    """Outages that cut transactions anywhere (a start, a settle, a map's iterations)."""
    import random

    rng = random.Random(7)
    path = ws.write(FLAPPING)
    proc = ws.spawn(
        "run", str(path), "--max-cpus", "2", "--output", "json",
        env={"ARGOSY_DATABASE_URL": pg_url},
    )  # fmt: skip
    try:
        watch = MetadataStore.open(pg_url)  # until it is submitted and a task has started
        try:
            deadline = time.monotonic() + 120
            while not _a_task_started(watch):
                assert time.monotonic() < deadline and proc.poll() is None, "no task started"
                time.sleep(0.1)
        finally:
            watch.close()
        for _ in range(5):
            if proc.poll() is not None:
                break
            pg_cluster.stop(rng.choice(["fast", "immediate"]))  # immediate: no goodbye at all
            time.sleep(rng.uniform(0.2, 1.5))
            pg_cluster.start()
            time.sleep(rng.uniform(0.3, 1.5))
        out, err = proc.communicate(timeout=120)
    finally:
        if not pg_cluster.running():
            pg_cluster.start()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "database unreachable" in err
    doc = json.loads(out)
    assert outputs(doc) == {"output": sum(2 * i for i in range(40))}
    steps = doc["tasks"]
    assert len(steps) == 43  # numbers, double (the map), its 40 iterations, add
    for step in steps:
        if step["node_path"] == "double":
            continue  # the map node itself runs no attempt
        ok = [a for a in step["attempts"] if a["state"] == "succeeded"]
        assert len(ok) == 1, f"{step['node']}: {step['attempts']}"


def test_a_command_that_loses_the_database_midway_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A connection refused after the command opened the store (a real driver error from a
    closed port) ends the CLI with one line and the store's exit code, not a traceback."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from argosy.cli import main as cli

    nowhere = create_engine("postgresql+psycopg://argosy@127.0.0.1:1/gone")
    try:
        nowhere.connect()
    except OperationalError as exc:
        lost = exc

    def command(prog_name: str) -> None:
        raise lost

    monkeypatch.setattr(cli, "app_for", lambda args: command)
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == StoreError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the metadata database stopped")
    assert "Connection refused" in err and "runs resume" in err
    monkeypatch.setattr(cli, "app_for", lambda args: lambda prog_name: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # anything else is not called a lost database
        cli.main()
