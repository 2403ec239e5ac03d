"""Several real ``argosy server`` processes sharing one PostgreSQL database and one S3 bucket.

What a platform engineer relies on when a server machine dies or is upgraded: the scheduler
lease moves, runs continue elsewhere, no task runs twice at once, and a database outage is
waited out. Everything is observed through the API and the metadata DB the servers share;
intervals come from the recorded attempt times, never from the test's own clock.
"""

from __future__ import annotations

import itertools
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from argosy.api import ScheduleCreate
from argosy.client.client import Client
from argosy.spec.compile import CompiledPipeline, compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.conftest import alive
from tests.pg_fixture import PostgresCluster
from tests.server_fixture import ServerProcess, new_kek, start_server

pytestmark = pytest.mark.slow

CHAIN = textwrap.dedent(
    """
    import time
    from pathlib import Path
    from argosy import pipeline, step

    @step
    def slow(i: int, seconds: float, gate: str) -> int:
        if gate and i == 1:  # the second task waits until the test opens its gate
            while not Path(gate).exists():
                time.sleep(0.05)
        else:
            time.sleep(seconds)
        return i + 1

    @pipeline
    def chain(seconds: float = 1.5, gate: str = ""):
        a = slow(0, seconds, gate)
        b = slow(a, seconds, gate)
        slow(b, seconds, gate)
    """
)
FAST = {  # short leases and heartbeats, so a takeover happens within seconds
    "ARGOSY_INSECURE_DEV": "true",  # authentication is tested in test_auth.py
    "ARGOSY_LEASE_SECONDS": "2",
    "ARGOSY_HEARTBEAT_SECONDS": "0.3",
    "ARGOSY_SCHEDULER_INTERVAL": "0.2",
    "ARGOSY_POLL_INTERVAL": "0.2",
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> CompiledPipeline:
    folder = tmp_path_factory.mktemp("project")
    (folder / "coordination_chain.py").write_text(CHAIN)
    return compile_pipeline(load_pipeline(f"{folder / 'coordination_chain.py'}:chain"))


@pytest.fixture
def shared(
    tmp_path: Path, pg_migrated_url: str, s3_endpoint: Any, s3_bucket: str
) -> dict[str, str]:
    """The environment every server of a test shares: one database, one bucket."""
    return {
        **s3_endpoint.argosy_env(f"s3://{s3_bucket}/argosy"),
        "ARGOSY_KEK": new_kek(),  # the instances of one deployment share their KEK
        "ARGOSY_DATABASE_URL": pg_migrated_url,
        **FAST,
    }


@pytest.fixture
def servers(tmp_path: Path, shared: dict[str, str]) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str, **extra: str) -> ServerProcess:
        server = start_server(tmp_path / name, {**shared, **extra})
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(statement), params).all())
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def attempts_by_task(url: str, run_id: str) -> dict[str, list[Any]]:
    rows = sql(
        url,
        "SELECT t.node_path, a.number, a.state, a.cause, a.started_at, a.finished_at, a.pid "
        "FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.run_id = :r "
        "ORDER BY t.node_path, a.number",
        r=run_id,
    )
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(row.node_path, []).append(row)
    return found


def assert_one_success_and_no_overlap(url: str, run_id: str) -> dict[str, list[Any]]:
    by_task = attempts_by_task(url, run_id)
    assert set(by_task) == {"slow", "slow-2", "slow-3"}
    for node, attempts in by_task.items():
        assert [a.state for a in attempts].count("succeeded") == 1, (node, attempts)
        for earlier, later in itertools.pairwise(attempts):
            assert earlier.finished_at is not None
            assert earlier.finished_at <= later.started_at, f"{node}: two live attempts at once"
    return by_task


def owner_of(url: str, run_id: str) -> str | None:
    return sql(url, "SELECT owner FROM runs WHERE id = :r", r=run_id)[0][0]


def lease_owner(url: str) -> str | None:
    rows = sql(url, "SELECT owner FROM leases WHERE name = 'scheduler'")
    return rows[0][0] if rows else None


