"""Cost: what each attempt used, priced by a price list, summed per task, run, pipeline, user,
day or tenant.

The rule (as Kubernetes cost tools charge): each resource is charged on
``max(requested, used)`` for the attempt's wall time, at the price of the attempt's node pool:

- CPU: ``max(requested cores, cpu seconds / wall seconds)`` x hours x ``cpu_hour``;
- memory: ``max(requested bytes, peak resident bytes)`` / GiB x hours x ``gib_hour``;
- GPU: requested GPUs x hours x ``gpu_hour`` (a GPU is held whole);

so an attempt that asked for 4 cores and used 1 pays for 4, and one that asked for 1 and kept
3 busy pays for 3. Cached tasks ran no process and cost nothing. Every attempt counts, failed
and retried ones too: they used the machine.

The price list is the platform's (``ARGOSY_PRICES_FILE``, TOML or JSON; without one the
example list below), overridden per tenant by its ``prices`` setting (same shape, merged key by
key). A tenant's ``budget`` setting (``{"monthly": 500, "warn_at": 0.8}``) is compared with
its month-to-date cost (the ``argosy_tenant_*`` metrics and an alert rule).
"""

from __future__ import annotations

import json
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from argosy.api import ops as api_ops
from argosy.errors import UsageError
from argosy.service.context import ServiceContext
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Attempt, Pipeline, Run, Task, Tenant

GIB = 1024**3
DEFAULT_POOL = "default"

# Public on-demand prices of the AWS EC2 price list (us-east-1, Linux), as published in 2025
# (not re-read from these machines, which reach no price page: recheck before relying on them):
# m7i.xlarge $0.2016/h for 4 vCPU + 16 GiB; g5.xlarge $1.006/h for 4 vCPU + 16 GiB + 1 A10G.
# Split as Kubernetes cost tools do: a vCPU-hour and a GiB-hour from the general-purpose
# instance (CPU 2/3 of its price, memory 1/3), the GPU-hour as the GPU instance less the
# same CPU and memory.
EXAMPLE_PRICES: dict[str, Any] = {
    "currency": "USD",
    "taken": "2025 (AWS EC2 on-demand price list; recheck)",
    "source": "AWS EC2 on-demand, us-east-1, Linux: m7i.xlarge and g5.xlarge",
    "default": {"cpu_hour": 0.0336, "gib_hour": 0.0042, "gpu_hour": 0.0},
    "pools": {"gpu": {"cpu_hour": 0.0336, "gib_hour": 0.0042, "gpu_hour": 0.8044}},
}


@dataclass(frozen=True)
class Rates:
    cpu_hour: float
    gib_hour: float
    gpu_hour: float


@dataclass(frozen=True)
class PriceList:
    """Prices per node pool (``default`` for attempts on no named pool, or an unknown one)."""

    currency: str
    default: Rates
    pools: Mapping[str, Rates]

    def rates(self, pool: str | None) -> Rates:
        return self.pools.get(pool or DEFAULT_POOL, self.default)

    @classmethod
    def parse(cls, doc: Mapping[str, Any], where: str = "the price list") -> PriceList:
        def rates(found: Any, fallback: Rates | None, name: str) -> Rates:
            if not isinstance(found, Mapping):
                raise UsageError(f"{where}: {name} must be a table of cpu_hour, gib_hour, gpu_hour")
            values = {}
            for key in ("cpu_hour", "gib_hour", "gpu_hour"):
                value = found.get(key, getattr(fallback, key) if fallback else 0.0)
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise UsageError(f"{where}: {name}.{key} must be a price >= 0, not {value!r}")
                values[key] = float(value)
            return Rates(**values)

        default = rates(doc.get("default", {}), None, "default")
        pools = {
            str(name): rates(r, default, f"pools.{name}")
            for name, r in (doc.get("pools") or {}).items()
        }
        return cls(str(doc.get("currency", "USD")), default, pools)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def platform_prices(prices_file: Path | None) -> dict[str, Any]:
    """The platform's price list document (the example one without a file)."""
    if prices_file is None:
        return EXAMPLE_PRICES
    try:
        text = prices_file.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the price list {prices_file}: {exc.strerror}") from None
    try:
        return json.loads(text) if prices_file.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"the price list {prices_file} is not valid: {exc}") from None


def prices_for(platform: Mapping[str, Any], tenant_settings: Mapping[str, Any] | None) -> PriceList:
    """The platform's prices with the tenant's ``prices`` setting over them."""
    override = (tenant_settings or {}).get("prices") or {}
    return PriceList.parse(_merge(platform, override), "the price list")


