"""Triggers on two server instances sharing PostgreSQL and S3: a run-succeeded trigger, a
signed webhook trigger and a new-model-version trigger each start exactly one run per event,
although both instances look for events (and both receive the same webhook delivery)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from argosy.api import ModelVersionCreate, TriggerCreate
from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.webhooks import sign
from tests.conftest import Workspace
from tests.server_fixture import ServerEnv, start_server
from tests.server_fixture import server_env as server_env  # the fixture

pytestmark = pytest.mark.postgresql

PIPES = """
from argosy import pipeline, step

@step
def make(x: int = 7) -> int:
    return x

@pipeline
def upstream(x: int = 7) -> int:
    return make(x=x)

@step
def use(n: int = 0, who: str = "", version: int = 0) -> int:
    return n * 2

@pipeline
def downstream(n: int = 0, who: str = "", version: int = 0) -> int:
    return use(n=n, who=who, version=version)
"""


def _push(client: Client, folder: Path, module: str, *names: str) -> None:
    """Push ``names`` from PIPES, written as ``module`` (one module name per import)."""
    (folder / f"{module}.py").write_text(PIPES)
    for name in names:
        client.push_pipeline(compile_pipeline(load_pipeline(f"{folder / module}.py:{name}")))


def _until(what: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_each_event_starts_exactly_one_run_on_two_instances(
    server_env: ServerEnv, tmp_path: Path, ws: Workspace
) -> None:
    a = server_env.start(ARGOSY_SCHEDULER_INTERVAL="0.3")
    b = server_env.start(ARGOSY_SCHEDULER_INTERVAL="0.3")
    client = Client(a.url, tenant="default")
    _push(client, tmp_path, "trigger_pipes", "upstream", "downstream")

    # run succeeded -> downstream with the upstream's output (created through the CLI)
    made = ws.argosy("triggers", "create", "after-upstream", "--on", "run-succeeded:upstream",
                     "--pipeline", "downstream", "--bind", "n=outputs.output", "--server", a.url)  # fmt: skip
    assert made.code == 0, made.stderr
    first = [client.create_run("upstream", parameters={"x": x}).id for x in (7, 8)]
    for run_id in first:
        assert client.wait(run_id, poll=0.2, timeout=120).status == "succeeded"
    fires = _until(lambda: [f for f in client.trigger_fires("after-upstream") if f.run_id]
                   if len(client.trigger_fires("after-upstream")) >= 2 else None)  # fmt: skip
    time.sleep(2.0)  # both instances keep looking: nothing more may fire
    fires = client.trigger_fires("after-upstream")
    assert sorted(f.event for f in fires) == sorted(f"run:{r}" for r in first)
    assert all(f.outcome == "created" for f in fires)
    started = [client.wait(f.run_id, poll=0.2, timeout=120) for f in fires if f.run_id]
    assert sorted(r.parameters["n"] for r in started) == [7, 8]
    assert all(r.status == "succeeded" and r.tags == {"trigger": "after-upstream"}
               and r.trigger == "after-upstream" for r in started)  # fmt: skip

    # a signed webhook: the same delivery sent to both instances at once starts one run
    httpx.put(f"{a.api}/secrets/HOOK_SECRET", json={"value": "hook-secret-123"}, timeout=30)
    hook = client.create_trigger(
        TriggerCreate(name="on-hook", kind="webhook", source={"secret": "HOOK_SECRET"},
                      pipeline="downstream", parameters={"n": 1}, bindings={"who": "body.who"})
    )  # fmt: skip
    assert hook.webhook_path == "/api/v1/tenants/default/triggers/on-hook/webhook"
    body = json.dumps({"who": "ci"}).encode()
    headers = sign("hook-secret-123", body, "delivery-1")
    answers: list[httpx.Response] = []

    def deliver(server_url: str) -> None:
        answers.append(httpx.post(server_url + hook.webhook_path, content=body, headers=headers,
                                  timeout=30))  # fmt: skip

    threads = [threading.Thread(target=deliver, args=(s.url,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
    assert len({r.json()["run_id"] for r in answers}) == 1
    assert [r.json()["replayed"] for r in sorted(answers, key=lambda r: r.status_code)] == [
        True, False
    ]  # fmt: skip
    hook_run = client.wait(answers[0].json()["run_id"], poll=0.2, timeout=120)
    assert hook_run.parameters == {"n": 1, "who": "ci", "version": 0}
    again = httpx.post(b.url + hook.webhook_path, content=body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["run_id"] == hook_run.id  # a replay
    other = sign("hook-secret-123", body, "delivery-2")
    assert httpx.post(a.url + hook.webhook_path, content=body, headers=other,
                      timeout=30).status_code == 201  # fmt: skip
    refused = {
        "wrong secret": sign("not-the-secret", body, "delivery-3"),
        "stale": sign("hook-secret-123", body, "delivery-4", now=time.time() - 3600),
        "unsigned": {"Content-Type": "application/json"},
    }
    for why, bad in refused.items():
        r = httpx.post(a.url + hook.webhook_path, content=body, headers=bad, timeout=30)
        assert r.status_code == 401 and r.json()["detail"], why
    assert len(client.trigger_fires("on-hook")) == 2

    # a new version of a registered model -> one run, with the version number
    client.create_trigger(
        TriggerCreate(name="on-model", kind="model_version", source={"model": "m"},
                      pipeline="downstream", bindings={"version": "version"})
    )  # fmt: skip
    client.register_model("m", ModelVersionCreate(artifact=f"{first[0]}/make"))
    client.register_model("m", ModelVersionCreate(artifact=f"{first[1]}/make"))
    _until(lambda: len(client.trigger_fires("on-model")) >= 2)
    time.sleep(2.0)
    model_fires = client.trigger_fires("on-model")
    assert len(model_fires) == 2
    versions = sorted(
        client.get_run(f.run_id).parameters["version"] for f in model_fires if f.run_id
    )
    assert versions == [1, 2]

    # every run a trigger started, and nothing else, carries its tag
    triggered = list(client.list_runs(pipeline="downstream"))
    assert len(triggered) == 2 + 2 + 2
    assert {r.tags["trigger"] for r in triggered} == {"after-upstream", "on-hook", "on-model"}
    shown = ws.argosy("triggers", "show", "on-hook", "--output", "json", "--server", b.url)
    assert shown.code == 0 and len(shown.json()["fires"]) == 2


def test_trigger_mistakes_are_refused(tmp_path: Path) -> None:
    a = start_server(tmp_path / "server")  # SQLite, a folder store
    client = Client(a.url, tenant="default")
    _push(client, tmp_path, "trigger_pipes_2", "downstream")
    cases = {
        "run_succeeded:downstream->downstream": (
            {"kind": "run_succeeded", "source": {"pipeline": "downstream"}}, "forever"
        ),
        "a webhook without a secret": ({"kind": "webhook", "source": {"model": "x"}}, "secret"),
        "artifact:downstream/use/output->downstream": (
            {"kind": "artifact", "source": {"artifact": "downstream/use/output"}}, "forever"
        ),
        "an artifact name without its node": (
            {"kind": "artifact", "source": {"artifact": "downstream/output"}},
            "PIPELINE/NODE/OUTPUT",
        ),
        "a binding the event lacks": (
            {"kind": "webhook", "source": {"secret": "S"}, "bindings": {"n": "outputs.x"}},
            "offers body.",
        ),
    }  # fmt: skip
    for why, (fields, says) in cases.items():
        r = httpx.post(f"{a.api}/triggers", timeout=30,
                       json={"name": "t", "pipeline": "downstream", **fields})  # fmt: skip
        assert r.status_code == 422 and says in r.json()["detail"], why
    a.stop(timeout=20)


def test_a_named_artifact_trigger_fires_on_new_content_and_pauses(
    tmp_path: Path, ws: Workspace
) -> None:
    """``--on artifact:upstream/make/output`` starts one run per new content of that artifact:
    the same bytes again (a cached re-run) start nothing. A paused trigger refuses webhook
    deliveries (409) and acts on no event; once resumed, an artifact made while it was paused
    never fires it, the next new one does. Pause and resume go through the CLI."""
    a = start_server(tmp_path / "server", {"ARGOSY_SCHEDULER_INTERVAL": "0.2"})
    try:
        client = Client(a.url, tenant="default")
        _push(client, tmp_path, "trigger_pipes_3", "upstream", "downstream")
        made = ws.argosy("triggers", "create", "on-data", "--on", "artifact:upstream/make/output",
                         "--pipeline", "downstream", "--bind", "n=value", "--server", a.url)  # fmt: skip
        assert made.code == 0, made.stderr
        httpx.put(f"{a.api}/secrets/HOOK_SECRET", json={"value": "s3cret-hook"}, timeout=30)
        client.create_trigger(
            TriggerCreate(name="hook", kind="webhook", source={"secret": "HOOK_SECRET"},
                          pipeline="downstream")
        )  # fmt: skip

        def upstream(x: int) -> str:
            run_id = client.create_run("upstream", parameters={"x": x}).id
            assert client.wait(run_id, poll=0.1, timeout=120).status == "succeeded"
            return run_id

        def fired_for() -> list[int]:
            runs = [client.get_run(f.run_id) for f in client.trigger_fires("on-data") if f.run_id]
            return sorted(r.parameters["n"] for r in runs)

        upstream(7)
        _until(lambda: fired_for() == [7])
        upstream(7)  # the same content (a cache hit): no new version
        upstream(8)
        _until(lambda: fired_for() == [7, 8])

        for name in ("on-data", "hook"):
            paused = ws.argosy("triggers", "pause", name, "--server", a.url)
            assert paused.code == 0 and f"trigger {name} paused" in paused.stderr, paused.stderr
        assert client.get_trigger("on-data").paused
        body = b'{"n": 1}'
        hook_path = client.get_trigger("hook").webhook_path or ""
        r = httpx.post(a.url + hook_path, content=body,
                       headers=sign("s3cret-hook", body, "d-1"), timeout=30)  # fmt: skip
        assert r.status_code == 409 and r.json()["code"] == "trigger_paused", r.text
        upstream(9)  # made while paused: never fires, not even after the resume
        resumed = ws.argosy("triggers", "resume", "on-data", "--server", a.url)
        assert resumed.code == 0, resumed.stderr
        after = client.get_trigger("on-data")
        assert not after.paused and after.resumed_at is not None
        upstream(10)
        _until(lambda: 10 in fired_for())
        assert fired_for() == [7, 8, 10]
        events = {f.event for f in client.trigger_fires("on-data")}
        assert all(e.startswith("artifact:") for e in events) and len(events) == 3
    finally:
        a.stop(timeout=20)
