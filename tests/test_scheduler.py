"""The scheduler lease and schedule fires, on PostgreSQL, driven by a simulated clock.

These tests call the leader's code directly (``LeaseHolder`` + ``Scheduler``, the same
objects a server instance runs in its work loop), so simulated minutes pass instantly; the
server-process tests (``test_server_coordination.py``) show the same behaviour end to end.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from argosy.ids import new_id
from argosy.server.clock import FileClock
from argosy.server.leases import SCHEDULER, LeaseHolder
from argosy.server.scheduler import Scheduler
from argosy.spec.compile import CompiledPipeline, compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Run, Schedule, ScheduleFire

PIPELINE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def hello(name: str) -> str:
        return "hello " + name

    @pipeline
    def greet(name: str = "world"):
        hello(name)
    """
)
START = datetime(2026, 11, 28, 10, 0, 30, tzinfo=UTC)


@dataclass
class Leader:
    lease: LeaseHolder
    scheduler: Scheduler

    def tick(self) -> None:
        self.lease.acquire_or_renew()
        self.scheduler.tick()


@dataclass
class World:
    metadata: MetadataStore
    clock: FileClock
    version_id: str
    pipeline_id: str

    def set_time(self, when: datetime) -> None:
        self.clock.path.write_text(when.isoformat())

    def leader(self, lease_seconds: float = 3600.0) -> Leader:
        lease = LeaseHolder(self.metadata, SCHEDULER, new_id(), self.clock, lease_seconds)
        return Leader(lease, Scheduler(self.metadata, lease, self.clock, timedelta(minutes=5)))

    def schedule(self, cron: str, **values: object) -> str:
        from argosy.ops.schedules import next_fire_after

        now = self.clock.now()
        row = Schedule(
            id=new_id(), tenant="default", created_at=now, created_by="ci", name=new_id().lower(),
            pipeline_id=self.pipeline_id, version=None, cron=cron, timezone="UTC",
            parameters={"name": "cron"}, max_concurrent_runs=100, catch_up="latest",
            catch_up_limit=10, paused=False, next_fire_at=next_fire_after(cron, "UTC", now),
        )  # fmt: skip
        for key, value in values.items():
            setattr(row, key, value)
        with self.metadata.session() as s:
            s.add(row)
        return row.id

    def fires(self, schedule_id: str) -> list[tuple[str, str]]:
        with self.metadata.session() as s:
            rows = s.scalars(
                select(ScheduleFire)
                .where(ScheduleFire.schedule_id == schedule_id)
                .order_by(ScheduleFire.fire_time)
            ).all()
            return [(q.as_utc(f.fire_time).strftime("%H:%M"), f.outcome) for f in rows]  # type: ignore[union-attr]

    def runs_of(self, schedule_id: str) -> list[Run]:
        with self.metadata.session() as s:
            return list(s.scalars(select(Run).where(Run.schedule_id == schedule_id)).all())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledPipeline:
    folder = tmp_path_factory.mktemp("project")
    (folder / "greet_schedule.py").write_text(PIPELINE)
    return compile_pipeline(load_pipeline(f"{folder / 'greet_schedule.py'}:greet"))


@pytest.fixture
def world(tmp_path: Path, pg_migrated_url: str, compiled: CompiledPipeline) -> Iterator[World]:
    metadata = MetadataStore.open(pg_migrated_url)
    with metadata.session() as s:
        version = q.ensure_pipeline_version(s, "default", compiled.spec, "ci")
        ids = (version.id, version.pipeline_id)
    clock = FileClock(tmp_path / "now")
    w = World(metadata, clock, *ids)
    w.set_time(START)
    yield w
    metadata.engine.dispose()


def minutes(start: datetime, first: int, last: int) -> Iterator[datetime]:
    for m in range(first, last + 1):
        yield start.replace(second=10) + timedelta(minutes=m)


def test_an_every_minute_schedule_fires_each_slot_exactly_once_across_a_leader_restart(
    world: World,
) -> None:
    sid = world.schedule("* * * * *")
    first = world.leader()
    for now in minutes(START, 1, 5):
        world.set_time(now)
        first.tick()
        first.tick()  # a second tick in the same minute fires nothing more
    first.lease.release()  # a graceful restart hands the lease over
    second = world.leader()
    for now in minutes(START, 6, 10):
        world.set_time(now)
        second.tick()
    slots = [f"10:{m:02d}" for m in range(1, 11)]
    assert world.fires(sid) == [(slot, "created") for slot in slots]
    runs = world.runs_of(sid)
    assert len(runs) == 10
    assert all(r.queue == "server" and r.parameters == {"name": "cron"} for r in runs)


