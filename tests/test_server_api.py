"""The REST API, tested against a real ``argosy server`` process on PostgreSQL and S3 (moto).

Most tests share one API-only instance (``--no-coordinator``: runs stay ``pending``, so run
states are what the test makes them). Runs with outputs and logs are made directly in the
database and the store (``_finished_run``) to exercise the artifact and log routes without
executing anything; ``test_a_run_executes_end_to_end`` runs a real pipeline on an instance
with its coordinator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select, text, update

from argosy.api import API_PREFIX, Problem
from argosy.ids import new_id
from argosy.ops.schedules import next_fire_after
from argosy.server.context import ServerContext
from argosy.spec.compile import CompiledPipeline, compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.states import RunStatus
from argosy.stores.artifacts.blobs import ArtifactStore, open_artifact_store
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Artifact, Attempt, PipelineVersion, Run, Task
from tests.pg_fixture import PostgresCluster
from tests.s3_fixture import S3Endpoint
from tests.server_fixture import ServerEnv, ServerProcess, open_server_env
from tests.server_fixture import server_env as server_env  # the fixture, for other tests

PIPELINE_SOURCE = """
from argosy import pipeline, step


@step
def make(n: int) -> list:
    print("making", n)
    return list(range(n))


@step
def total(xs: list) -> int:
    print("total of", len(xs))
    return sum(xs)


@pipeline
def tiny(n: int = 3):
    return total(xs=make(n=n))
"""


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def senv(
    pg_cluster: PostgresCluster,
    pg_template: str,
    s3_endpoint: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerEnv]:
    root = tmp_path_factory.mktemp("servers")
    with open_server_env(pg_cluster, pg_template, s3_endpoint, root) as env:
        yield env


@pytest.fixture(scope="module")
def server(senv: ServerEnv, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    started = senv.start("--no-coordinator")
    yield started
    if request.session.testsfailed:
        print(f"--- server log ({started.stderr_path}) ---\n{started.log()[-8000:]}")


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def db(senv: ServerEnv) -> Iterator[MetadataStore]:
    store = MetadataStore.open(senv.database_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def blob_store(senv: ServerEnv) -> Iterator[ArtifactStore]:
    """The default tenant's store, as the server sees it (test AWS credentials set here)."""
    saved = dict(os.environ)
    os.environ.update(senv.s3.env())
    try:
        yield open_artifact_store(senv.artifact_url, "default", senv.s3.options())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledPipeline:
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    module = root / f"tiny_{uuid.uuid4().hex[:8]}.py"
    module.write_text(PIPELINE_SOURCE)
    return compile_pipeline(load_pipeline(f"{module}:tiny"), cache_dir=root / ".cache")


def upload_blobs(http: httpx.Client, compiled: CompiledPipeline) -> None:
    for ref, data in compiled.blobs.items():
        response = http.put(f"/blobs/{ref.removeprefix('sha256:')}", content=data)
        assert response.status_code in (200, 201), response.text


def spec_doc(compiled: CompiledPipeline, name: str | None = None, n: int = 3) -> dict[str, Any]:
    """The compiled spec, renamed and with another default (another digest) if asked."""
    doc = compiled.spec.model_dump(mode="json")
    if name is not None:
        doc["name"] = name
    doc["parameters"]["n"]["default"] = n
    return doc


def push(
    http: httpx.Client, doc: dict[str, Any], version: str | None = None, url: str | None = None
) -> httpx.Response:
    return http.post(
        url or f"/pipelines/{doc['name']}/versions", json={"spec": doc, "version": version}
    )


@pytest.fixture(scope="module")
def pushed(http: httpx.Client, compiled: CompiledPipeline) -> dict[str, Any]:
    upload_blobs(http, compiled)
    response = push(http, spec_doc(compiled), "v1")
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def problem(response: httpx.Response, status: int, code: str | None = None) -> Problem:
    """The response's problem document, checked for status, media type and code."""
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("application/problem+json")
    found = Problem.model_validate(response.json())
    assert found.status == status
    assert found.detail
    if code is not None:
        assert found.code == code, found
    return found