def test_kill_9_of_the_leading_server_mid_run_the_other_takes_over_and_finishes(
    servers: Callable[..., ServerProcess],
    chain: CompiledPipeline,
    pg_migrated_url: str,
    tmp_path: Path,
) -> None:
    """The second task is held at a gate, so its attempt is certainly live when its server
    dies: the new leader kills the orphan and starts a new attempt (``engine_lost``)."""
    gate = tmp_path / "gate"
    first = servers("first")
    wait_for(lambda: lease_owner(pg_migrated_url) == first.instance, 20, "the first leader")
    with Client(first.url) as client:
        client.push_pipeline(chain)
        run = client.create_run("chain", parameters={"gate": str(gate)})
    wait_for(lambda: owner_of(pg_migrated_url, run.id) == first.instance, 20, "the claim")
    second = servers("second")
    wait_for(lambda: second.ready(), 30, "the second server")

    def live_second_task() -> Any:  # running, and its process recorded (a moment later)
        attempts = attempts_by_task(pg_migrated_url, run.id).get("slow-2", [])
        return attempts and attempts[-1].state == "running" and attempts[-1].pid

    wait_for(live_second_task, 30, "a live attempt of the second task")
    (orphan_pid,) = sql(
        pg_migrated_url,
        "SELECT a.pid FROM attempts a JOIN tasks t ON t.id = a.task_id "
        "WHERE a.run_id = :r AND t.node_path = 'slow-2'",
        r=run.id,
    )[0]
    assert orphan_pid and alive(orphan_pid)
    first.kill()  # SIGKILL: no hand-over, its attempt is orphaned mid-flight
    wait_for(
        lambda: len(attempts_by_task(pg_migrated_url, run.id)["slow-2"]) == 2,
        60,
        "the new leader's attempt of the second task",
    )
    assert not alive(orphan_pid)  # the orphan was killed before the new attempt started
    gate.touch()

    with Client(second.url) as client:
        done = client.wait(run.id, poll=0.2, timeout=90)
    assert done.status == "succeeded"
    by_task = assert_one_success_and_no_overlap(pg_migrated_url, run.id)
    assert lease_owner(pg_migrated_url) == second.instance
    lost, taken_over = by_task["slow-2"]
    assert lost.state != "succeeded" and lost.number == 1, by_task
    assert (taken_over.number, taken_over.cause, taken_over.state) == (
        2,
        "engine_lost",
        "succeeded",
    ), by_task
    instances = dict(sql(pg_migrated_url, "SELECT id, state FROM server_instances"))
    assert instances[first.instance] == "stopped"  # declared dead by the new leader


def test_sigterm_drains_finishes_the_running_task_and_hands_the_run_over(
    servers: Callable[..., ServerProcess],
    chain: CompiledPipeline,
    pg_migrated_url: str,
    tmp_path: Path,
) -> None:
    """The second task is held at a gate until the instance records that it drains: it then
    finishes there, and the third starts on the other instance."""
    gate = tmp_path / "gate"
    first = servers("first", ARGOSY_SHUTDOWN_GRACE_SECONDS="30")
    wait_for(lambda: lease_owner(pg_migrated_url) == first.instance, 20, "the first leader")
    with Client(first.url) as client:
        client.push_pipeline(chain)
        run = client.create_run("chain", parameters={"seconds": 0.5, "gate": str(gate)})

    def live_second_task() -> Any:
        attempts = attempts_by_task(pg_migrated_url, run.id).get("slow-2", [])
        return attempts and attempts[-1].state == "running" and attempts[-1].pid

    wait_for(live_second_task, 30, "a live attempt of the second task")
    first.process.send_signal(signal.SIGTERM)

    def draining() -> bool:
        states = dict(sql(pg_migrated_url, "SELECT id, state FROM server_instances"))
        return bool(states.get(first.instance) == "draining")

    wait_for(draining, 30, "the first instance draining")
    gate.touch()
    assert first.process.wait(60) == 0  # a clean exit after draining

    by_first = attempts_by_task(pg_migrated_url, run.id)
    assert [a.state for a in by_first["slow-2"]] == ["succeeded"]  # finished, not killed
    assert "slow-3" not in by_first  # no new task was started while draining
    assert lease_owner(pg_migrated_url) is None  # released at once
    assert owner_of(pg_migrated_url, run.id) is None  # and so is the run
    second = servers("second")  # (only now: a run it took over could start slow-3 above)

    with Client(second.url) as client:
        done = client.wait(run.id, poll=0.2, timeout=90)
    assert done.status == "succeeded"
    by_task = assert_one_success_and_no_overlap(pg_migrated_url, run.id)
    assert all(a.cause == "first" for attempts in by_task.values() for a in attempts)


def test_database_outage_answers_503_keeps_serving_and_the_run_completes(
    servers: Callable[..., ServerProcess],
    chain: CompiledPipeline,
    pg_migrated_url: str,
    pg_cluster: PostgresCluster,
) -> None:
    server = servers("only", ARGOSY_LEASE_SECONDS="5", ARGOSY_HEARTBEAT_SECONDS="1")
    with Client(server.url) as client:
        client.push_pipeline(chain)
        run = client.create_run("chain", parameters={"seconds": 2.0})
    wait_for(lambda: attempts_by_task(pg_migrated_url, run.id).get("slow"), 20, "the first task")
    pg_cluster.stop("fast")
    try:
        statuses = []
        retry_after = []
        outage_end = time.monotonic() + 20
        while time.monotonic() < outage_end:
            response = httpx.get(f"{server.url}/api/v1/tenants/default/runs/{run.id}", timeout=10)
            statuses.append(response.status_code)
            retry_after.append(response.headers.get("retry-after"))
            ready = httpx.get(f"{server.url}/readyz", timeout=10)
            statuses.append(ready.status_code)
            assert server.process.poll() is None, "the server exited during the outage"
            time.sleep(1.0)
    finally:
        pg_cluster.start()
    assert set(statuses) == {503}, statuses
    assert all(value is not None for value in retry_after)
    with Client(server.url) as client:
        done = client.wait(run.id, poll=0.3, timeout=120)
    assert done.status == "succeeded"
    assert_one_success_and_no_overlap(pg_migrated_url, run.id)