def test_only_the_lease_holder_fires_and_a_replaced_leader_is_fenced_off(world: World) -> None:
    sid = world.schedule("* * * * *")
    a, b = world.leader(lease_seconds=120), world.leader(lease_seconds=120)
    world.set_time(START + timedelta(seconds=40))  # 10:01:10
    assert a.lease.acquire_or_renew()
    assert not b.lease.acquire_or_renew()  # one holder at a time
    b.scheduler.tick()
    assert world.fires(sid) == []
    a.scheduler.tick()
    assert world.fires(sid) == [("10:01", "created")]
    # a stops renewing (paused, partitioned); after expiry b takes over with a new token
    world.set_time(START + timedelta(minutes=4, seconds=40))  # 10:05:10
    assert b.lease.acquire_or_renew()
    assert b.lease.token == (a.lease.token or 0) + 1
    a.scheduler.tick()  # a still believes it leads: its writes are refused by the token check
    assert world.fires(sid) == [("10:01", "created")]
    b.scheduler.tick()
    assert [slot for slot, _ in world.fires(sid)] == ["10:01", "10:02", "10:03", "10:04", "10:05"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("none", {"created": [], "skipped_catch_up": ["10:05", "10:10", "10:15", "10:20", "10:25", "10:30"]}),
        ("latest", {"created": ["10:30"], "skipped_catch_up": ["10:05", "10:10", "10:15", "10:20", "10:25"]}),
        ("all", {"created": ["10:20", "10:25", "10:30"], "skipped_catch_up": ["10:05", "10:10", "10:15"]}),
    ],
)  # fmt: skip
def test_catch_up_policy_after_downtime(
    world: World, policy: str, expected: dict[str, list[str]]
) -> None:
    sid = world.schedule("*/5 * * * *", catch_up=policy, catch_up_limit=3)
    world.set_time(START.replace(minute=33))  # down from 10:00 to 10:33
    world.leader().tick()
    got: dict[str, list[str]] = {"created": [], "skipped_catch_up": []}
    for slot, outcome in world.fires(sid):
        got[outcome].append(slot)
    assert got == expected
    assert len(world.runs_of(sid)) == len(expected["created"])
    with world.metadata.session() as s:
        row = s.get_one(Schedule, sid)
        assert q.as_utc(row.next_fire_at) == START.replace(minute=35, second=0)


def test_none_policy_still_fires_a_slot_that_is_only_seconds_late(world: World) -> None:
    sid = world.schedule("* * * * *", catch_up="none")
    world.set_time(START + timedelta(seconds=50))  # 10:01:20, 20 s after the slot
    world.leader().tick()
    assert world.fires(sid) == [("10:01", "created")]


def test_max_concurrent_runs_skips_slots_while_earlier_runs_are_active(world: World) -> None:
    sid = world.schedule("* * * * *", max_concurrent_runs=1)
    leader = world.leader()
    for now in minutes(START, 1, 3):
        world.set_time(now)
        leader.tick()
    assert world.fires(sid) == [
        ("10:01", "created"),
        ("10:02", "skipped_concurrency"),
        ("10:03", "skipped_concurrency"),
    ]
    with world.metadata.session() as s:  # the first run finishes: the next slot fires again
        for run in s.scalars(select(Run).where(Run.schedule_id == sid)):
            run.status = "succeeded"
    world.set_time(START.replace(minute=4, second=10))
    leader.tick()
    assert world.fires(sid)[-1] == ("10:04", "created")


def test_a_paused_schedule_does_not_fire_and_catches_up_by_its_policy_on_resume(
    world: World,
) -> None:
    sid = world.schedule("* * * * *", paused=True)
    leader = world.leader()
    for now in minutes(START, 1, 4):
        world.set_time(now)
        leader.tick()
    assert world.fires(sid) == []
    with world.metadata.session() as s:
        s.get_one(Schedule, sid).paused = False
    leader.tick()  # at 10:04:10 with catch-up "latest": only 10:04 runs
    assert world.fires(sid) == [
        ("10:01", "skipped_catch_up"),
        ("10:02", "skipped_catch_up"),
        ("10:03", "skipped_catch_up"),
        ("10:04", "created"),
    ]


def test_a_schedule_whose_version_is_gone_records_a_failed_fire_and_keeps_going(
    world: World,
) -> None:
    sid = world.schedule("* * * * *", version="no-such-version")
    other = world.schedule("* * * * *")
    world.set_time(START + timedelta(seconds=40))
    world.leader().tick()
    with world.metadata.session() as s:
        fire = s.scalars(select(ScheduleFire).where(ScheduleFire.schedule_id == sid)).one()
        assert fire.outcome == "failed"
        assert "no-such-version" in (fire.detail or "")
    assert world.fires(other) == [("10:01", "created")]


def test_housekeeping_forgets_old_idempotency_keys_sessions_and_stopped_instances(
    world: World,
) -> None:
    from argosy.engine.submission import queue_run
    from argosy.stores.metadata.tables import (
        BrowserSession,
        IdempotencyKey,
        PipelineVersion,
        ServerInstance,
    )

    now = world.clock.now()
    old, recent = now - timedelta(days=8), now - timedelta(hours=1)
    with world.metadata.session() as s:
        version = s.get_one(PipelineVersion, world.version_id)
        for key, at in (("old", old), ("recent", recent)):
            run = queue_run(s, version, {}, "ci")
            s.add(IdempotencyKey(id=new_id(), tenant="default", created_at=at, created_by="ci",
                                 key=key, request_hash="0" * 64, run_id=run.id))  # fmt: skip
        for sid, ends in (("a" * 64, old), ("b" * 64, now + timedelta(hours=1))):
            s.add(BrowserSession(id=sid, subject="ada", claims={}, csrf_hash="0" * 64,
                                 created_at=old, expires_at=ends))  # fmt: skip
        for iid, state, beat in (
            ("I1", "stopped", old),
            ("I2", "stopped", recent),
            ("I3", "serving", old),
        ):
            s.add(ServerInstance(id=iid, host="h", pid=1, state=state, started_at=old,
                                 heartbeat_at=beat, capacity={}))  # fmt: skip
    follower = world.leader()
    assert follower.scheduler.housekeeping() == {}  # only the lease holder cleans up
    leader = world.leader()
    leader.lease.acquire_or_renew()
    assert leader.scheduler.housekeeping() == {
        "idempotency_keys": 1, "browser_sessions": 1, "server_instances": 1,
    }  # fmt: skip
    with world.metadata.session() as s:
        assert [k.key for k in s.scalars(select(IdempotencyKey))] == ["recent"]
        assert [b.id[0] for b in s.scalars(select(BrowserSession))] == ["b"]
        assert sorted(i.id for i in s.scalars(select(ServerInstance))) == ["I2", "I3"]
