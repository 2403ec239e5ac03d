"""Prometheus metrics of a server instance, in the exposition format of the official client.

Two kinds of series, all with low-cardinality labels (tenant, pipeline, state, route
template: never a run id):

- this instance's own: API requests and their latency by route template, database and
  artifact-store call latency and errors, audit-chain append failures, executor capacity and
  use, whether it holds the scheduler lease, orphans its sweeper removed, lifecycle work;
- the platform's, read from the metadata database at scrape time (cached a few seconds): runs
  and tasks by tenant/pipeline/state, the oldest pending run, attempts by outcome, cache hits,
  scheduler lease changes, live instances, task duration and queue wait histograms (fed by
  attempts as they end), month-to-date cost against budget. Only the instance holding the
  scheduler lease exports these (``argosy_scheduler_leader`` says which), so a sum over
  instances counts each run once.

``/metrics`` answers a bearer token equal to ``ARGOSY_METRICS_TOKEN`` (what a Prometheus
scrape config sends) or a platform admin; anyone else gets 401/403 like any API route.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, select

from argosy.auth.policy import Action
from argosy.ops import counters
from argosy.server.identity import ACTION_ATTRIBUTE, authorized

log = logging.getLogger("argosy.server")

STATE_TTL = 5.0  # seconds a scrape's database reads are reused
COST_TTL = 60.0  # seconds the month-to-date cost per tenant is reused (it moves slowly)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
STORE_OPERATIONS = ("put_file", "put_bytes", "open", "exists", "rename", "delete")


class Metrics:
    """One process's metrics (one registry, whatever number of apps the process builds)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "argosy_http_requests", "API requests answered, by route template and status",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "argosy_http_request_duration_seconds", "API request latency by route template",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.db_latency = Histogram(
            "argosy_db_query_duration_seconds", "metadata database statement latency",
            buckets=DB_BUCKETS, registry=r,
        )  # fmt: skip
        self.db_errors = Counter("argosy_db_errors", "failed database statements", registry=r)
        self.store_latency = Histogram(
            "argosy_store_operation_duration_seconds", "artifact store call latency",
            ["operation"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.store_errors = Counter(
            "argosy_store_errors", "failed artifact store calls", ["operation"], registry=r
        )
        self.audit_failures = Counter(
            "argosy_audit_append_failures", "audit events that could not be recorded", registry=r
        )
        self.task_duration = Histogram(
            "argosy_task_duration_seconds", "wall time of attempts as they end",
            ["tenant"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "argosy_task_queue_wait_seconds", "from a task queued to its attempt started",
            ["tenant"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self._engines: set[int] = set()
        self._collectors: dict[int, Collector] = {}

    def watch_engine(self, engine: Engine) -> None:
        """Time every statement on ``engine`` and count its errors."""
        if id(engine) in self._engines:
            return
        self._engines.add(id(engine))

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, *_: Any) -> None:
            conn.info.setdefault("argosy_t0", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, *_: Any) -> None:
            started = conn.info.get("argosy_t0")
            if started:
                self.db_latency.observe(time.perf_counter() - started.pop())

        @event.listens_for(engine, "handle_error")
        def _error(context: Any) -> None:
            self.db_errors.inc()
            conn = getattr(context, "connection", None)
            started = conn.info.get("argosy_t0") if conn is not None else None
            if started:
                started.pop()

    def expose(self) -> bytes:
        return _generate(self.registry)


METRICS = Metrics()


# -- the artifact store's calls ----------------------------------------------------------------
_timed_classes: dict[type, type] = {}


def _timed(name: str) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return getattr(super(_timed_classes[type(self).__mro__[1]], self), name)(
                *args, **kwargs
            )
        except FileNotFoundError:
            raise  # a missing object is an answer, not a store error
        except Exception:
            METRICS.store_errors.labels(name).inc()
            raise
        finally:
            METRICS.store_latency.labels(name).observe(time.perf_counter() - started)

    call.__name__ = name
    return call


def time_byte_store(backend: Any) -> None:
    """Time the calls of ``backend`` (in place: it becomes an instance of a subclass of its own
    class, so ``isinstance`` checks on it still hold)."""
    cls = type(backend)
    if getattr(cls, "_argosy_timed", False):
        return
    timed = _timed_classes.get(cls)
    if timed is None:
        namespace: dict[str, Any] = {"_argosy_timed": True}
        namespace.update({name: _timed(name) for name in STORE_OPERATIONS})
        timed = type(f"Timed{cls.__name__}", (cls,), namespace)
        _timed_classes[cls] = timed
    backend.__class__ = timed


# -- audit append failures (counted from the audit writer's error log) -------------------------
class _AuditFailures(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and "audit event not recorded" in record.getMessage():
            METRICS.audit_failures.inc()


_audit_handler = _AuditFailures()
logging.getLogger("argosy.audit").addHandler(_audit_handler)


# -- platform state from the database ----------------------------------------------------------
class StateCollector(Collector):
    """Series read from the metadata database (and this instance's coordinator)."""

    def __init__(self, context: Any) -> None:
        self.ctx = context
        self._lock = threading.Lock()
        self._cached: list[Any] = []
        self._cached_at = 0.0
        self._watermark: datetime | None = None
        self._seen: dict[str, datetime] = {}
        self._cost: list[Any] = []
        self._cost_at = -COST_TTL

    def describe(self) -> Iterator[Any]:
        return iter(())  # families vary with the data: not described up front

    def collect(self) -> Iterator[Any]:
        yield from self._instance()
        if not self._leading():
            return
        with self._lock:
            if time.monotonic() - self._cached_at > STATE_TTL:
                try:
                    self._observe_ended()
                    self._cached = list(self._platform())
                except Exception as exc:  # a scrape never fails on the database
                    log.warning("metrics: database state not read: %s", exc)
                    self._cached = []
                self._cached_at = time.monotonic()
            yield from self._cached

    def _leading(self) -> bool:
        coordinator = getattr(self.ctx, "coordinator", None)
        return coordinator is None or bool(coordinator.is_leader)

    def _instance(self) -> Iterator[Any]:
        coordinator = getattr(self.ctx, "coordinator", None)
        leader = GaugeMetricFamily(
            "argosy_scheduler_leader", "1 while this instance holds the scheduler lease",
            labels=["instance"],
        )  # fmt: skip
        leader.add_metric([self.ctx.instance_id], 1.0 if self._leading() else 0.0)
        yield leader
        if coordinator is not None:
            capacity = GaugeMetricFamily(
                "argosy_executor_capacity", "what this instance's tasks may use at once",
                labels=["resource"],
            )  # fmt: skip
            used = GaugeMetricFamily(
                "argosy_executor_used", "what this instance's running tasks reserved",
                labels=["resource"],
            )  # fmt: skip
            ledger = coordinator.ledger
            cap = coordinator.capacity
            capacity.add_metric(["cpu"], float(cap.cpu))
            capacity.add_metric(["memory_bytes"], float(cap.memory))
            capacity.add_metric(["gpu"], float(cap.gpu))
            used.add_metric(["cpu"], float(ledger.used_cpu))
            used.add_metric(["memory_bytes"], float(ledger.used_memory))
            used.add_metric(["gpu"], float(cap.gpu - len(ledger.free_gpus)))
            yield capacity
            yield used
            runs = GaugeMetricFamily("argosy_instance_runs", "runs this instance drives now")
            runs.add_metric([], float(len(coordinator.running_runs)))
            yield runs
        for name, help_text in (
            ("orphans_removed", "orphaned processes, folders and files the sweeper removed"),
        ):
            family = CounterMetricFamily(f"argosy_{name}", help_text, labels=["kind"])
            for kind in ("process", "scratch_folder", "temp_file", "job", "secret"):
                family.add_metric([kind], 0.0)
            for kind, n in counters.snapshot(name).items():
                family.add_metric([kind], float(n))
            yield _dedupe(family)
        lifecycle = CounterMetricFamily(
            "argosy_lifecycle_items", "what lifecycle jobs did, by what", labels=["what"]
        )
        for what, n in counters.snapshot("lifecycle").items():
            lifecycle.add_metric([what], float(n))
        yield lifecycle
        kek = GaugeMetricFamily(
            "argosy_encryption_key_available", "1 if the key-encryption key can be used"
        )
        kek.add_metric([], 1.0 if self._kek_ok() else 0.0)
        yield kek

    def _kek_ok(self) -> bool:
        settings = getattr(self.ctx, "settings", None)
        if settings is None or settings.encryption is False:
            return True
        try:
            self.ctx.tenant_keys()
            return True
        except Exception:
            return False

    def _observe_ended(self) -> None:
        """Feed the duration and queue-wait histograms with attempts that ended since the last
        scrape (each once; what ended before this process started is not counted)."""
        from argosy.stores.metadata.runs import as_utc
        from argosy.stores.metadata.tables import Attempt, Task

        now = datetime.now(UTC)
        if self._watermark is None:
            self._watermark = now
            return
        since = self._watermark - timedelta(seconds=60)  # commits land a little out of order
        with self.ctx.metadata.session() as s:
            rows = s.execute(
                select(Attempt.id, Attempt.tenant, Attempt.wall_time, Attempt.started_at,
                       Attempt.finished_at, Task.queued_at)
                .join(Task, Task.id == Attempt.task_id)
                .where(Attempt.finished_at >= since)
            ).all()  # fmt: skip
        for attempt_id, tenant, wall, started, finished, queued in rows:
            if attempt_id in self._seen:
                continue
            self._seen[attempt_id] = as_utc(finished) or now
            if wall is not None:
                METRICS.task_duration.labels(tenant).observe(max(0.0, float(wall)))
            s_at, q_at = as_utc(started), as_utc(queued)
            if s_at is not None and q_at is not None:
                METRICS.queue_wait.labels(tenant).observe(max(0.0, (s_at - q_at).total_seconds()))
        self._watermark = now
        self._seen = {k: v for k, v in self._seen.items() if v >= since}

    def _platform(self) -> Iterator[Any]:
        from argosy.stores.metadata.runs import as_utc
        from argosy.stores.metadata.tables import (
            Attempt,
            Lease,
            Pipeline,
            Run,
            ServerInstance,
            Task,
        )

        now = datetime.now(UTC)
        runs = GaugeMetricFamily(
            "argosy_runs",
            "runs by tenant, pipeline and status",
            labels=["tenant", "pipeline", "status"],
        )
        tasks = GaugeMetricFamily(
            "argosy_tasks", "tasks by tenant and state", labels=["tenant", "state"]
        )
        oldest = GaugeMetricFamily(
            "argosy_oldest_pending_run_seconds", "age of the oldest run waiting to start",
            labels=["tenant"],
        )  # fmt: skip
        attempts = CounterMetricFamily(
            "argosy_task_attempts",
            "ended attempts by tenant and outcome",
            labels=["tenant", "outcome"],
        )
        hits = CounterMetricFamily(
            "argosy_cache_hits", "tasks answered from the cache", labels=["tenant"]
        )
        lease = CounterMetricFamily(
            "argosy_scheduler_lease_changes", "changes of the scheduler lease's holder (failovers)"
        )
        instances = GaugeMetricFamily(
            "argosy_server_instances", "server instances with a fresh heartbeat", labels=["state"]
        )
        with self.ctx.metadata.session() as s:
            for tenant, pipeline, status, n in s.execute(
                select(Run.tenant, Pipeline.name, Run.status, func.count())
                .join(Pipeline, Pipeline.id == Run.pipeline_id)
                .group_by(Run.tenant, Pipeline.name, Run.status)
            ):
                runs.add_metric([tenant, pipeline, str(status)], float(n))
            for tenant, state, n in s.execute(
                select(Task.tenant, Task.state, func.count()).group_by(Task.tenant, Task.state)
            ):
                tasks.add_metric([tenant, str(state)], float(n))
                if state == "cached":
                    hits.add_metric([tenant], float(n))
            for tenant, first in s.execute(
                select(Run.tenant, func.min(Run.created_at))
                .where(Run.status == "pending")
                .group_by(Run.tenant)
            ):
                created = as_utc(first)
                if created is not None:
                    oldest.add_metric([tenant], max(0.0, (now - created).total_seconds()))
            for tenant, state, n in s.execute(
                select(Attempt.tenant, Attempt.state, func.count())
                .where(Attempt.state != "running")
                .group_by(Attempt.tenant, Attempt.state)
            ):
                attempts.add_metric([tenant, str(state)], float(n))
            token = s.scalar(select(Lease.token).where(Lease.name == "scheduler"))
            lease.add_metric([], float(token or 0))
            ttl = timedelta(
                seconds=getattr(getattr(self.ctx, "settings", None), "lease_seconds", 15)
            )
            for state, n in s.execute(
                select(ServerInstance.state, func.count())
                .where(ServerInstance.heartbeat_at >= now - ttl)
                .group_by(ServerInstance.state)
            ):
                instances.add_metric([str(state)], float(n))
        yield from (runs, tasks, oldest, attempts, hits, lease, instances)
        if time.monotonic() - self._cost_at > COST_TTL:
            self._cost = list(_cost_families(self.ctx))
            self._cost_at = time.monotonic()
        yield from self._cost


def _cost_families(ctx: Any) -> Iterator[Any]:
    """Month-to-date cost and budget per tenant (``argosy.service.costs``)."""
    try:
        from argosy.service.costs import budgets_of_all
    except ImportError:  # pragma: no cover - during a partial install
        return
    spent = GaugeMetricFamily(
        "argosy_tenant_cost_month_to_date", "cost of the tenant's attempts this month",
        labels=["tenant", "currency"],
    )  # fmt: skip
    budget = GaugeMetricFamily(
        "argosy_tenant_budget", "the tenant's monthly budget", labels=["tenant", "currency"]
    )
    warn = GaugeMetricFamily(
        "argosy_tenant_budget_warn_ratio",
        "the fraction of its budget that warns",
        labels=["tenant"],
    )
    for b in budgets_of_all(ctx.metadata, ctx.settings):
        spent.add_metric([b.tenant, b.currency], b.month_to_date)
        if b.monthly is not None:
            budget.add_metric([b.tenant, b.currency], b.monthly)
            warn.add_metric([b.tenant], b.warn_at)
    yield from (spent, budget, warn)


def _dedupe(family: Any) -> Any:
    """One sample per label set (the last given wins): zeros first, then counts."""
    last: dict[tuple[Any, ...], Any] = {}
    for sample in family.samples:
        last[sample.name, tuple(sorted(sample.labels.items()))] = sample
    family.samples = list(last.values())
    return family


# -- the route ---------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False)
_admin = authorized(Action.METRICS_READ)


def _scraper(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> None:
    """The scrape token, else whoever the policy lets read metrics (platform admins)."""
    settings = getattr(request.app.state.context, "settings", None)
    token = getattr(settings, "metrics_token", None)
    if (
        token
        and credentials is not None
        and hmac.compare_digest(credentials.credentials.encode(), token.encode())
    ):
        from argosy.auth.policy import Decision

        request.state.action = Action.METRICS_READ
        request.state.decision = Decision(True, "scrape token")
        return
    _admin(request, credentials)


setattr(_scraper, ACTION_ATTRIBUTE, Action.METRICS_READ)  # route_actions reads it

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(_: Annotated[None, Depends(_scraper)]) -> Response:
    """Every series of this instance (and, on the scheduler leader, the platform's)."""
    return Response(METRICS.expose(), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, context: Any) -> None:
    """``/metrics``, the request middleware, and the database and store timers."""
    metadata = getattr(context, "metadata", None)
    if metadata is not None:
        METRICS.watch_engine(metadata.engine)
        collector = StateCollector(context)
        old = METRICS._collectors.pop(id(context), None)
        if old is not None:
            METRICS.registry.unregister(old)
        METRICS.registry.register(collector)
        METRICS._collectors[id(context)] = collector
        store = getattr(context, "store", None)
        if callable(store):

            def timed_store(tenant: str) -> Any:
                found = store(tenant)
                time_byte_store(found.backend)
                return found

            context.store = timed_store
    app.include_router(router)
