"""A task token is void the moment its attempt ends (issue 13, defect 3), through a live server
on SQLite and PostgreSQL: a step that leaks its token cannot use it once its attempt has
settled — not while the rest of the run goes on, not after the run — so an attempt's records
(its result, its log) are immutable once settled."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.security_fixture import BACKENDS
from tests.server_fixture import ServerProcess, start_server

LEAKY = textwrap.dedent(
    """
    import json, os, time
    from pathlib import Path
    from argosy import pipeline, step

    @step
    def leak(to: str) -> str:
        inv = json.loads(Path("../invocation.json").read_text())
        store = inv["store"]
        Path(to).write_text(json.dumps({
            "base": store["url"].removeprefix("argosy-task+") + "/api/v1/task-store/",
            "token": store["options"]["token"],
            "prefix": f"tenants/{inv['tenant']}/runs/{inv['run_id']}/leak/{inv['attempt']}/",
        }))
        return "leaked"

    @step
    def hold(value: str, gate: str) -> str:
        while not Path(gate).exists():
            time.sleep(0.1)
        return value

    @pipeline
    def leaky(to: str, gate: str):
        hold(leak(to), gate)
    """
)


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp(f"lifetime-{request.param}")
    env = {"ARGOSY_INSECURE_DEV": "true"}
    database = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database = cluster.clone(request.getfixturevalue("pg_template"))
        env["ARGOSY_DATABASE_URL"] = cluster.url(database)
    started = start_server(home, env)
    yield started
    started.stop(timeout=30)
    if database is not None:
        cluster.drop_database(database)


def _task_state(client: Client, run_id: str, node: str) -> str:
    return next(t.state for t in client.tasks(run_id) if t.node_path == node)


def _wait(predicate: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.1)


def test_a_leaked_task_token_dies_with_its_attempt(server: ServerProcess, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    module = folder / f"leaky_{uuid.uuid4().hex[:8]}.py"  # one module name per import
    module.write_text(LEAKY)
    compiled = compile_pipeline(load_pipeline(f"{module}:leaky"))
    leaked, gate = tmp_path / "leaked.json", tmp_path / "gate"
    with Client(server.url) as client:
        client.push_pipeline(compiled)
        run = client.create_run("leaky", parameters={"to": str(leaked), "gate": str(gate)})
        _wait(lambda: _task_state(client, run.id, "leak") == "succeeded", "leak succeeding")
        # the run goes on (the engine queues and starts the next task a moment after it
        # settles this one: on a busy machine that moment can outlast one look)
        _wait(lambda: _task_state(client, run.id, "hold") == "running", "hold running", 30)

        stolen = json.loads(leaked.read_text())
        auth = {"Authorization": f"Bearer {stolen['token']}"}
        result = stolen["base"] + stolen["prefix"] + "result.json"
        log = stolen["base"] + stolen["prefix"] + "log.jsonl"
        forged = json.dumps({"t": time.time(), "stream": "stdout", "line": "FORGED LINE"})

        # its attempt has settled while its run still runs: the token is void
        head = httpx.head(result, headers=auth, timeout=30)
        assert head.status_code == 401, head.text
        put = httpx.put(log, headers=auth, content=forged.encode(), timeout=30)
        assert put.status_code == 401 and "has ended" in put.json()["detail"], put.text

        gate.write_text("go")
        done = client.wait(run.id, poll=0.2, timeout=120)
        assert done.status == "succeeded", done.error
        # and after the run
        put = httpx.put(log, headers=auth, content=forged.encode(), timeout=30)
        assert put.status_code == 401, put.text
        assert httpx.get(result, headers=auth, timeout=30).status_code == 401
        logs = httpx.get(f"{server.api}/runs/{run.id}/logs", timeout=30)
        assert logs.status_code == 200 and "FORGED" not in logs.text