def create_run(http: httpx.Client, pipeline: str = "tiny", **body: Any) -> dict[str, Any]:
    response = http.post("/runs", json={"pipeline": pipeline, **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# -- health ---------------------------------------------------------------------------------------
def test_health_and_readiness(server: ServerProcess) -> None:
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["instance"] == server.instance
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "artifacts": "ok"}


def test_openapi_documents_problems_and_docs_are_served(server: ServerProcess) -> None:
    schema = httpx.get(f"{server.url}{API_PREFIX}/openapi.json").json()
    assert "/healthz" in schema["paths"] and "/readyz" in schema["paths"]
    op = schema["paths"]["/api/v1/tenants/{tenant}/runs"]["post"]
    assert "application/problem+json" in op["responses"]["422"]["content"]
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert httpx.get(f"{server.url}{API_PREFIX}/docs").status_code == 200


def test_every_api_route_declares_its_action() -> None:
    from argosy.config import Settings
    from argosy.server.app import create_app
    from argosy.server.identity import route_actions

    settings = Settings(insecure_dev=True)
    app = create_app(cast(ServerContext, SimpleNamespace(coordinator=None, settings=settings)))
    routes = [r for r in route_actions(app) if r.path.startswith(API_PREFIX)]
    assert len(routes) >= 20
    missing = [f"{r.method} {r.path}" for r in routes if r.action is None]
    assert not missing, f"routes without a declared action (identity.authorized): {missing}"


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_fields_and_bad_tenants_are_422_problems(http: httpx.Client) -> None:
    found = problem(http.post("/runs", json={"pipeline": "tiny", "paramters": {}}), 422)
    assert "paramters" in found.detail and "unknown field" in found.detail
    found = problem(httpx.get(str(http.base_url).replace("/default", "/Not_A_Label") + "runs"), 422)
    assert "tenant" in found.detail
    problem(http.get("/runs", params={"limit": 0}), 422, "validation_error")
    problem(http.get("/runs", params={"cursor": "not-a-cursor"}), 422, "invalid_cursor")
    problem(http.get("/no/such/route"), 404)


# -- blobs and pipeline versions --------------------------------------------------------------------
def test_blob_upload_is_verified_and_idempotent(http: httpx.Client) -> None:
    data = os.urandom(6 * 1024 * 1024 + 3)  # several chunks, an S3 multipart upload
    digest = hashlib.sha256(data).hexdigest()
    assert http.head(f"/blobs/{digest}").status_code == 404
    created = http.put(f"/blobs/{digest}", content=data)
    assert created.status_code == 201, created.text
    assert created.json() == {"sha256": digest, "size": len(data)}
    assert http.put(f"/blobs/{digest}", content=data).status_code == 200
    assert http.head(f"/blobs/{digest}").status_code == 200
    other = hashlib.sha256(b"other").hexdigest()
    problem(http.put(f"/blobs/{other}", content=data), 422, "blob_hash_mismatch")
    assert http.head(f"/blobs/{other}").status_code == 404
    problem(http.put("/blobs/NOTAHASH", content=data), 422)


def test_push_needs_the_blobs_and_is_content_addressed(
    http: httpx.Client, compiled: CompiledPipeline, pushed: dict[str, Any]
) -> None:
    # a spec whose code package was never uploaded
    code = next(iter(compiled.spec.code)).removeprefix("sha256:")
    unknown = hashlib.sha256(b"never uploaded").hexdigest()
    doc = json.loads(json.dumps(spec_doc(compiled, "needs-blobs")).replace(code, unknown))
    found = problem(push(http, doc), 422, "missing_blobs")
    assert unknown[:12] in found.detail and "PUT" in found.detail
    assert found.model_extra is not None
    assert found.model_extra["missing_blobs"] == ["sha256:" + unknown]

    # tag semantics
    a, b = spec_doc(compiled, "tagged", 3), spec_doc(compiled, "tagged", 4)
    first = push(http, a, "v1")
    assert first.status_code == 201, first.text
    assert first.json()["created"] and first.json()["tag_added"]
    again = push(http, a, "v1")  # same content, same name: a no-op
    assert again.status_code == 200
    assert not again.json()["created"] and not again.json()["tag_added"]
    assert again.json()["version"]["id"] == first.json()["version"]["id"]
    renamed = push(http, a, "stable")  # same content, a new name: the tag is added
    assert renamed.status_code == 200
    assert renamed.json()["tag_added"] and not renamed.json()["created"]
    assert renamed.json()["version"]["tags"] == ["v1", "stable"]
    conflict = problem(push(http, b, "v1"), 409, "version_tag_conflict")
    assert "v1" in conflict.detail and "new version name" in conflict.detail
    second = push(http, b)  # different content, no name: a new version
    assert second.status_code == 201 and second.json()["version"]["tags"] == []

    problem(push(http, a, url="/pipelines/other/versions"), 422, "pipeline_name_mismatch")
    problem(push(http, {"name": "tagged", "steps": 3}), 422, "invalid_spec")

    by_tag = http.get("/pipelines/tagged/versions/stable").json()
    assert by_tag["digest"] == first.json()["version"]["digest"]
    assert by_tag["spec"]["name"] == "tagged"
    by_digest = http.get(f"/pipelines/tagged/versions/{by_tag['digest'][:19]}")
    assert by_digest.json()["id"] == by_tag["id"]
    problem(http.get("/pipelines/tagged/versions/nope"), 404, "not_found")
    versions = http.get("/pipelines/tagged/versions", params={"limit": 1}).json()
    assert [v["id"] for v in versions["items"]] == [second.json()["version"]["id"]]
    rest = http.get("/pipelines/tagged/versions", params={"cursor": versions["next_cursor"]})
    assert [v["id"] for v in rest.json()["items"]] == [first.json()["version"]["id"]]
    assert rest.json()["next_cursor"] is None

    pipeline = http.get("/pipelines/tagged").json()
    assert pipeline["latest_version"]["id"] == second.json()["version"]["id"]
    names = [p["name"] for p in http.get("/pipelines").json()["items"]]
    assert {"tiny", "tagged"} <= set(names)
    problem(http.get("/pipelines/nothing-here"), 404, "not_found")


# -- runs -----------------------------------------------------------------------------------------
def test_runs_create_and_parameters(http: httpx.Client, pushed: dict[str, Any]) -> None:
    run = create_run(http, parameters={"n": 5})
    assert run["status"] == "pending" and run["pipeline"] == "tiny"
    assert run["parameters"] == {"n": 5}
    assert run["digest"] == pushed["version"]["digest"]
    assert http.get(f"/runs/{run['id']}").json()["id"] == run["id"]
    assert http.get(f"/runs/{run['id'][:20].lower()}").json()["id"] == run["id"]
    tasks = http.get(f"/runs/{run['id']}/tasks").json()
    assert sorted(t["node_path"] for t in tasks) == ["make", "total"]
    assert all(t["state"] == "pending" and t["attempts"] == [] for t in tasks)
    found = problem(http.post("/runs", json={"pipeline": "tiny", "parameters": {"m": 1}}), 422)
    assert found.code == "invalid_parameters" and "m" in found.detail
    problem(http.post("/runs", json={"pipeline": "ghost"}), 404, "not_found")
    problem(http.post("/runs", json={"pipeline": "tiny", "version": "v9"}), 404, "not_found")
    problem(http.get("/runs/ZZZZZZZZ"), 404, "not_found")


def test_runs_list_filters_and_cursor_pages(
    http: httpx.Client, compiled: CompiledPipeline, pushed: dict[str, Any]
) -> None:
    assert push(http, spec_doc(compiled, "listed")).status_code in (200, 201)
    mine = [create_run(http, "listed")["id"] for _ in range(12)]
    create_run(http)  # another pipeline's run
    cancelled = mine[3]
    assert http.post(f"/runs/{cancelled}/cancel").json()["status"] == "cancelled"

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"pipeline": "listed", "limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/runs", params=params).json()
        assert len(page["items"]) <= 5
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(mine, reverse=True)  # newest first, each once

    pending = http.get("/runs", params={"pipeline": "listed", "status": "pending"}).json()
    assert [r["id"] for r in pending["items"]] == [r for r in seen if r != cancelled]
    only = http.get("/runs", params={"pipeline": "listed", "status": "cancelled"}).json()
    assert [r["id"] for r in only["items"]] == [cancelled]
    assert http.get("/runs", params={"pipeline": "no-such"}).json()["items"] == []
    everything = http.get("/runs", params={"limit": 200}).json()["items"]
    assert {r["pipeline"] for r in everything} >= {"listed", "tiny"}


