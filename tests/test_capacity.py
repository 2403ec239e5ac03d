"""Admission of attempts on a shared machine: capacity, tenant quotas, max-min fair share."""

from __future__ import annotations

import pytest

from argosy.executors.base import Usage
from argosy.executors.local.capacity import CapacityLedger
from argosy.spec.validate import Capacity

GiB = 1024**3


def ledger(cpu: float = 2, quotas: dict[str, dict[str, float]] | None = None) -> CapacityLedger:
    q = quotas or {}
    return CapacityLedger(Capacity(cpu=cpu, memory=8 * GiB, gpu=1), quotas=q.get)


def test_a_single_tenant_uses_the_whole_machine_and_no_more() -> None:
    led = ledger()
    assert led.reserve("a", 1, GiB, 0) == []
    assert led.reserve("a", 1, GiB, 1) == [0]
    assert led.reserve("a", 0.5, None, 0) is None  # CPUs full
    led.release("a", 1, GiB, (0,))
    assert led.reserve("a", 1, None, 1) == [0]  # the GPU device came back


def test_when_room_frees_up_the_waiting_tenant_using_less_gets_it_first() -> None:
    led = ledger()
    led.reserve("big", 1, None, 0)
    led.reserve("big", 1, None, 0)
    assert led.reserve("small", 1, None, 0) is None  # full: "small" is now waiting
    led.release("big", 1, None, ())
    assert led.reserve("big", 1, None, 0) is None  # big uses more than small: it defers
    assert led.reserve("small", 1, None, 0) == []
    assert led.by_tenant["small"].tasks == 1 and led.by_tenant["big"].tasks == 1


def test_a_tenant_that_stopped_asking_no_longer_holds_room_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    led = ledger()
    led.reserve("big", 2, None, 0)
    assert led.reserve("small", 1, None, 0) is None
    led.release("big", 2, None, ())
    clock = [1e9]
    monkeypatch.setattr("argosy.executors.local.capacity.time.monotonic", lambda: clock[0])
    assert led.reserve("big", 1, None, 0) == []  # small's wait expired long ago


def test_a_tenant_at_its_quota_waits_while_another_tenant_still_starts() -> None:
    led = ledger(cpu=8, quotas={"a": {"running_tasks": 2, "cpu": 8}})
    assert led.reserve("a", 1, None, 0) == []
    assert led.reserve("a", 1, None, 0) == []
    assert led.reserve("a", 1, None, 0) is None  # third task of "a": over its quota
    assert led.reserve("b", 1, None, 0) == []  # "a" at its quota holds nobody back
    assert led.reserve("b", 1, None, 0) == []


def test_quotas_count_what_the_tenant_runs_on_other_instances() -> None:
    led = ledger(cpu=8, quotas={"a": {"cpu": 3}})
    led.set_elsewhere({"a": Usage(tasks=2, cpu=2.0)})
    assert led.reserve("a", 1, None, 0) == []
    assert led.reserve("a", 1, None, 0) is None  # 2 elsewhere + 1 here = its 3 CPUs


def test_attempts_about_to_start_count_as_held() -> None:
    """An engine writes all the attempts a turn can start in one transaction, then starts
    them: each is admitted besides those written before it, so a turn never writes more than
    the machine, the GPU devices or the tenant's quota admit."""
    led = ledger(cpu=2, quotas={"a": {"running_tasks": 3}})
    one = Usage(tasks=1, cpu=1.0)
    assert led.fits("a", 1, None, 0, besides=one)
    assert not led.fits("a", 1, None, 0, besides=Usage(tasks=2, cpu=2.0))  # the CPUs
    assert led.fits("a", 0.5, None, 1, besides=one)
    assert not led.fits("a", 0.5, None, 1, besides=Usage(tasks=1, cpu=0.5, gpu=1))  # the GPU
    assert not led.fits("a", 0.1, None, 0, besides=Usage(tasks=3, cpu=0.3))  # the quota
    led.reserve("a", 1, None, 0)
    assert not led.fits("a", 1, None, 0, besides=one)  # held and about to start, together
    assert led.by_tenant["a"].tasks == 1  # asking reserves nothing
