"""Cost: an attempt's recorded use priced by a price list equals the hand-computed figure,
charged on max(requested, used) per resource at its node pool's prices; a tenant's price
override; totals by tenant equal the sum by run; the CLI's CSV."""

from __future__ import annotations

import csv
import io
import math

from sqlalchemy import select

from argosy.service.costs import EXAMPLE_PRICES, PriceList, charge, prices_for
from argosy.stores.metadata.tables import Attempt
from tests.conftest import Workspace

GIB = 1024**3
PIPE = """
from argosy import pipeline, step

@step
def a(i: int) -> int:
    return i

@step
def b(x: int) -> int:
    return x + 1

@pipeline
def two(i: int = 0) -> int:
    return b(a(i))
"""
PRICES = """
currency = "EUR"
[default]
cpu_hour = 0.04
gib_hour = 0.005
gpu_hour = 0.0
[pools.gpu]
cpu_hour = 0.05
gib_hour = 0.006
gpu_hour = 2.5
"""


def test_a_run_costs_the_hand_computed_figure(ws: Workspace) -> None:
    path = ws.write(PIPE, "two")
    prices = ws.root / "prices.toml"
    prices.write_text(PRICES)
    env = {"ARGOSY_PRICES_FILE": str(prices)}
    run_ids = []
    for i in (1, 2):
        done = ws.argosy("run", f"{path}:two", "-p", f"i={i}", "-q", "-o", "json")
        assert done.code == 0, done.stderr
        run_ids.append(done.json()["id"])
    local = ws.local()
    with local.metadata.session() as s:  # known use: what the attempts are recorded to have used
        attempts = {(a.run_id, a.number, a.task_id): a for a in s.scalars(select(Attempt))}
        first, second = sorted((a for a in attempts.values() if a.run_id == run_ids[0]),
                               key=lambda a: a.id)  # fmt: skip
        # asked for 1 core and 2 GiB; kept 2 cores busy for an hour, peaked at 3 GiB
        first.wall_time, first.cpu_time, first.peak_memory = 3600.0, 7200.0, 3 * GIB
        first.resources = {"cpu": 1.0, "memory": 2 * GIB, "gpu": 0}
        first.node_pool = None
        # asked for 4 cores, 8 GiB and a GPU on the gpu pool; used 1 core, 1 GiB for 30 min
        second.wall_time, second.cpu_time, second.peak_memory = 1800.0, 1800.0, GIB
        second.resources = {"cpu": 4.0, "memory": 8 * GIB, "gpu": 1}
        second.node_pool = "gpu"
    expected_first = 1.0 * (2 * 0.04 + 3 * 0.005)  # used beats requested: 2 cores, 3 GiB
    expected_second = 0.5 * (4 * 0.05 + 8 * 0.006 + 1 * 2.5)  # requested beats used
    done = ws.argosy("costs", "report", "--by", "task", "--run", run_ids[0], "-o", "json", env=env)
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["currency"] == "EUR"
    by_task = {line["key"].split("/")[1]: line["cost"] for line in report["items"]}
    assert math.isclose(by_task["a"], expected_first, rel_tol=1e-9)
    assert math.isclose(by_task["b"], expected_second, rel_tol=1e-9)
    assert math.isclose(report["total"], expected_first + expected_second, rel_tol=1e-9)
    # totals by tenant equal the sum by run
    by_run = ws.argosy("costs", "report", "--by", "run", "-o", "json", env=env).json()
    by_tenant = ws.argosy("costs", "report", "--by", "tenant", "-o", "json", env=env).json()
    assert {line["key"] for line in by_run["items"]} == set(run_ids)
    assert [line["key"] for line in by_tenant["items"]] == ["default"]
    assert math.isclose(by_tenant["items"][0]["cost"],
                        sum(line["cost"] for line in by_run["items"]), rel_tol=1e-12)  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(
        ws.argosy("costs", "report", "--by", "run", "-o", "csv", env=env).stdout)))  # fmt: skip
    assert {r["run"] for r in rows} == set(run_ids) and "cost_EUR" in rows[0]


def test_charge_and_tenant_overrides() -> None:
    prices = prices_for(EXAMPLE_PRICES, {"prices": {"default": {"cpu_hour": 1.0}}})
    rates = prices.rates(None)
    assert (rates.cpu_hour, rates.gib_hour) == (1.0, EXAMPLE_PRICES["default"]["gib_hour"])
    assert prices.rates("gpu").gpu_hour == EXAMPLE_PRICES["pools"]["gpu"]["gpu_hour"]
    assert prices.rates("unknown-pool") == rates
    cost, cpu_h, gib_h, gpu_h, hours = charge(
        rates, wall=7200.0, cpu_time=3600.0, peak=None, resources={"cpu": 0.25, "memory": GIB}
    )
    assert (cpu_h, gib_h, gpu_h, hours) == (1.0, 2.0, 0.0, 2.0)  # 0.5 cores used over 2 h
    assert math.isclose(cost, 1.0 * 1.0 + 2.0 * rates.gib_hour)
    assert charge(rates, wall=None, cpu_time=None, peak=None, resources=None)[0] == 0.0
    assert PriceList.parse({"default": {"cpu_hour": 2}}).rates("x").gib_hour == 0.0
