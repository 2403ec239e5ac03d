"""Least-privilege task credentials: what a task process on a server can and cannot reach."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from argosy.auth.task_credentials import TaskClaims, TaskTokenError, TaskTokens
from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import start_server


def claims(expires_in: float = 60.0) -> TaskClaims:
    return TaskClaims("01ATTEMPT", "team-a", "01RUN", "train", 1, time.time() + expires_in)


def test_a_task_token_is_bound_to_its_attempt_and_refused_when_forged_or_expired() -> None:
    tokens = TaskTokens()
    mine = claims()
    token = tokens.mint(mine)
    assert tokens.verify(token) == mine
    assert mine.record_prefix == "tenants/team-a/runs/01RUN/train/1/"
    head, body, mac = token.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    with pytest.raises(TaskTokenError, match="not issued by this server"):
        tokens.verify(f"{head}.{forged_body}.{mac}")
    with pytest.raises(TaskTokenError, match="not issued by this server"):
        TaskTokens().verify(token)  # another instance's key
    with pytest.raises(TaskTokenError, match="expired"):
        tokens.verify(tokens.mint(claims(expires_in=-1)))
    with pytest.raises(TaskTokenError, match="malformed"):
        tokens.verify("Bearer nonsense")


PROBE = textwrap.dedent(
    """
    import json, os
    from pathlib import Path
    import httpx
    from argosy import pipeline, step

    @step
    def make() -> str:
        return "payload"

    @step
    def probe(value: str) -> dict:
        inv = json.loads(Path("../invocation.json").read_text())
        store = inv["store"]
        base = store["url"].removeprefix("argosy-task+") + "/api/v1/task-store/"
        auth = {"Authorization": "Bearer " + store["options"]["token"]}
        other = "0" * 64
        def status(method, key):
            return httpx.request(method, base + key, headers=auth).status_code
        mine = inv["tenant"]
        return {
            "value": value,
            "aws_env": sorted(k for k in os.environ if k.startswith("AWS_")),
            "db_env": "ARGOSY_DATABASE_URL" in os.environ,
            "store_scheme": store["url"].split("://")[0],
            "other_tenant_blob": status("GET", f"tenants/team-b/blobs/sha256/00/{other}"),
            "own_tenant_foreign_blob": status("GET", f"tenants/{mine}/blobs/sha256/00/{other}"),
            "other_run_record": status("GET", f"tenants/{mine}/runs/01OTHERRUN/x/1/result.json"),
            "write_other_attempt": status("PUT", f"tenants/{mine}/runs/{inv['run_id']}/make/1/result.json"),
            "traversal": status("GET", f"tenants/{mine}/runs/{inv['run_id']}/probe/1/../../make/1/result.json"),
            "no_token": httpx.get(base + f"tenants/{mine}/blobs/sha256/00/{other}").status_code,
        }

    @pipeline
    def probing():
        probe(make())
    """
)


def test_a_server_task_reaches_only_its_own_inputs_and_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "credentials_probe.py").write_text(PROBE)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'credentials_probe.py'}:probing"))
    server = start_server(
        tmp_path / "server",
        {"ARGOSY_INSECURE_DEV": "true", "AWS_ACCESS_KEY_ID": "platform-key",
         "AWS_SECRET_ACCESS_KEY": "platform-secret"},
    )  # fmt: skip
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("probing").id, poll=0.2, timeout=120)
            assert run.status == "succeeded", run.error
            seen = {a.node_path: a.value for a in client.artifacts(run.id)}["probe"]
    finally:
        server.stop()
    assert seen["value"] == "payload"  # its declared input came through the task store
    assert seen["store_scheme"] == "argosy-task+http"
    assert seen["aws_env"] == [] and seen["db_env"] is False  # no platform credentials
    assert seen["other_tenant_blob"] == 403
    assert seen["own_tenant_foreign_blob"] == 403  # not one of its inputs
    assert seen["other_run_record"] == 403
    assert seen["write_other_attempt"] == 403
    assert seen["traversal"] == 403
    assert seen["no_token"] == 401