def test_a_schedule_over_simulated_minutes_fires_each_slot_once_across_a_server_restart(
    servers: Callable[..., ServerProcess], chain: CompiledPipeline, pg_migrated_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    clock = tmp_path / "now"
    start = datetime(2026, 11, 28, 10, 0, 30, tzinfo=UTC)
    clock.write_text(start.isoformat())
    simulated = {"ARGOSY_CLOCK_FILE": str(clock), "ARGOSY_LEASE_SECONDS": "600"}
    server = servers("before", **simulated)
    with Client(server.url) as client:
        client.push_pipeline(chain)
        client.create_schedule(
            ScheduleCreate(
                name="every-minute", pipeline="chain", cron="* * * * *",
                parameters={"seconds": 0.0}, max_concurrent_runs=100,
            )
        )  # fmt: skip

    def fired() -> list[str]:
        rows = sql(
            pg_migrated_url,
            "SELECT f.fire_time, f.outcome FROM schedule_fires f ORDER BY f.fire_time",
        )
        return [f"{r.fire_time.astimezone(UTC):%H:%M}:{r.outcome}" for r in rows]

    def advance_to(minute: int) -> None:
        clock.write_text((start.replace(second=5) + timedelta(minutes=minute)).isoformat())
        wait_for(lambda: len(fired()) >= minute, 20, f"the fire of minute {minute}")

    for minute in (1, 2, 3):
        advance_to(minute)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    server = servers("after", **simulated)
    for minute in (4, 5):
        advance_to(minute)
    time.sleep(1.0)  # several more scheduler ticks within minute 5: nothing more fires
    assert fired() == [f"10:0{m}:created" for m in range(1, 6)]
    runs = sql(pg_migrated_url, "SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL")
    assert runs[0][0] == 5


FLAKY = textwrap.dedent(
    """
    import os
    from argosy import pipeline, step

    @step
    def prepare(n: int) -> int:
        return n * 2

    @step
    def publish(value: int, ready_file: str) -> int:
        if not os.path.exists(ready_file):
            raise RuntimeError("the target is not ready yet")
        return value + 1

    @pipeline
    def release(ready_file: str, n: int = 3):
        publish(prepare(n), ready_file)
    """
)


def test_a_retry_reuses_the_succeeded_tasks_of_the_failed_run_and_reruns_the_rest(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "coordination_release.py").write_text(FLAKY)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'coordination_release.py'}:release"))
    ready = tmp_path / "ready"
    server = start_server(
        tmp_path / "server", {"ARGOSY_POLL_INTERVAL": "0.2", "ARGOSY_INSECURE_DEV": "true"}
    )  # SQLite
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            failed = client.wait(
                client.create_run("release", parameters={"ready_file": str(ready)}).id,
                poll=0.2, timeout=60,
            )  # fmt: skip
            assert failed.status == "failed"
            ready.write_text("now")
            retry = client.retry_run(failed.id)
            assert retry.retry_of == failed.id
            done = client.wait(retry.id, poll=0.2, timeout=60)
            tasks = {t.node_path: t for t in client.tasks(retry.id)}
            outputs = {a.node_path: a.value for a in client.artifacts(retry.id)}
    finally:
        server.stop()
    assert done.status == "succeeded"
    assert tasks["prepare"].state == "cached"
    assert tasks["prepare"].attempts == []  # no process ran for it
    assert f"retry of run {failed.id}" in (tasks["prepare"].cache.reason or "")
    assert tasks["publish"].state == "succeeded"
    assert outputs == {"prepare": 6, "publish": 7}


TICKING = textwrap.dedent(
    """
    import time
    from argosy import pipeline, step

    @step
    def tick(n: int) -> int:
        for i in range(n):
            print("tick", i, flush=True)
            time.sleep(0.5)
        return n

    @pipeline
    def ticking(n: int = 20):
        tick(n)
    """
)


def test_another_instance_serves_the_live_log_of_a_running_attempt(
    servers: Callable[..., ServerProcess], pg_migrated_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "coordination_ticking.py").write_text(TICKING)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'coordination_ticking.py'}:ticking"))
    runner = servers("runner")
    with Client(runner.url) as client:
        client.push_pipeline(compiled)
        run = client.create_run("ticking")
    wait_for(lambda: owner_of(pg_migrated_url, run.id) == runner.instance, 20, "the claim")
    other = servers("other", ARGOSY_SERVER_MAX_RUNS="1")
    with Client(other.url) as client:
        lines = wait_for(
            lambda: [e.line for e in client.logs(run.id).items if e.line.startswith("tick")],
            20, "live lines served by the other instance",
        )  # fmt: skip
        assert client.get_run(run.id).status == "running"  # not the final log: a live copy
        assert lines[0] == "tick 0"
        done = client.wait(run.id, poll=0.5, timeout=60)
        assert done.status == "succeeded"
        final = [e.line for e in client.logs(run.id).items if e.line.startswith("tick")]
    assert final == [f"tick {i}" for i in range(20)]
