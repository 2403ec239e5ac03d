"""The application layer's promise: one implementation, two homes.

The same pipeline (a fan-out, a condition and an exit handler) run locally and through a
live server gives the same run document field by field (ids, times, hosts and resource
figures aside), and both validate against the published JSON Schema; lineage, diff and
reproduce answer through the server for a member and 403 for others; a local retry reuses
succeeded tasks; a local file parameter runs on a server (uploaded, resumable, verified,
counted against the tenant's storage quota).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from argosy import api
from argosy.client.client import Client
from argosy.client.http import HttpBackend
from argosy.client.local import LocalBackend
from argosy.config import load_settings
from argosy.errors import QuotaExceededError, ServerError, UsageError
from tests.conftest import Workspace, tasks_by_node
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerEnv, ServerProcess, oidc_env, start_server
from tests.server_fixture import server_env as server_env  # the fixture

SWEEP = """
from pathlib import Path

from argosy import If, exit_handler, pipeline, step


@step
def configs(n: int) -> list:
    return [{"depth": d} for d in range(1, n + 1)]


@step
def train(config: dict, rows: Path) -> float:
    lines = rows.read_text().splitlines()
    print(f"training depth {config['depth']} on {len(lines)} rows")
    return round(len(lines) / (10 + config["depth"]), 4)


@step
def best(scores: list) -> float:
    return max(scores)


@step
def deploy(score: float) -> str:
    return f"deployed {score}"


@step
def report(status: dict) -> str:
    return status["status"]


@pipeline
def sweep(n: int = 3, rows: str = "rows.csv", threshold: float = 1.0):
    with exit_handler(report):
        scores = train.map(configs(n), over="config", rows=rows)
        top = best(scores)
        with If(top > threshold):
            deploy(top)
    return top
"""

MASKED_KEYS = {
    "id", "pipeline_version_id", "artifact_id", "created_at", "started_at", "finished_at",
    "queued_at", "host", "pid", "wall_time", "cpu_time", "peak_memory", "time", "created_by",
    "cached_from_task", "source",
}  # fmt: skip
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")


def normalized(doc: Any) -> Any:
    """The document with what differs between homes by nature masked: ids, times, hosts,
    process ids and measured resource use (run ids inside strings too)."""
    if isinstance(doc, dict):
        return {k: "<masked>" if k in MASKED_KEYS else normalized(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [normalized(v) for v in doc]
    if isinstance(doc, str):
        return ULID.sub("<ULID>", doc)
    return doc


def field_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Each path where two documents differ (so a failure names the field)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{path}.{key}: only in {'local' if key in a else 'server'}")
            else:
                found += field_differences(a[key], b[key], f"{path}.{key}")
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items locally, {len(b)} on the server"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in field_differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} locally, {b!r} on the server"]


@dataclass
class Project:
    """A workspace holding the sweep pipeline (its module named uniquely: tests compile it
    in this process too) and the CSV file it reads."""

    ws: Workspace
    target: str

    def argosy(self, *args: str, **kw: Any) -> Any:
        return self.ws.argosy(*args, **kw)

    @property
    def root(self) -> Path:
        return self.ws.root


_modules = itertools.count()


@pytest.fixture
def project(ws: Workspace) -> Project:
    name = f"sweep_{os.getpid()}_{next(_modules)}"
    ws.write(SWEEP, name=name)
    (ws.root / "rows.csv").write_text("".join(f"{i},{i * i}\n" for i in range(40)))
    return Project(ws, f"{name}.py:sweep")


def _compile(project: Project) -> Any:
    from argosy.spec.compile import compile_pipeline
    from argosy.spec.loader import load_pipeline

    return compile_pipeline(
        load_pipeline(str(project.root / project.target)), cache_dir=project.ws.home / "cache"
    )


def test_local_and_server_documents_are_the_same(
    project: Project, server_env: ServerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("ARGOSY_HOME", str(project.ws.home))
    compiled = _compile(project)
    parameters = {"n": 3, "rows": "rows.csv", "threshold": 1.0}

    local = LocalBackend(load_settings())
    run = local.submit(compiled, parameters)
    local.follow(run.id)
    here = local.run_detail(run.id).model_dump(mode="json")

    server = server_env.start()
    with Client(server.url) as client:
        remote = HttpBackend(client)
        created = remote.submit(compiled, parameters)  # rows.csv is uploaded for the run
        remote.follow(created.id)
        there = client.run_detail(created.id).model_dump(mode="json")

    assert here["status"] == there["status"] == "succeeded"
    nodes = [t["node_path"] for t in here["tasks"]]
    assert "train[2]" in nodes and "deploy" in nodes and "report" in nodes
    assert tasks_by_node(here)["report"]["outputs"]["output"]["value"] == "succeeded"
    assert field_differences(normalized(here), normalized(there)) == []
    schema = api.json_schema("run")
    jsonschema.validate(here, schema)
    jsonschema.validate(there, schema)


def test_cli_json_is_the_same_document_in_both_homes(
    project: Project, server_env: ServerEnv
) -> None:
    """``runs show --output json`` prints the service's document (local) and the API's
    (server) alike, and the CLI's run output is that document too."""
    server = server_env.start()
    local = project.argosy("run", project.target, "--output", "json", timeout=300)
    assert local.code == 0, local.stderr
    remote = project.argosy(
        "run", project.target, "--server", server.url, "--output", "json", timeout=300
    )
    assert remote.code == 0, remote.stderr
    shown = project.argosy(
        "runs", "show", remote.json()["id"], "--server", server.url, "-o", "json"
    )
    assert shown.code == 0 and shown.json() == remote.json()
    assert field_differences(normalized(local.json()), normalized(remote.json())) == []