def charge(
    rates: Rates, *, wall: float | None, cpu_time: float | None, peak: int | None,
    resources: Mapping[str, Any] | None,
) -> tuple[float, float, float, float, float]:  # fmt: skip
    """(cost, charged cpu-hours, GiB-hours, gpu-hours, wall hours) of one attempt."""
    if not wall or wall <= 0:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    r = resources or {}
    hours = wall / 3600.0
    cores = max(float(r.get("cpu") or 0.0), (cpu_time or 0.0) / wall)
    gib = max(float(r.get("memory") or 0), float(peak or 0)) / GIB
    gpus = float(r.get("gpu") or 0)
    cpu_h, gib_h, gpu_h = cores * hours, gib * hours, gpus * hours
    cost = cpu_h * rates.cpu_hour + gib_h * rates.gib_hour + gpu_h * rates.gpu_hour
    return (cost, cpu_h, gib_h, gpu_h, hours)


@dataclass
class _Sum:
    tenant: str
    attempts: int = 0
    cpu: float = 0.0
    gib: float = 0.0
    gpu: float = 0.0
    wall: float = 0.0
    cost: float = 0.0


def _rows(
    metadata: MetadataStore, tenant: str | None, since: datetime | None, until: datetime | None,
    run_id: str | None = None,
) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    query = (
        select(
            Attempt.tenant,
            Attempt.run_id,
            Attempt.wall_time,
            Attempt.cpu_time,
            Attempt.peak_memory,
            Attempt.resources,
            Attempt.node_pool,
            Attempt.started_at,
            Attempt.finished_at,
            Run.created_by,
            Pipeline.name,
            Task.node_path,
        )
        .join(Run, Run.id == Attempt.run_id)
        .join(Pipeline, Pipeline.id == Run.pipeline_id)
        .join(Task, Task.id == Attempt.task_id)
        .where(Attempt.wall_time.is_not(None))
    )
    if tenant is not None:
        query = query.where(Attempt.tenant == tenant)
    if run_id is not None:
        query = query.where(Attempt.run_id == run_id)
    if since is not None:
        query = query.where(Attempt.finished_at >= since)
    if until is not None:
        query = query.where(Attempt.finished_at < until)
    with metadata.session() as s:
        yield from s.execute(query.order_by(Attempt.id)).all()


def _tenant_settings(metadata: MetadataStore) -> dict[str, dict[str, Any]]:
    with metadata.session() as s:
        return {
            name: dict(st or {}) for name, st in s.execute(select(Tenant.name, Tenant.settings))
        }


def _key(by: str, row: tuple[Any, ...]) -> str:
    tenant, run_id, *_rest = row
    started, finished, user, pipeline, node = row[7], row[8], row[9], row[10], row[11]
    when = q.as_utc(finished) or q.as_utc(started)
    match by:
        case "tenant":
            return str(tenant)
        case "pipeline":
            return str(pipeline)
        case "run":
            return str(run_id)
        case "user":
            return str(user)
        case "day":
            return when.date().isoformat() if when else "unknown"
        case "task":
            return f"{run_id}/{node}"
    raise UsageError(f"cannot group costs by {by!r}; use tenant, pipeline, run, user, day or task")


def report(
    rows: Iterable[tuple[Any, ...]], by: str, platform: Mapping[str, Any],
    settings_of: Mapping[str, Mapping[str, Any]],
) -> tuple[list[api_ops.CostLine], str]:  # fmt: skip
    """Cost lines grouped ``by``, most expensive first, and the currency."""
    lists: dict[str, PriceList] = {}
    sums: dict[tuple[str, str], _Sum] = {}
    currency = str(platform.get("currency", "USD"))
    for row in rows:
        tenant = str(row[0])
        prices = lists.get(tenant)
        if prices is None:
            prices = lists[tenant] = prices_for(platform, settings_of.get(tenant))
        cost, cpu, gib, gpu, hours = charge(
            prices.rates(row[6]), wall=row[2], cpu_time=row[3], peak=row[4], resources=row[5]
        )
        key = _key(by, row)
        total = sums.setdefault((tenant, key), _Sum(tenant))
        total.attempts += 1
        total.cpu += cpu
        total.gib += gib
        total.gpu += gpu
        total.wall += hours
        total.cost += cost
    lines = [
        api_ops.CostLine(
            key=key,
            tenant=t.tenant,
            attempts=t.attempts,
            cpu_hours=t.cpu,
            memory_gib_hours=t.gib,
            gpu_hours=t.gpu,
            wall_hours=t.wall,
            cost=t.cost,
        )
        for (_tenant, key), t in sums.items()
    ]
    lines.sort(key=lambda line: (-line.cost, line.key))
    return lines, currency