def test_idempotency_key_makes_one_run_under_concurrency(
    server: ServerProcess, pushed: dict[str, Any]
) -> None:
    key = str(uuid.uuid4())
    body = {"pipeline": "tiny", "parameters": {"n": 7}}
    barrier = threading.Barrier(10)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=server.api, timeout=60) as client:
            barrier.wait()
            response = client.post("/runs", json=body, headers={"Idempotency-Key": key})
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(responses) == 10
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert all(
        r.headers.get("Idempotent-Replayed") == "true" for r in responses if r.status_code == 200
    )
    run_id = responses[0].json()["id"]
    with httpx.Client(base_url=server.api, timeout=30) as client:
        same = client.post("/runs", json=body, headers={"Idempotency-Key": key})
        assert same.status_code == 200 and same.json()["id"] == run_id
        found = problem(
            client.post(
                "/runs", json={**body, "parameters": {"n": 8}}, headers={"Idempotency-Key": key}
            ),
            422,
            "idempotency_key_reused",
        )
        assert run_id in found.detail
        n7 = [
            r
            for r in client.get("/runs", params={"limit": 200}).json()["items"]
            if r["parameters"] == {"n": 7}
        ]
        assert [r["id"] for r in n7] == [run_id]


def test_cancel_and_retry(http: httpx.Client, db: MetadataStore, pushed: dict[str, Any]) -> None:
    run = create_run(http)
    cancelled = http.post(f"/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_requested"]
    tasks = http.get(f"/runs/{run['id']}/tasks").json()
    assert {t["state"] for t in tasks} == {"cancelled"}
    assert http.post(f"/runs/{run['id']}/cancel").status_code == 200  # asked twice: same answer

    retried = http.post(f"/runs/{run['id']}/retry")
    assert retried.status_code == 201, retried.text
    assert retried.json()["retry_of"] == run["id"] and retried.json()["status"] == "pending"
    problem(http.post(f"/runs/{retried.json()['id']}/retry"), 409, "run_not_retryable")

    done = create_run(http)
    with db.session() as s:
        s.execute(update(Run).where(Run.id == done["id"]).values(status=RunStatus.SUCCEEDED))
    problem(http.post(f"/runs/{done['id']}/cancel"), 409, "run_finished")

    claimed = create_run(http)  # claimed by an instance: only the request is recorded
    with db.session() as s:
        s.execute(update(Run).where(Run.id == claimed["id"]).values(owner=new_id()))
    asked = http.post(f"/runs/{claimed['id']}/cancel").json()
    assert asked["status"] == "pending" and asked["cancel_requested"]