def test_local_retry_reuses_succeeded_tasks(ws: Workspace) -> None:
    flag = ws.root / "ready"
    ws.write(
        f"READY = {str(flag)!r}\n"
        """
from pathlib import Path
from argosy import pipeline, step

@step
def prepare() -> int:
    return 21

@step
def finish(x: int) -> int:
    if not Path(READY).exists():
        raise RuntimeError("not ready yet")
    return 2 * x

@pipeline
def flaky():
    return finish(prepare())
""",
        name="flaky_pipe",
    )
    first = ws.argosy("run", "flaky_pipe.py:flaky", "-o", "json")
    assert first.code == 1 and first.json()["status"] == "failed"
    flag.write_text("yes")
    retry = ws.argosy("runs", "retry", first.json()["id"], "-o", "json")
    assert retry.code == 0, retry.stderr
    doc = retry.json()
    assert doc["retry_of"] == first.json()["id"] and doc["status"] == "succeeded"
    tasks = tasks_by_node(doc)
    assert tasks["prepare"]["state"] == "cached" and tasks["prepare"]["attempts"] == []
    assert f"retry of run {first.json()['id']}" in tasks["prepare"]["cache"]["reason"]
    assert tasks["finish"]["state"] == "succeeded" and len(tasks["finish"]["attempts"]) == 1
    assert doc["outputs"]["output"]["value"] == 42
    again = ws.argosy("runs", "retry", doc["id"])
    assert again.code == 2 and "only a failed or cancelled run" in again.stderr


