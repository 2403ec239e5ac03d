"""What the machine's capacity is used by, per tenant: admission with quotas and fair share.

One ledger per process is shared by every executor of that process (a server drives several
runs at once, each with its own executor). An attempt is admitted when:

1. the machine has room (CPU, memory, GPU devices);
2. its tenant stays within its quota (running tasks, CPU, memory, GPUs in use), counting
   what the tenant runs on other server instances too (``elsewhere``, refreshed by the
   coordinator);
3. no other tenant is waiting for room while using less of this machine (max-min fair
   share): when capacity frees up, the tenant using the least gets it first, so one tenant's
   1,000-wide fan-out cannot starve the others. A tenant counts as waiting for
   ``FAIR_WAIT`` seconds after it last asked for room and got none (engines ask again at
   every poll, so a waiting tenant stays registered while it waits).

Single-tenant local runs see only rule 1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from argosy.executors.base import Capacity, Usage

FAIR_WAIT = 2.0


def within_quota(quota: Mapping[str, Any] | None, total: Usage, cpu: float, memory: int | None,
                 gpu: int) -> bool:  # fmt: skip
    """Whether one more attempt of this size keeps ``total`` within ``quota``."""
    if not quota:
        return True
    limits = (
        ("running_tasks", total.tasks + 1),
        ("cpu", total.cpu + cpu),
        ("memory", total.memory + (memory or 0)),
        ("gpu", total.gpu + gpu),
    )
    return all(quota.get(key) is None or value <= quota[key] + 1e-9 for key, value in limits)


class CapacityLedger:
    def __init__(
        self,
        capacity: Capacity,
        quotas: Callable[[str], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.used_cpu = 0.0
        self.used_memory = 0
        self.free_gpus = list(range(capacity.gpu))
        self.quotas = quotas
        self.by_tenant: dict[str, Usage] = {}
        self.elsewhere: dict[str, Usage] = {}  # on other server instances
        self.waiting: dict[str, float] = {}  # tenant -> when it last asked in vain
        self._lock = threading.Lock()

    def fits(self, tenant: str, cpu: float, memory: int | None, gpu: int,
             besides: Usage | None = None) -> bool:  # fmt: skip
        """Whether one more attempt of this size is admitted now, ``besides`` the attempts of
        ``tenant`` about to start (counted as if they held their resources already)."""
        with self._lock:
            return self._admit(tenant, cpu, memory, gpu, besides or Usage())

    def reserve(self, tenant: str, cpu: float, memory: int | None, gpu: int) -> list[int] | None:
        """Take the resources (returns the GPU devices), or None when not admitted now."""
        with self._lock:
            if not self._admit(tenant, cpu, memory, gpu, Usage()):
                return None
            gpus, self.free_gpus = self.free_gpus[:gpu], self.free_gpus[gpu:]
            self.used_cpu += cpu
            self.used_memory += memory or 0
            self.by_tenant.setdefault(tenant, Usage()).add(cpu, memory, gpu)
            self.waiting.pop(tenant, None)
            return gpus

    def release(self, tenant: str, cpu: float, memory: int | None, gpus: tuple[int, ...]) -> None:
        with self._lock:
            self.free_gpus.extend(gpus)
            self.used_cpu -= cpu
            self.used_memory -= memory or 0
            self.by_tenant.setdefault(tenant, Usage()).add(cpu, memory, len(gpus), sign=-1)

    def set_elsewhere(self, usage: dict[str, Usage]) -> None:
        with self._lock:
            self.elsewhere = usage

    def _admit(self, tenant: str, cpu: float, memory: int | None, gpu: int,
               besides: Usage) -> bool:  # fmt: skip
        mine = self.by_tenant.get(tenant, Usage()) + besides
        if self.quotas is not None:
            total = mine + self.elsewhere.get(tenant, Usage())
            if not within_quota(self.quotas(tenant), total, cpu, memory, gpu):
                return False  # at its quota: it waits, without holding back anyone else
        now = time.monotonic()
        room = (
            self.used_cpu + besides.cpu + cpu <= self.capacity.cpu + 1e-9
            and (
                memory is None or self.used_memory + besides.memory + memory <= self.capacity.memory
            )
            and gpu <= len(self.free_gpus) - besides.gpu
        )
        if not room:
            self.waiting[tenant] = now
            return False
        for other_tenant, since in list(self.waiting.items()):
            if now - since > FAIR_WAIT:
                del self.waiting[other_tenant]
            elif other_tenant != tenant:
                theirs = self.by_tenant.get(other_tenant, Usage())
                if theirs.cpu < mine.cpu or (theirs.cpu == mine.cpu and theirs.tasks < mine.tasks):
                    return False  # leave the room to the tenant using less
        return True
