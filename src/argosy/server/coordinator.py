"""How one server instance takes part in running the platform.

Every instance:

- registers itself in ``server_instances`` and heartbeats there; its heartbeat vouches for
  every attempt of every run it drives (an instance whose heartbeat expires is dead, and so
  are its attempts, as far as the platform is concerned);
- claims queued runs (``FOR UPDATE SKIP LOCKED``, so instances never take the same run) up
  to ``server_max_runs`` and drives each with the engine in a thread of its own; all its
  runs share one capacity ledger, so their tasks together never exceed the machine;
- competes for the ``scheduler`` lease; the holder fires schedules and releases the runs of
  dead instances (``server/scheduler.py``).

Graceful stop (SIGTERM): stop claiming; its runs start no new attempts; running attempts get
``shutdown_grace_seconds`` to finish; then what is still running is ended and its runs handed
over (released at once, not after a lease expiry) — another instance continues them, and
tasks ended this way get a new attempt that uses no retry. The lease is released last.

Fencing: if this instance finds a run it drives owned by someone else (its heartbeat had
expired), it abandons that run at once; outputs only ever commit for a task's current attempt
number, so a stale attempt can never overwrite a newer one's results.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from argosy import plugins
from argosy.auth.task_credentials import TaskClaims
from argosy.engine.engine import Engine, RunAbandoned, engine_alive
from argosy.engine.submission import SERVER_QUEUE
from argosy.errors import ArgosyError, RunBusyError
from argosy.executors.base import Capacity, Usage
from argosy.executors.local.capacity import CapacityLedger
from argosy.executors.local.warm import WARM_PARENT_MEMORY, WarmPool
from argosy.server.context import ServerContext
from argosy.server.environments import Environments
from argosy.server.leases import SCHEDULER, LeaseHolder
from argosy.server.scheduler import ACTIVE, Scheduler
from argosy.server.task_users import task_user_for
from argosy.spec.models import StepSpec
from argosy.stores.artifacts.task_http import SCHEME
from argosy.stores.metadata.tables import Attempt, Run, ServerInstance, Tenant
from argosy.stores.metadata.wakeups import RunQueueListener

log = logging.getLogger("argosy.server")

LIVE_LOG_INTERVAL = 3.0  # seconds between copies of a running attempt's log to the store
HOUSEKEEPING_INTERVAL = 600.0  # seconds between the leader's clean-ups
CLAIM_INTERVAL = 0.2  # seconds between looks at the run queue without notifications
RETRY_AFTER_ERROR = (
    30.0  # a run whose engine stopped on an error waits before this instance retries
)
TASK_TOKEN_HOURS = 24
TaskStoreGrant = Callable[
    [str, str, str, int, StepSpec, dict[str, Any]], dict[str, Any]
]  # lifetime of a task token when its step has no timeout


class _TenantSecretValues(Mapping[str, str]):
    """A run's view of its tenant's secrets: each value is opened (decrypted) when a task that
    declares it starts, so a secret set after the run began is seen, and no other is opened."""

    def __init__(self, ctx: ServerContext, tenant: str) -> None:
        self.ctx = ctx
        self.tenant = tenant

    def _open(self, names: list[str]) -> dict[str, str]:
        from argosy.stores.secrets import TenantSecrets

        return TenantSecrets(self.ctx.metadata, self.ctx.tenant_keys()).open(self.tenant, names)

    def __getitem__(self, name: str) -> str:
        return self._open([name])[name]

    def __iter__(self) -> Iterator[str]:
        from argosy.stores.secrets import TenantSecrets

        names = TenantSecrets(self.ctx.metadata, self.ctx.tenant_keys()).list(self.tenant)
        return iter([r.name for r in names])

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class _Drive:
    run_id: str
    engine: Engine
    thread: threading.Thread


class Coordinator:
    """This instance's heartbeat, run claims and (when leading) scheduler duties."""

    def __init__(self, context: ServerContext) -> None:
        self.ctx = context
        s = context.settings
        self.settings = s
        self.instance_id = context.instance_id
        self.clock = context.clock
        self.capacity = Capacity(cpu=s.max_cpus, memory=s.max_memory, gpu=s.max_gpus)
        # tenant -> quotas, refreshed by heartbeat; replaced whole, never emptied in place (an
        # admission that read it between a clear and an update saw no quota at all)
        self._quotas: dict[str, dict[str, Any]] = {}
        self.ledger = CapacityLedger(self.capacity, quotas=lambda t: self._quotas.get(t))
        self.instance_ttl = timedelta(seconds=s.lease_seconds)
        self.lease = LeaseHolder(
            context.metadata, SCHEDULER, self.instance_id, self.clock, s.lease_seconds
        )
        self.scheduler = Scheduler(context.metadata, self.lease, self.clock, self.instance_ttl)
        self.environments = Environments(s.home / "environments", s.home / "cache")
        # warm workers (executors/local/warm.py): sealed parents, shared by this instance's runs,
        # each as its tenant's task uid; bounded by memory like a local run's
        self.warm: WarmPool | None = None
        if s.warm_workers and s.executor == "local":
            limit = min(s.warm_workers_max, max(1, s.max_memory // WARM_PARENT_MEMORY))
            self.warm = WarmPool(s.home / "warm", limit=limit, wait=s.warm_workers_wait,
                                 sealed=True, idle=s.warm_workers_idle)  # fmt: skip
        self.draining = False
        self._stopping = threading.Event()
        self._drives: dict[str, _Drive] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._db_trouble_until = 0.0  # monotonic: reconcile waits after our own DB outage
        self._stopped = False
        self._cooldown: dict[str, float] = {}  # run id -> when this instance may claim it again
        # woken when a run is queued (PostgreSQL NOTIFY, or this process); polls as a fallback
        self.wakeups = RunQueueListener(context.metadata.engine.url, fast=CLAIM_INTERVAL)

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.lease.held

    @property
    def running_runs(self) -> list[str]:
        with self._lock:
            return list(self._drives)

    def start(self) -> None:
        """Register (now, or at the first heartbeat the database answers) and start working."""
        try:
            self._heartbeat()
        except SQLAlchemyError as exc:  # the heartbeat thread registers once the DB is back
            self._db_trouble_until = time.monotonic() + self.settings.lease_seconds
            log.warning("database unreachable at start-up (%s); retrying", exc.__class__.__name__)
        from argosy.server import lifecycle  # retention, log index, sweeper (issue 17)

        self.wakeups.start()

        loops = (("heartbeat", self._heartbeat_loop), ("work", self._work_loop),
                 ("lifecycle", lambda: lifecycle.loop(self)))  # fmt: skip
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"argosy-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("server instance %s started (capacity %s)", self.instance_id, self.capacity)

    def stop(self, grace: float | None = None) -> None:
        """Drain: no new claims or attempts; wait up to ``grace`` seconds; hand the rest over."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self.draining = True
        with self._lock:
            drives = list(self._drives.values())
        for d in drives:
            d.engine.draining = True
        self._set_state("draining")  # recorded once no engine here starts another task
        if drives:
            log.info("draining: %d run(s) have %.0f s for their running tasks", len(drives), grace)
        deadline = time.monotonic() + grace
        for d in drives:
            d.thread.join(max(0.0, deadline - time.monotonic()))
        for d in drives:
            d.engine.abandoned = True
        for d in drives:
            d.thread.join(60.0)
        self._stopping.set()
        if self.warm is not None:  # their running children (handed over) are not touched
            self.warm.close()
        self.wakeups.stop()
        for thread in self._threads:
            thread.join(10.0)
        try:
            self.lease.release()
        except SQLAlchemyError as exc:
            log.warning("could not release the scheduler lease (%s); it expires by itself", exc)
        self._set_state("stopped")
        log.info("server instance %s stopped", self.instance_id)

    def _set_state(self, state: str) -> None:
        try:
            with self.ctx.metadata.session() as s:
                s.execute(
                    update(ServerInstance)
                    .where(ServerInstance.id == self.instance_id)
                    .values(state=state, heartbeat_at=self.clock.now())
                )
        except SQLAlchemyError as exc:
            log.warning("could not record instance state %s: %s", state, exc)

    # -- heartbeat -------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_seconds
        while not self._stopping.is_set():
            try:
                self._heartbeat()
            except SQLAlchemyError as exc:
                self._db_trouble_until = time.monotonic() + self.settings.lease_seconds
                log.warning("heartbeat failed (database unreachable?): %s", exc.__class__.__name__)
            self._stopping.wait(interval)

    def _heartbeat(self) -> None:
        now = self.clock.now()
        with self.ctx.metadata.session() as s:
            row = s.get(ServerInstance, self.instance_id)
            if row is None:
                s.add(
                    ServerInstance(
                        id=self.instance_id, host=socket.gethostname(), pid=os.getpid(),
                        state="draining" if self.draining else "serving", started_at=now,
                        heartbeat_at=now,
                        capacity={"cpu": self.capacity.cpu, "memory": self.capacity.memory,
                                  "gpu": self.capacity.gpu, "runs": self.settings.server_max_runs},
                    )
                )  # fmt: skip
            else:
                row.heartbeat_at = now
                if row.state == "stopped":  # declared dead while our heartbeat was late
                    row.state = "draining" if self.draining else "serving"
            self._refresh_tenants(s)
            mine = set(self.running_runs)
            lost = []
            if mine:
                owners = dict(s.execute(select(Run.id, Run.owner).where(Run.id.in_(mine))).all())
                lost = [r for r in mine if owners.get(r) != self.instance_id]
        for run_id in lost:  # taken over while our heartbeat was late: stop at once
            with self._lock:
                drive = self._drives.get(run_id)
            if drive is not None:
                log.warning("run %s is now owned elsewhere; abandoning it here", run_id)
                drive.engine.abandoned = True
        if not self.draining:
            self.lease.acquire_or_renew()

    def refresh_tenants(self) -> None:
        """Read the tenants' quotas now (the instance that changed them applies them at once;
        the others at their next heartbeat)."""
        with self.ctx.metadata.session() as s:
            self._refresh_tenants(s)

    def _refresh_tenants(self, s: Any) -> None:
        """Tenants' quotas, and what each tenant runs on other instances (for its quota)."""
        quotas = {
            name: dict(q)
            for name, q in s.execute(
                select(Tenant.name, Tenant.quotas).where(Tenant.quotas.is_not(None))
            )
            if q
        }
        self._quotas = quotas
        if not quotas:
            return
        elsewhere: dict[str, Usage] = {}
        rows = s.execute(
            select(Attempt.tenant, Attempt.resources)
            .join(Run, Run.id == Attempt.run_id)
            .where(
                Attempt.state == "running",
                Attempt.tenant.in_(list(quotas)),
                (Run.owner.is_(None)) | (Run.owner != self.instance_id),
            )
        )
        for tenant, resources in rows:
            r = resources or {}
            elsewhere.setdefault(tenant, Usage()).add(
                float(r.get("cpu") or 0), int(r.get("memory") or 0), int(r.get("gpu") or 0)
            )
        self.ledger.set_elsewhere(elsewhere)

    # -- work ------------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        next_tick = 0.0
        next_housekeeping = 0.0
        next_triggers = 0.0
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if self.lease.held and now >= next_tick and not self.draining:
                    next_tick = now + self.settings.scheduler_interval
                    if now >= self._db_trouble_until:  # let everyone heartbeat again first
                        self.scheduler.reconcile()
                    self.scheduler.fire_due()
                    if now >= next_housekeeping:
                        next_housekeeping = now + HOUSEKEEPING_INTERVAL
                        self.scheduler.housekeeping()
                if not self.draining and now >= next_triggers:
                    # every instance looks: the unique (trigger, event) key fires each once
                    next_triggers = now + self.settings.scheduler_interval
                    self.scheduler.fire_triggers(self.ctx.store)
                if not self.draining:
                    self._claim_runs()
            except SQLAlchemyError as exc:
                self._db_trouble_until = time.monotonic() + self.settings.lease_seconds
                log.warning("work loop: database error %s; retrying", exc.__class__.__name__)
                self._stopping.wait(1.0)
            except Exception:  # pragma: no cover - a bug; keep serving
                log.exception("work loop failed; retrying")
                self._stopping.wait(1.0)
            self.wakeups.wait(self.settings.scheduler_interval)  # a queued run wakes it

    def _claim_runs(self) -> None:
        with self._lock:
            room = self.settings.server_max_runs - len(self._drives)
        if room <= 0:
            return
        with self.ctx.metadata.session() as s:
            candidates = s.scalars(
                select(Run)
                .where(Run.queue == SERVER_QUEUE, Run.owner.is_(None), Run.status.in_(ACTIVE))
                .order_by(Run.id)
                .limit(room * 20)
                .with_for_update(skip_locked=True)
            ).all()
            runs = self._fair_pick(candidates, room)
            claimed = [(r.id, r.tenant, r.created_by) for r in runs]
            for r in runs:
                r.owner = self.instance_id
        for run_id, tenant, user in claimed:
            self._drive(run_id, tenant, user)

    def _fair_pick(self, candidates: Any, room: int) -> list[Run]:
        """Oldest first, but round-robin across tenants by how many runs each has here, so one
        tenant's burst of runs does not fill this instance while another's wait."""
        with self._lock:
            load: dict[str, int] = {}
            for drive in self._drives.values():
                load[drive.engine.tenant] = load.get(drive.engine.tenant, 0) + 1
        picked: list[Run] = []
        now = time.monotonic()
        self._cooldown = {r: t for r, t in self._cooldown.items() if t > now}
        queue = [r for r in candidates if r.id not in self._cooldown]
        while queue and len(picked) < room:
            best = min(queue, key=lambda r: (load.get(r.tenant, 0), r.id))
            queue.remove(best)
            picked.append(best)
            load[best.tenant] = load.get(best.tenant, 0) + 1
        return picked

    def _drive(self, run_id: str, tenant: str, user: str) -> None:
        s = self.settings
        try:
            store = self.ctx.store(tenant)
            run_as = task_user_for(s, self.ctx.metadata, tenant)
        except Exception:  # e.g. its keys or its task uid cannot be had now: retry later
            log.exception("run %s cannot start here now", run_id)
            self._cooldown[run_id] = time.monotonic() + RETRY_AFTER_ERROR
            self._release(run_id)
            return
        if s.executor == "kubernetes":  # tasks as Jobs in the tenant's namespace (issue 15)
            executor = plugins.executor_class("kubernetes").from_settings(  # type: ignore[attr-defined]
                s, store, quotas=self.ledger.quotas
            )
        else:
            executor = plugins.executor_class(plugins.DEFAULT_EXECUTOR)(
                store, s.attempts_dir, self.capacity, memory_margin=s.memory_margin,
                ledger=self.ledger,
                interpreter=lambda launch: self.environments.interpreter(launch, store),
                platform_credentials=False, live_log_interval=LIVE_LOG_INTERVAL, run_as=run_as,
                log_cap=s.log_cap_bytes, warm_pool=self.warm, container_mode=s.container_mode,
                container_uid_base=s.container_uid_base,
            )  # fmt: skip
        engine = Engine(
            self.ctx.metadata, store, executor, user=user, cache_dir=str(s.home / "cache"),
            store_url=s.artifacts_url, store_options=s.artifact_options(),
            poll_interval=s.poll_interval, cache=s.cache, cache_ttl=s.cache_ttl,
            db_retry_seconds=s.db_retry_seconds, instance=self.instance_id,
            owner_alive=self.owner_alive, task_store=self._task_store(tenant),
            import_local_files=False,
            secrets=_TenantSecretValues(self.ctx, tenant),
        )  # fmt: skip
        thread = threading.Thread(
            target=self._execute, args=(run_id, engine), name=f"argosy-run-{run_id}", daemon=True
        )
        with self._lock:
            self._drives[run_id] = _Drive(run_id, engine, thread)
        thread.start()

    def _task_store(self, tenant: str) -> TaskStoreGrant:
        """How a task process of ``tenant`` reaches artifacts: this instance's task-store
        endpoint with a token for exactly its attempt (no platform credentials)."""

        def grant(run_id: str, node: str, attempt_id: str, number: int, step: StepSpec,
                  inputs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
            lifetime = (step.timeout or TASK_TOKEN_HOURS * 3600.0) + 600.0
            claims = TaskClaims(attempt_id, tenant, run_id, node, number, time.time() + lifetime)
            impl = step.implementation
            digests = (getattr(impl, "code", None), getattr(impl, "environment", None))
            self.ctx.task_grants.add(attempt_id, run_id, inputs, digests)
            url = self.ctx.url or f"http://127.0.0.1:{self.settings.server_port}"
            if self.settings.executor == "kubernetes":  # pods reach it through its Service
                url = self.settings.kubernetes_task_store_url or url
            return {"url": SCHEME + url, "options": {"token": self.ctx.task_tokens.mint(claims)}}

        return grant

    def _execute(self, run_id: str, engine: Engine) -> None:
        try:
            status = engine.execute(run_id)
            log.info("run %s %s", run_id, status)
        except RunAbandoned:
            log.info("run %s handed over", run_id)
        except RunBusyError as exc:
            log.warning("run %s: %s", run_id, exc)
        except ArgosyError as exc:
            log.error(
                "run %s stopped: %s (claimable again in %.0f s)", run_id, exc, RETRY_AFTER_ERROR
            )
            self._cooldown[run_id] = time.monotonic() + RETRY_AFTER_ERROR
        except Exception:
            log.exception("run %s: engine failure", run_id)
            self._cooldown[run_id] = time.monotonic() + RETRY_AFTER_ERROR
        finally:
            with self._lock:
                self._drives.pop(run_id, None)
            self.ctx.task_grants.revoke_run(run_id)
            self._release(run_id)
            self.wakeups.wake()  # room for another run: look at the queue now

    def _release(self, run_id: str) -> None:
        """Give the run back to the queue (a no-op once finished; fenced on our ownership)."""
        try:
            with self.ctx.metadata.session() as s:
                s.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.owner == self.instance_id)
                    .values(owner=None)
                )
        except SQLAlchemyError as exc:  # the leader releases it once our heartbeat expires
            log.warning("could not release run %s: %s", run_id, exc.__class__.__name__)

    # -- liveness of other engines ----------------------------------------------------------------
    def owner_alive(self, engine: Any) -> bool:
        """Whether the engine recorded on a run still drives it: a server instance while its
        heartbeat is fresh; a local ``argosy run`` process while it exists."""
        instance = engine.get("instance") if engine else None
        if instance is None:
            return engine_alive(engine)
        with self.ctx.metadata.session() as s:
            row = s.get(ServerInstance, instance)
            if row is None or row.state == "stopped":
                return False
            beat = row.heartbeat_at
        from argosy.stores.metadata.runs import as_utc

        fresh = as_utc(beat)
        return fresh is not None and fresh >= self.clock.now() - self.instance_ttl