# -- authorization through the server --------------------------------------------------------
@pytest.fixture(scope="module")
def secured(
    oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    started = start_server(tmp_path_factory.mktemp("layer-server"), oidc_env(oidc_issuer.issuer))
    admin = oidc_issuer.token(sub="layer-admin", groups=["platform-admins"])
    headers = {"Authorization": f"Bearer {admin}"}
    for tenant, member in (("lab-a", "alice"), ("lab-b", "bert")):
        httpx.post(f"{started.url}/api/v1/tenants", json={"name": tenant}, headers=headers,
                   timeout=30).raise_for_status()  # fmt: skip
        httpx.post(
            f"{started.url}/api/v1/tenants/{tenant}/members", headers=headers, timeout=30,
            json={"role": "editor", "subject_kind": "user", "subject": member},
        ).raise_for_status()  # fmt: skip
    yield started
    started.stop(timeout=20)


def test_lineage_diff_and_reproduce_through_the_server_for_members_only(
    project: Project,
    secured: ServerProcess,
    oidc_issuer: OidcIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(project.root)
    compiled = _compile(project)
    with Client(secured.url, token=oidc_issuer.token(sub="alice"), tenant="lab-a") as alice:
        member = HttpBackend(alice)
        first = member.submit(compiled, {"n": 2, "rows": "rows.csv", "threshold": 9.0})
        assert member.follow(first.id).status == "succeeded"
        second = member.reproduce_run(first.id)
        assert second.reproduce_of == first.id
        assert member.follow(second.id).status == "succeeded"
        diff = member.diff_runs(first.id, second.id)
        assert diff.parameters and all(row.same for row in diff.parameters)
        assert all(row.same for row in diff.outputs)  # same code, same inputs, same bytes
        assert all(
            t.cache.status == "off" for t in member.run_detail(second.id).tasks if t.attempts
        )
        lineage = member.lineage(f"{first.id}/best/output", "up")
        producer = lineage.artifact["produced_by"]
        assert producer["node_path"] == "best" and producer["run_id"] == first.id
        assert member.get_artifact(f"{first.id}/best").output_name == "output"

    with Client(secured.url, token=oidc_issuer.token(sub="bert"), tenant="lab-a") as bert:
        outsider = HttpBackend(bert)
        for attempt in (
            lambda: outsider.lineage(f"{first.id}/best/output", "up"),
            lambda: outsider.diff_runs(first.id, second.id),
            lambda: outsider.reproduce_run(first.id),
            lambda: outsider.run_detail(first.id),
        ):
            with pytest.raises(ServerError, match="403"):
                attempt()


# -- local files on a server -------------------------------------------------------------------
def test_a_local_csv_parameter_runs_on_the_server(project: Project, server_env: ServerEnv) -> None:
    server = server_env.start()
    res = project.argosy(
        "run", project.target, "--server", server.url, "-p", "rows=rows.csv", "-p", "n=2",
        "--output", "json", timeout=300,
    )  # fmt: skip
    assert res.code == 0, res.stderr
    doc = res.json()
    assert tasks_by_node(doc)["train[0]"]["outputs"]["output"]["value"] == round(40 / 11, 4)
    rows = tasks_by_node(doc)["train[0]"]["inputs"]["rows"]
    expected = hashlib.sha256((project.root / "rows.csv").read_bytes()).hexdigest()
    assert rows["artifact"]["sha256"] == expected and rows["source"] == "rows.csv"
    missing = project.argosy("run", project.target, "--server", server.url, "-p", "rows=nope.csv")
    assert missing.code == 2 and "'nope.csv', which does not exist" in missing.stderr


def test_an_interrupted_upload_resumes_and_a_corrupted_one_is_refused(
    server_env: ServerEnv, tmp_path: Path
) -> None:
    server = server_env.start()
    data = os.urandom(3 * 1024 * 1024 + 17)
    sha = hashlib.sha256(data).hexdigest()
    body = api.UploadCreate(sha256=sha, size=len(data), format="file", filename="big.bin")
    with Client(server.url) as client:
        upload = client.start_upload(body)
        half = len(data) // 2
        upload = client.put_upload_chunk(upload.id, 0, data[:half])
        assert upload.received == half and not upload.completed
    with Client(server.url) as later:  # a new process: ask where it stopped, go on from there
        found = later.get_upload(upload.id)
        assert found.received == half
        with pytest.raises(UsageError, match="offset"):
            later.put_upload_chunk(upload.id, 0, data[:10])
        later.put_upload_chunk(upload.id, found.received, data[half:])
        done = later.complete_upload(upload.id)
        assert done.completed and later.has_blob(sha)
        again = later.start_upload(body)  # the same bytes: nothing to send
        assert again.completed and again.received == len(data)

        lie = api.UploadCreate(sha256="0" * 64, size=4, format="file")
        bad = later.start_upload(lie)
        later.put_upload_chunk(bad.id, 0, b"abcd")
        with pytest.raises(UsageError, match="hash to"):
            later.complete_upload(bad.id)
        assert later.get_upload(bad.id).received == 0 and not later.has_blob("0" * 64)


def test_uploads_count_against_the_tenant_storage_quota(server_env: ServerEnv) -> None:
    server = server_env.start()
    with Client(server.url) as client:
        client.set_quotas("default", api.TenantQuotas.model_validate({"storage_bytes": 1000}))
        small = api.UploadCreate(sha256="1" * 64, size=600, format="file")
        client.start_upload(small)
        too_much = api.UploadCreate(sha256="2" * 64, size=600, format="file")
        with pytest.raises(QuotaExceededError, match="storage_bytes"):
            client.start_upload(too_much)
        response = httpx.post(
            f"{server.api}/uploads", json=json.loads(too_much.model_dump_json()), timeout=30
        )
        assert response.status_code == 413 and response.json()["code"] == "storage_quota_exceeded"


# -- the Python API in a real Jupyter kernel ---------------------------------------------------
def _execute_notebook(cwd: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    import nbformat
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel process inherits this environment
    nb = nbformat.read(Path(__file__).parent / "notebooks" / "python_api.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def test_a_notebook_runs_the_demo_locally_then_on_a_server(
    ws: Workspace, server_env: ServerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = str(Path(__file__).parent.parent / "examples")
    monkeypatch.delenv("ARGOSY_SERVER", raising=False)
    base = {"ARGOSY_EXAMPLES": examples, "ARGOSY_HOME": str(ws.home)}
    local = _execute_notebook(ws.root, base, monkeypatch)
    shown = local.cells[1].outputs[0]["data"]
    assert "text/html" in shown and "select_best" in shown["text/html"]
    assert "<script" not in shown["text/html"]
    assert "accuracy 0.9" in local.cells[2].outputs[0]["text"]

    server = server_env.start()
    remote = _execute_notebook(ws.root, {**base, "ARGOSY_SERVER": server.url}, monkeypatch)
    assert "succeeded" in remote.cells[1].outputs[0]["data"]["text/html"]
    with Client(server.url) as client:
        assert [r.pipeline for r in client.list_runs()] == ["breast_cancer"]


def test_run_html_escapes_what_users_named(ws: Workspace) -> None:
    """A task's reason is user text (an exception message): it is escaped in the HTML."""
    from argosy.client.runs import Run

    ws.write(
        """
from argosy import pipeline, step

@step
def boom() -> int:
    raise ValueError("<script>alert(1)</script>")

@pipeline
def html_pipe():
    return boom()
""",
        name="html_pipe_mod",
    )
    res = ws.argosy("run", "html_pipe_mod.py:html_pipe", "-o", "json")
    assert res.code == 1
    os.environ["ARGOSY_HOME"] = str(ws.home)
    try:
        page = Run(res.json()["id"], backend=LocalBackend(load_settings()))._repr_html_()
    finally:
        del os.environ["ARGOSY_HOME"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


# -- the published schemas -------------------------------------------------------------------
def test_published_schemas_change_only_by_adding_fields() -> None:
    """Each published document's schema keeps every committed property, with the same type,
    and requires nothing new (``argosy schema NAME`` prints the current one)."""
    committed = Path(api.__file__).parent / "schemas"
    assert sorted(p.stem for p in committed.glob("*.json")) == sorted(api.PUBLISHED)
    for name in api.PUBLISHED:
        old = json.loads((committed / f"{name}.json").read_text())
        new = api.json_schema(name)
        for where, old_model in [("", old), *old.get("$defs", {}).items()]:
            new_model = new if where == "" else new.get("$defs", {}).get(where)
            assert new_model is not None, f"{name}: model {where} was removed"
            for prop, spec in old_model.get("properties", {}).items():
                assert prop in new_model.get("properties", {}), f"{name}: {where}.{prop} removed"
                got = new_model["properties"][prop]
                assert got.get("type") == spec.get("type"), f"{name}: {where}.{prop} changed type"
            gained = set(new_model.get("required", [])) - set(old_model.get("required", []))
            assert not gained, f"{name}: {where} now requires {gained}"


def test_schema_command_prints_a_published_schema(ws: Workspace) -> None:
    res = ws.argosy("schema", "run")
    assert res.code == 0 and res.json()["title"] == "RunDetail"
    assert "schema_version" in res.json()["properties"]
    bad = ws.argosy("schema", "nope")
    assert bad.code == 2 and "choose one of: run, task" in bad.stderr