# -- artifacts and logs ---------------------------------------------------------------------------
def _finished_run(
    http: httpx.Client, db: MetadataStore, store: ArtifactStore, payload: bytes
) -> tuple[str, str, list[dict[str, str]]]:
    """A run made to look finished: an attempt of ``make`` with a stored log, and an artifact
    whose blob is ``payload`` (written straight to the database and the store, as the engine
    would). Returns (run id, artifact id, log entries)."""
    run = create_run(http)
    info = store.put_bytes(payload)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    entries = [
        {"t": (start + timedelta(seconds=i)).isoformat(), "s": "stdout", "m": f"line {i}"}
        for i in range(7)
    ]
    log_key = f"runs/{run['id']}/make/1/log.jsonl"
    store.backend.put_bytes(
        store.record_key(log_key), "".join(json.dumps(e) + "\n" for e in entries).encode()
    )
    now = datetime.now(UTC)
    with db.session() as s:
        task = s.scalars(
            select(Task).where(Task.run_id == run["id"], Task.node_path == "make")
        ).one()
        attempt = Attempt(
            id=new_id(), tenant="default", run_id=run["id"], task_id=task.id, number=1,
            state="succeeded", cause="first", resources={}, log_key=log_key, started_at=now,
            finished_at=now, created_at=now, created_by="test",
        )  # fmt: skip
        s.add(attempt)
        s.flush()
        art = Artifact(
            id=new_id(), tenant="default", run_id=run["id"], task_id=task.id,
            attempt_id=attempt.id, node_path="make", output_name="output", type="bytes",
            format="bytes", sha256=info.sha256, size=info.size, created_at=now, created_by="test",
        )  # fmt: skip
        s.add(art)
        s.execute(
            update(Run)
            .where(Run.id == run["id"])
            .values(status=RunStatus.SUCCEEDED, finished_at=now)
        )
    return run["id"], art.id, entries


