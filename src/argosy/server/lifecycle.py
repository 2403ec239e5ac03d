"""The leader's lifecycle loop: every ``lifecycle_interval`` seconds, while this instance holds
the scheduler lease, one pass of the lifecycle job per tenant (log index, retention,
retrievals: ``ops/retention.py``) and the sweeper (``ops/sweeper.py``). Fenced: a pass stops
between steps as soon as the lease is lost, and every step is resumable by the next leader."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from argosy.api import ops as api_ops
from argosy.ops.cleanup import iter_tenants

log = logging.getLogger("argosy.server")


def run_all(context: Any, still_leading: Callable[[], bool]) -> api_ops.LifecycleReport:
    """One pass for every tenant; the sums of what each did."""
    from argosy.service import ServiceContext, retention

    total = api_ops.LifecycleReport()
    now = context.clock.now()
    s = context.settings
    for tenant in iter_tenants(context.metadata):
        if not still_leading():
            break
        ctx = ServiceContext(
            metadata=context.metadata, store=context.store(tenant), tenant=tenant,
            actor="system:lifecycle", attempts_dir=s.attempts_dir,
        )  # fmt: skip
        try:
            done = retention.run_lifecycle(ctx, s, now, still_leading=still_leading)
        except Exception:  # one tenant's trouble does not stop the others
            log.exception("lifecycle job of tenant %s failed; the next pass resumes it", tenant)
            continue
        for name, value in done.model_dump().items():
            setattr(total, name, getattr(total, name) + value)
    return total


def sweep(coordinator: Any) -> dict[str, int]:
    """The sweeper over this instance's executors: local processes and folders (every
    instance runs local container steps and keeps attempt folders), and pods when tasks run
    on Kubernetes."""
    from argosy import plugins
    from argosy.ops import sweeper

    ctx = coordinator.ctx
    s = ctx.settings
    executors: list[Any] = []
    local_class = plugins.executor_class(plugins.DEFAULT_EXECUTOR)
    executors.append(local_class(_NoStore(), s.attempts_dir, coordinator.capacity))
    if s.executor == "kubernetes":  # each tenant's namespace
        k8s = plugins.executor_class("kubernetes")
        for tenant in iter_tenants(ctx.metadata):
            executors.append(k8s.from_settings(  # type: ignore[attr-defined]
                s, ctx.store(tenant), quotas=coordinator.ledger.quotas))  # fmt: skip
    return sweeper.sweep(ctx.metadata, executors)


class _NoStore:
    """The local executor's sweep reads no store (temp files of a folder store aside)."""

    tenant = "default"
    backend = None
    cipher = None


def loop(coordinator: Any) -> None:
    """The lifecycle thread of a server instance (runs while it leads)."""
    ctx = coordinator.ctx
    interval = ctx.settings.lifecycle_interval
    stopping = coordinator._stopping
    while not stopping.wait(interval):
        if not coordinator.lease.held or coordinator.draining:
            continue
        try:
            run_all(ctx, still_leading=lambda: coordinator.lease.held and not stopping.is_set())
            sweep(coordinator)
        except Exception:
            log.exception("lifecycle pass failed; retrying at the next interval")
