"""Tenants sharing a server: quotas cap one tenant without holding back the others, and a
tenant's wide fan-out cannot starve another tenant (intervals from the recorded attempts)."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from argosy.api import Run, Task, TenantQuotas
from argosy.client.client import Client
from argosy.spec.compile import CompiledPipeline, compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import ServerProcess, start_server

pytestmark = pytest.mark.slow

FAN_OUT = textwrap.dedent(
    """
    import time
    from argosy import pipeline, step

    @step(cpu=1)
    def work(i: int, seconds: float) -> int:
        time.sleep(seconds)
        return i

    @pipeline
    def fan(items: list = [0, 1], seconds: float = 1.0):
        work.map(items, seconds=seconds)
    """
)


@pytest.fixture(scope="module")
def fan(tmp_path_factory: pytest.TempPathFactory) -> CompiledPipeline:
    folder = tmp_path_factory.mktemp("project")
    (folder / "quota_fan.py").write_text(FAN_OUT)
    return compile_pipeline(load_pipeline(f"{folder / 'quota_fan.py'}:fan"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_HEARTBEAT_SECONDS": "0.3",
           "ARGOSY_POLL_INTERVAL": "0.2", "ARGOSY_MAX_CPUS": "2"}  # fmt: skip
    process = start_server(tmp_path / "server", env)
    with Client(process.url) as admin:
        for name in ("team-a", "team-b"):
            admin.create_tenant(name)
    yield process
    process.stop()


def intervals(client: Client, run: Run) -> list[tuple[float, float]]:
    spans = []
    tasks: list[Task] = client.tasks(run.id)
    for task in tasks:
        for a in task.attempts:
            assert a.started_at is not None and a.finished_at is not None
            spans.append((a.started_at.timestamp(), a.finished_at.timestamp()))
    return sorted(spans)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    return peak


def test_a_tenant_at_its_quota_queues_while_another_tenant_runs(
    server: ServerProcess, fan: CompiledPipeline
) -> None:
    with Client(server.url) as admin:
        admin.set_quotas("team-a", TenantQuotas(running_tasks=1))
    a, b = Client(server.url, tenant="team-a"), Client(server.url, tenant="team-b")
    with a, b:
        a.push_pipeline(fan)
        b.push_pipeline(fan)
        run_a = a.create_run("fan", parameters={"items": list(range(4)), "seconds": 0.8})
        run_b = b.create_run("fan", parameters={"items": list(range(4)), "seconds": 0.8})
        done_a, done_b = a.wait(run_a.id, timeout=120), b.wait(run_b.id, timeout=120)
        assert done_a.status == done_b.status == "succeeded"
        spans_a, spans_b = intervals(a, run_a), intervals(b, run_b)
    assert most_at_once(spans_a) == 1  # its quota: one running task at a time
    first_b, last_a = spans_b[0][0], spans_a[-1][0]
    assert first_b < last_a  # team-b started while team-a still had queued work
    # and ran beside team-a: the CPU team-a's quota left free was used, not idled
    assert most_at_once(spans_a + spans_b) == 2


def test_a_wide_fan_out_does_not_starve_another_tenant(
    server: ServerProcess, fan: CompiledPipeline
) -> None:
    a, b = Client(server.url, tenant="team-a"), Client(server.url, tenant="team-b")
    with a, b:
        a.push_pipeline(fan)
        b.push_pipeline(fan)
        big = a.create_run("fan", parameters={"items": list(range(10)), "seconds": 1.0})
        deadline = time.monotonic() + 60
        while not any(t.attempts for t in a.tasks(big.id)):  # team-a holds every CPU
            assert time.monotonic() < deadline, "team-a's fan-out never started"
            time.sleep(0.05)
        small = b.create_run("fan", parameters={"items": [0, 1], "seconds": 0.2})
        assert b.wait(small.id, timeout=120).status == "succeeded"
        assert a.wait(big.id, timeout=120).status == "succeeded"
        spans_big, spans_small = intervals(a, big), intervals(b, small)
    starts_big = [s for s, _ in spans_big]
    # the small tenant got the first CPUs that freed up, long before the fan-out ended
    assert spans_small[0][0] < sorted(starts_big)[4]
    assert spans_small[-1][1] < spans_big[-1][1]