def test_artifact_download_whole_and_ranged(
    http: httpx.Client, db: MetadataStore, blob_store: ArtifactStore, pushed: dict[str, Any]
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    run_id, art_id, _ = _finished_run(http, db, blob_store, payload)
    listed = http.get(f"/runs/{run_id}/artifacts").json()
    assert [a["id"] for a in listed] == [art_id]
    art = http.get(f"/artifacts/{art_id}").json()
    assert art["size"] == len(payload) and art["sha256"] == hashlib.sha256(payload).hexdigest()

    whole = http.get(f"/artifacts/{art_id}/content")
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == art["sha256"]
    assert whole.headers["content-length"] == str(len(payload))
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{art["sha256"]}"'
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert whole.headers["content-disposition"].startswith("attachment; filename=")

    first, last = 1_000_000, 2_500_000
    part = http.get(f"/artifacts/{art_id}/content", headers={"Range": f"bytes={first}-{last}"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes {first}-{last}/{len(payload)}"
    assert (
        hashlib.sha256(part.content).digest() == hashlib.sha256(payload[first : last + 1]).digest()
    )
    tail = http.get(f"/artifacts/{art_id}/content", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == payload[-100:]
    rest = http.get(f"/artifacts/{art_id}/content", headers={"Range": f"bytes={len(payload) - 5}-"})
    assert rest.status_code == 206 and rest.content == payload[-5:]
    beyond = http.get(f"/artifacts/{art_id}/content", headers={"Range": f"bytes={len(payload)}-"})
    problem(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{len(payload)}"
    problem(http.get("/artifacts/01ZZZZZZZZZZZZZZZZZZZZZZZZ/content"), 404)


def test_logs_pages_and_stream(
    http: httpx.Client, db: MetadataStore, blob_store: ArtifactStore, pushed: dict[str, Any]
) -> None:
    run_id, _, _ = _finished_run(http, db, blob_store, b"log test")
    page = http.get(f"/runs/{run_id}/logs", params={"limit": 4}).json()
    assert [x["line"] for x in page["items"]] == ["line 0", "line 1", "line 2", "line 3"]
    assert page["items"][0]["node_path"] == "make" and page["items"][0]["attempt"] == 1
    assert not page["finished"]
    rest = http.get(f"/runs/{run_id}/logs", params={"cursor": page["cursor"]}).json()
    assert [x["line"] for x in rest["items"]] == ["line 4", "line 5", "line 6"]
    assert rest["finished"]
    after = http.get(f"/runs/{run_id}/logs", params={"cursor": rest["cursor"]}).json()
    assert after["items"] == [] and after["finished"]
    assert http.get(f"/runs/{run_id}/logs", params={"node": "total"}).json()["items"] == []
    problem(http.get(f"/runs/{run_id}/logs", params={"node": "nope"}), 404)
    problem(http.get(f"/runs/{run_id}/logs", params={"cursor": "!!"}), 422, "invalid_cursor")

    events = []
    with http.stream(
        "GET", f"/runs/{run_id}/logs/stream", headers={"Last-Event-ID": page["cursor"]}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for raw in response.iter_lines():
            if raw == "":
                if event:
                    events.append(event)
                event = {}
                continue
            if raw.startswith(":"):
                continue
            field, _, value = raw.partition(":")
            event[field] = value.strip()
    lines = [json.loads(e["data"]) for e in events if e.get("event") == "line"]
    assert [x["line"] for x in lines] == ["line 4", "line 5", "line 6"]  # resumed after page 1
    assert events[-1]["event"] == "end"
    assert json.loads(base64.urlsafe_b64decode(events[-1]["id"] + "==")) == json.loads(
        base64.urlsafe_b64decode(rest["cursor"] + "==")
    )


# -- schedules ------------------------------------------------------------------------------------
def test_schedules(http: httpx.Client, pushed: dict[str, Any]) -> None:
    body = {"name": "nightly", "pipeline": "tiny", "cron": "0 3 * * *", "timezone": "Europe/Paris"}
    before = datetime.now(UTC)
    created = http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    doc = created.json()
    next_fire = datetime.fromisoformat(doc["next_fire_at"])
    assert next_fire == next_fire_after("0 3 * * *", "Europe/Paris", before)
    assert next_fire.astimezone(next_fire.tzinfo).hour in (1, 2)  # 03:00 Paris in UTC
    problem(http.post("/schedules", json=body), 409, "schedule_exists")
    found = problem(http.post("/schedules", json={**body, "name": "x", "cron": "61 * * * *"}), 422)
    assert "cron" in found.detail
    found = problem(
        http.post("/schedules", json={**body, "name": "x", "timezone": "Mars/Base"}), 422
    )
    assert "time zone" in found.detail
    problem(http.post("/schedules", json={**body, "name": "x", "cron": "0 0 31 2 *"}), 422)
    problem(http.post("/schedules", json={**body, "name": "x", "pipeline": "ghost"}), 404)

    assert [s["name"] for s in http.get("/schedules").json()["items"]] == ["nightly"]
    assert http.get("/schedules/nightly").json()["cron"] == "0 3 * * *"
    assert http.post("/schedules/nightly/pause").json()["paused"] is True
    resumed = http.post("/schedules/nightly/resume").json()
    assert resumed["paused"] is False and resumed["next_fire_at"] == doc["next_fire_at"]
    assert http.get("/schedules/nightly/fires").json() == {"items": [], "next_cursor": None}
    assert http.delete("/schedules/nightly").status_code == 204
    problem(http.get("/schedules/nightly"), 404, "not_found")
    problem(http.delete("/schedules/nightly"), 404)


# -- the database going away ----------------------------------------------------------------------
@pytest.mark.slow
def test_database_outage_is_503_and_the_server_survives(
    server: ServerProcess, http: httpx.Client, pg_cluster: PostgresCluster, pushed: dict[str, Any]
) -> None:
    pg_cluster.stop("fast")
    try:
        found = problem(http.get("/runs"), 503, "unavailable")
        assert "retry" in found.detail
        assert int(http.get("/runs").headers["retry-after"]) > 0
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert ready.json()["checks"]["database"].startswith("unavailable")
    finally:
        pg_cluster.start()
    assert server.alive()
    deadline = time.monotonic() + 30
    while http.get("/runs").status_code != 200:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.2)
    assert httpx.get(f"{server.url}/readyz").status_code == 200


# -- a real run -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_executes_end_to_end(senv: ServerEnv, compiled: CompiledPipeline) -> None:
    """Push, run on an instance with its coordinator, follow the logs, download the output."""
    worker = senv.start()
    with httpx.Client(base_url=worker.api, timeout=30) as client:
        upload_blobs(client, compiled)
        assert push(client, spec_doc(compiled, "e2e"), "v1").status_code in (200, 201)
        run = client.post("/runs", json={"pipeline": "e2e", "parameters": {"n": 4}}).json()
        deadline = time.monotonic() + 90
        while (doc := client.get(f"/runs/{run['id']}").json())["status"] in ("pending", "running"):
            assert time.monotonic() < deadline, worker.log()[-4000:]
            time.sleep(0.3)
        assert doc["status"] == "succeeded", (doc, worker.log()[-4000:])
        logs = client.get(f"/runs/{run['id']}/logs").json()
        assert "making 4" in [x["line"] for x in logs["items"]] and logs["finished"]
        arts = {a["node_path"]: a for a in client.get(f"/runs/{run['id']}/artifacts").json()}
        assert arts["total"]["value"] == 6  # small JSON is shown, from the blob if encrypted
        content = client.get(f"/artifacts/{arts['total']['id']}/content")
        assert hashlib.sha256(content.content).hexdigest() == arts["total"]["sha256"]
        assert json.loads(content.content) == 6


# -- fuzzing the published schema -----------------------------------------------------------------
@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_or_schema_violations(
    server: ServerProcess, pushed: dict[str, Any]
) -> None:
    """Every operation (except the endless log stream) with generated requests: no 5xx, and
    every response matches its documented schema."""
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{server.url}{API_PREFIX}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance]
    failures: list[str] = []
    calls: list[str] = []

    def fuzz(operation: Any) -> None:
        @hypothesis.settings(
            max_examples=15, deadline=None, database=None, derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            calls.append(operation.path)
            case.call_and_validate(base_url=server.url, checks=checks)

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])

    operations = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"invalid operation in the schema: {result.err()}")
            continue
        operation = result.ok()
        if operation.path.endswith("/logs/stream"):
            continue  # streams until the run ends: not a request/response operation
        operations += 1
        fuzz(operation)
    assert not failures, "\n\n".join(failures) + "\n\nserver log:\n" + server.log()[-3000:]
    assert operations >= 20
    assert len(calls) >= 5 * operations, f"only {len(calls)} requests"
    print(f"schemathesis: {len(calls)} requests over {operations} operations")


@pytest.mark.slow
def test_run_list_pages_are_right_over_100000_runs(
    http: httpx.Client, db: MetadataStore, pushed: dict[str, Any]
) -> None:
    """Keyset pages over 100,000 runs: first page, a deep page and filtered pages answer the
    right rows. (How fast they are is a benchmark: benchmarks/api.py, "run list pages".)"""
    version = http.get("/pipelines/tiny/versions/v1").json()
    with db.session() as s:
        pipeline_id = s.get_one(PipelineVersion, version["id"]).pipeline_id
        s.execute(
            text(
                "INSERT INTO runs (id, tenant, created_at, created_by, pipeline_id, "
                "pipeline_version_id, status, parameters, options, cancel_requested) "
                "SELECT '00' || lpad(i::text, 24, '0'), 'default', now(), 'bulk', :p, :v, "
                "CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, '{}', '{}', false "
                "FROM generate_series(1, 100000) AS i"
            ),
            {"p": pipeline_id, "v": version["id"]},
        )
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE runs"))
        conn.commit()
    try:
        deep = base64.urlsafe_b64encode(("00" + "50000".zfill(24)).encode()).decode().rstrip("=")
        queries: list[dict[str, str | int]] = [
            {},
            {"cursor": deep},
            {"pipeline": "tiny", "status": "failed"},
            {"pipeline": "tiny", "status": "failed", "cursor": deep},
            {"status": "failed"},
            {"pipeline": "tiny", "limit": 200},
        ]
        for params in queries:
            response = http.get("/runs", params=params)
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            assert items, params
            ids = [r["id"] for r in items]
            assert ids == sorted(ids, reverse=True), params  # newest first, no repeats
            assert len(set(ids)) == len(ids)
            if "cursor" in params:
                assert ids[0] < "00" + "50000".zfill(24), params  # strictly after the cursor
            if params.get("status") == "failed":
                assert {r["status"] for r in items} == {"failed"}, params
        page = http.get("/runs", params={"cursor": deep, "limit": 3}).json()
        assert [r["id"] for r in page["items"]] == [
            "00" + str(n).zfill(24) for n in (49999, 49998, 49997)
        ]
    finally:
        with db.session() as s:
            s.execute(text("DELETE FROM runs WHERE created_by = 'bulk'"))
