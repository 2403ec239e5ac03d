"""What the leading server instance does at each tick: reconcile and fire schedules.

Both run only while this instance holds the ``scheduler`` lease, and each transaction checks
the lease's fencing token before it writes.

Reconcile: runs owned by an instance whose heartbeat expired (it crashed, or lost the
database for longer than the lease) are released, so any instance can claim them; the new
owner's engine recovers their attempts (``engine_lost``).

Schedules: every due slot of a schedule is written once into ``schedule_fires`` (unique on
schedule and fire time) in the same transaction as the run it creates, so a slot fires
exactly once across restarts and instances. Slots missed while no leader ran (downtime, a
pause) follow the schedule's catch-up policy:

- ``none``: only a slot less than ``MISFIRE_GRACE`` late fires; older ones are skipped;
- ``latest``: the most recent missed slot fires, older ones are skipped;
- ``all``: every missed slot fires, at most ``catch_up_limit`` (the most recent ones).

A slot that would exceed ``max_concurrent_runs`` is recorded as skipped, not queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from argosy.engine.submission import SERVER_QUEUE, queue_run
from argosy.errors import ArgosyError
from argosy.ids import new_id
from argosy.ops.schedules import next_fire_after
from argosy.server.clock import Clock
from argosy.server.leases import LeaseHolder
from argosy.states import RunStatus
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import (
    BrowserSession,
    IdempotencyKey,
    Pipeline,
    Run,
    Schedule,
    ScheduleFire,
    ServerInstance,
)

log = logging.getLogger("argosy.server")

MISFIRE_GRACE = timedelta(seconds=60)
IDEMPOTENCY_KEEP = timedelta(days=7)  # a client retrying later than this creates a new run
STOPPED_INSTANCES_KEEP = timedelta(days=7)
ENDED_SESSIONS_KEEP = timedelta(days=1)
MAX_SLOTS_SCANNED = 100_000  # a schedule down for years does not loop forever
ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)


@dataclass
class Scheduler:
    metadata: MetadataStore
    lease: LeaseHolder
    clock: Clock
    instance_ttl: timedelta

    def tick(self) -> None:
        self.reconcile()
        self.fire_due()

    # -- reconcile -------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Release the runs of instances whose heartbeat expired; returns how many."""
        now = self.clock.now()
        with self.metadata.session() as s:
            if not self.lease.still_held(s):
                return 0
            live = select(ServerInstance.id).where(
                ServerInstance.heartbeat_at >= now - self.instance_ttl,
                ServerInstance.state != "stopped",
            )
            result = s.execute(
                update(Run)
                .where(
                    Run.queue == SERVER_QUEUE,
                    Run.owner.is_not(None),
                    Run.status.in_(ACTIVE),
                    Run.owner.not_in(live),
                )
                .values(owner=None)
            )
            released = int(getattr(result, "rowcount", 0) or 0)
            s.execute(
                update(ServerInstance)
                .where(
                    ServerInstance.heartbeat_at < now - self.instance_ttl,
                    ServerInstance.state != "stopped",
                )
                .values(state="stopped")
            )
        if released:
            log.warning(
                "released %d run(s) of server instances that stopped heartbeating", released
            )
        return released

    # -- housekeeping ----------------------------------------------------------------------
    def housekeeping(self) -> dict[str, int]:
        """Forget what no longer matters: idempotency keys older than a week, browser sessions
        (and pending logins) that ended a day ago, instances stopped a week ago."""
        now = self.clock.now()
        with self.metadata.session() as s:
            if not self.lease.still_held(s):
                return {}
            done = {
                "idempotency_keys": s.execute(
                    delete(IdempotencyKey).where(IdempotencyKey.created_at < now - IDEMPOTENCY_KEEP)
                ),
                "browser_sessions": s.execute(
                    delete(BrowserSession).where(
                        BrowserSession.expires_at < now - ENDED_SESSIONS_KEEP
                    )
                ),
                "server_instances": s.execute(
                    delete(ServerInstance).where(
                        ServerInstance.state == "stopped",
                        ServerInstance.heartbeat_at < now - STOPPED_INSTANCES_KEEP,
                    )
                ),
            }
            counts = {k: int(getattr(r, "rowcount", 0) or 0) for k, r in done.items()}
        if any(counts.values()):
            log.info("housekeeping removed %s", counts)
        return counts

    # -- triggers --------------------------------------------------------------------------
    def fire_triggers(self, store_of: Callable[[str], ArtifactStore] | None = None) -> int:
        """Act on run and model events for the triggers (``argosy.service.triggers``);
        ``store_of(tenant)``: where outputs' values are read from."""
        from argosy.service.triggers import scan

        return scan(self.metadata, self.clock.now(), store_of)

    # -- schedules -------------------------------------------------------------------------
    def fire_due(self) -> int:
        """Fire every due slot of every active schedule; returns how many runs were created."""
        now = self.clock.now()
        with self.metadata.session() as s:
            due = s.scalars(
                select(Schedule.id)
                .where(Schedule.paused.is_(False), Schedule.next_fire_at <= now)
                .order_by(Schedule.next_fire_at)
            ).all()
        created = 0
        for schedule_id in due:
            try:
                created += self._fire(schedule_id, now)
            except ArgosyError as exc:  # never let one schedule stop the others
                log.error("schedule %s: %s", schedule_id, exc)
        return created

    def _fire(self, schedule_id: str, now: datetime) -> int:
        with self.metadata.session() as s:
            if not self.lease.still_held(s):
                return 0
            sched = s.get(Schedule, schedule_id, with_for_update=True)
            next_at = q.as_utc(sched.next_fire_at) if sched is not None else None
            if sched is None or sched.paused or next_at is None or next_at > now:
                return 0
            slots = [next_at]
            while len(slots) < MAX_SLOTS_SCANNED:
                following = next_fire_after(sched.cron, sched.timezone, slots[-1])
                if following > now:
                    break
                slots.append(following)
            chosen = set(self._chosen(sched, slots, now))
            active = s.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.schedule_id == sched.id, Run.status.in_(ACTIVE))
            )
            created = 0
            fired_at = None
            for slot in slots:
                if slot not in chosen:
                    self._record(s, sched, slot, None, "skipped_catch_up",
                                 f"missed; catch-up policy {sched.catch_up!r}")  # fmt: skip
                    continue
                if (active or 0) >= sched.max_concurrent_runs:
                    self._record(s, sched, slot, None, "skipped_concurrency",
                                 f"{active} run(s) of this schedule still active "
                                 f"(max_concurrent_runs={sched.max_concurrent_runs})")  # fmt: skip
                    continue
                try:
                    with s.begin_nested():
                        run = self._queue(s, sched)
                except ArgosyError as exc:
                    self._record(s, sched, slot, None, "failed", str(exc))
                    continue
                self._record(s, sched, slot, run.id, "created", None)
                active = (active or 0) + 1
                created += 1
                fired_at = slot
            sched.next_fire_at = next_fire_after(sched.cron, sched.timezone, max(slots[-1], now))
            if fired_at is not None:
                sched.last_fire_at = fired_at
        if created:
            log.info("schedule %s: created %d run(s)", schedule_id, created)
        return created

    @staticmethod
    def _chosen(sched: Schedule, slots: list[datetime], now: datetime) -> list[datetime]:
        if sched.catch_up == "all":
            return slots[-sched.catch_up_limit :]
        if sched.catch_up == "latest":
            return slots[-1:]
        return [slot for slot in slots if now - slot <= MISFIRE_GRACE]

    def _queue(self, s: Session, sched: Schedule) -> Run:
        pipeline = s.get_one(Pipeline, sched.pipeline_id)
        version = q.resolve_version(s, sched.tenant, pipeline.name, sched.version)
        return queue_run(s, version, dict(sched.parameters), sched.created_by, schedule_id=sched.id)

    def _record(
        self,
        s: Session,
        sched: Schedule,
        slot: datetime,
        run_id: str | None,
        outcome: str,
        detail: str | None,
    ) -> None:
        s.add(
            ScheduleFire(
                id=new_id(), tenant=sched.tenant, schedule_id=sched.id, fire_time=slot,
                run_id=run_id, outcome=outcome, detail=detail, created_at=self.clock.now(),
                created_by="scheduler",
            )
        )  # fmt: skip
        s.flush()  # the unique (schedule, fire time) key fails here if the slot already fired