def _check_by(by: str) -> None:
    if by not in ("tenant", "pipeline", "run", "user", "day", "task"):
        raise UsageError(
            f"cannot group costs by {by!r}; use tenant, pipeline, run, user, day or task"
        )


def cost_report(
    ctx: ServiceContext, by: str, *, since: datetime | None = None, until: datetime | None = None,
    run: str | None = None, prices_file: Path | None = None,
) -> api_ops.CostReport:  # fmt: skip
    """The tenant's cost, grouped ``by`` (``run``: only that run's attempts)."""
    _check_by(by)
    run_id = None
    if run is not None:
        with ctx.metadata.session() as s:
            run_id = q.get_run(s, ctx.tenant, run).id
    platform = platform_prices(prices_file)
    settings_of = _tenant_settings(ctx.metadata)
    lines, currency = report(
        _rows(ctx.metadata, ctx.tenant, since, until, run_id), by, platform, settings_of
    )
    return api_ops.CostReport(
        by=by, since=since, until=until, currency=currency, items=lines,  # type: ignore[arg-type]
        total=sum(line.cost for line in lines),
    )  # fmt: skip


def cost_report_all(
    metadata: MetadataStore, by: str, *, since: datetime | None = None,
    until: datetime | None = None, prices_file: Path | None = None,
) -> api_ops.CostReport:  # fmt: skip
    """Every tenant's cost (platform admins), grouped ``by``."""
    _check_by(by)
    platform = platform_prices(prices_file)
    lines, currency = report(
        _rows(metadata, None, since, until), by, platform, _tenant_settings(metadata)
    )
    return api_ops.CostReport(
        by=by, since=since, until=until, currency=currency, items=lines,  # type: ignore[arg-type]
        total=sum(line.cost for line in lines),
    )  # fmt: skip


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _budget(
    tenant: str, settings: Mapping[str, Any], spent: float, currency: str
) -> api_ops.Budget:
    found = settings.get("budget") or {}
    monthly = found.get("monthly") if isinstance(found, Mapping) else None
    warn_at = float(found.get("warn_at", 0.8)) if isinstance(found, Mapping) else 0.8
    if not isinstance(monthly, int | float) or isinstance(monthly, bool):
        return api_ops.Budget(tenant=tenant, monthly=None, warn_at=warn_at,
                              month_to_date=spent, currency=currency, state="none")  # fmt: skip
    state: Literal["ok", "warning", "exceeded"] = (
        "exceeded" if spent >= monthly else "warning" if spent >= warn_at * monthly else "ok"
    )
    return api_ops.Budget(tenant=tenant, monthly=float(monthly), warn_at=warn_at,
                          month_to_date=spent, currency=currency, state=state)  # fmt: skip


def budget(
    ctx: ServiceContext, *, prices_file: Path | None = None, now: datetime | None = None
) -> api_ops.Budget:
    """The tenant's monthly budget and its month-to-date cost."""
    since = month_start(now or datetime.now(UTC))
    spent = cost_report(ctx, "tenant", since=since, prices_file=prices_file)
    settings = _tenant_settings(ctx.metadata).get(ctx.tenant, {})
    return _budget(ctx.tenant, settings, spent.total, spent.currency)


def budgets_of_all(
    metadata: MetadataStore, settings: Any, now: datetime | None = None
) -> list[api_ops.Budget]:
    """Every tenant's budget state (for ``/metrics``)."""
    since = month_start(now or datetime.now(UTC))
    prices_file = getattr(settings, "prices_file", None)
    spent = cost_report_all(metadata, "tenant", since=since, prices_file=prices_file)
    by_tenant = {line.tenant: line.cost for line in spent.items}
    found = []
    for tenant, tenant_settings in sorted(_tenant_settings(metadata).items()):
        found.append(_budget(tenant, tenant_settings, by_tenant.get(tenant, 0.0), spent.currency))
    return found


def grouped(lines: Iterable[api_ops.CostLine]) -> dict[str, float]:
    """Cost per tenant of report lines (a check: by-run sums equal by-tenant totals)."""
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        totals[line.tenant] += line.cost
    return dict(totals)
