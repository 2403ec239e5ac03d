"""The engine's turn (engine/loop.py ``_turn``): what ends and what starts in one loop turn is
written in one transaction — except where settling needs a transaction of its own.

On a server every settled output is checked against the task store's uploads
(``refused_outputs``), which reads the database in its own transaction; inside the turn's
transaction that read would wait for the turn's own write lock on SQLite (30 s, then
"database is locked", which the run loop takes for an outage). Several attempts ending in one
turn is what exposes it, so these runs end many at once.
"""

from __future__ import annotations

import time
from pathlib import Path

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import start_server

WIDE = """
import time
from pathlib import Path
from argosy import pipeline, step


@step(cache=False, cpu=0.1)
def held(gate: str, n: int) -> int:
    while not Path(gate).exists():
        time.sleep(0.002)
    return n


@pipeline
def wide(gate: str):
    for n in range(8):
        held(gate=gate, n=n)
"""


def test_attempts_ending_together_on_a_sqlite_server_settle_without_waiting_on_themselves(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "turn_wide.py").write_text(WIDE)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'turn_wide.py'}:wide"))
    server = start_server(tmp_path / "server", {"ARGOSY_MAX_CPUS": "2"})
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            for round_ in range(3):
                gate = tmp_path / f"gate-{round_}"
                run = client.create_run("wide", parameters={"gate": str(gate)})
                deadline = time.monotonic() + 120
                while sum(t.state == "running" for t in client.tasks(run.id)) < 8:
                    assert time.monotonic() < deadline, "the branches never all started"
                    time.sleep(0.05)  # (they hold until the gate opens, then end together)
                gate.write_text("")
                done = client.wait(run.id, poll=0.1, timeout=120)
                assert done.status == "succeeded", done.error
        log = server.log()
    finally:
        server.stop()
    assert "database unreachable" not in log, log[-3000:]
    assert "database is locked" not in log, log[-3000:]
