"""A task's outputs are accepted only if it holds them (issue 13, defect 4), through a live
server on SQLite and PostgreSQL with encryption at rest: a step that names, in its result
record, a blob of its tenant it never wrote fails, and its downstream task is never granted
that blob; a step whose output already exists in the store still uploads it (proving it holds
the bytes) and succeeds, as does a step that hands on its own input."""

from __future__ import annotations

import hashlib
import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.security_fixture import BACKENDS
from tests.server_fixture import ServerProcess, start_server

FORGING = textwrap.dedent(
    """
    import json, os
    from pathlib import Path
    import httpx
    from argosy import pipeline, step
    from argosy.runtime.invocation import OutputRecord, ResultRecord

    @step
    def forge(sha: str, size: int) -> str:
        inv = json.loads(Path("../invocation.json").read_text())
        store = inv["store"]
        base = store["url"].removeprefix("argosy-task+") + "/api/v1/task-store/"
        auth = {"Authorization": "Bearer " + store["options"]["token"]}
        output = OutputRecord(sha256=sha, size=size, type="str", format="json")
        record = ResultRecord(attempt_id=inv["attempt_id"], attempt=inv["attempt"],
                              status="succeeded", outputs={"output": output})
        key = f"tenants/{inv['tenant']}/{inv['result_key']}"
        httpx.put(base + key, headers=auth, content=json.dumps(record.to_json())).raise_for_status()
        os._exit(0)  # before the launcher writes the true record

    @step
    def steal(value: str) -> str:
        return value

    @pipeline
    def forging(sha: str, size: int):
        steal(forge(sha, size))
    """
)

HONEST = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def same_a() -> str:
        return "the same bytes"

    @step
    def same_b() -> str:
        return "the same bytes"

    @step
    def pass_on(value: str) -> str:
        return value

    @pipeline
    def honest():
        pass_on(same_a())
        same_b()
    """
)


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp(f"outputs-{request.param}")
    env = {"ARGOSY_INSECURE_DEV": "true"}  # encryption at rest is on (server default)
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


def _push(client: Client, folder: Path, source: str, name: str) -> None:
    module = folder / f"{name}_{uuid.uuid4().hex[:8]}.py"  # one module name per import
    module.write_text(source)
    client.push_pipeline(compile_pipeline(load_pipeline(f"{module}:{name}")))


def test_a_task_cannot_hand_on_a_blob_it_never_wrote(server: ServerProcess, tmp_path: Path) -> None:
    secret = json.dumps("the team's private model weights").encode()
    sha = hashlib.sha256(secret).hexdigest()
    with Client(server.url) as client:
        client.upload_blob(secret, sha)  # a blob of the tenant no step of the run wrote
        _push(client, tmp_path, FORGING, "forging")
        run = client.create_run("forging", parameters={"sha": sha, "size": len(secret)})
        done = client.wait(run.id, poll=0.2, timeout=120)
        tasks = {t.node_path: t for t in client.tasks(run.id)}
        stolen = [a for a in client.artifacts(run.id) if a.node_path == "steal"]
    assert done.status == "failed", done
    assert tasks["forge"].state == "failed"
    assert "neither uploaded nor was given as an input" in (tasks["forge"].reason or "")
    assert tasks["steal"].state == "skipped"  # never started: never granted the blob
    assert stolen == []


def test_honest_outputs_are_accepted_even_when_already_stored(
    server: ServerProcess, tmp_path: Path
) -> None:
    with Client(server.url) as client:
        _push(client, tmp_path, HONEST, "honest")
        for _ in range(2):  # the second run's outputs all exist already
            run = client.create_run("honest", no_cache=True)
            done = client.wait(run.id, poll=0.2, timeout=120)
            assert done.status == "succeeded", done.error
            values = {a.node_path: a.value for a in client.artifacts(run.id)}
            assert values == dict.fromkeys(("same_a", "same_b", "pass_on"), "the same bytes")
