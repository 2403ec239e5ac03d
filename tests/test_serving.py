"""The prediction service (``argosy models serve``), as a real process: the demo's best model,
registered and promoted, predicts the held-out patients exactly as the pipeline's model does;
a malformed request is a 422 naming the field; moving the alias swaps the served version while
requests keep coming, none failing; bearer tokens (a local token, and the server's own tokens
with the viewer role on the model's tenant); Prometheus metrics."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Workspace
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import oidc_env, start_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LISTENING = re.compile(r"argosy models serve: \S+ version (\d+) on (http://\S+)")
FEATURES: list[str] = []  # read from the demo module


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve(ws: Workspace, ref: str, *args: str, env: dict[str, str] | None = None) -> Service:
    """``argosy models serve REF --port 0 ARGS`` in ``ws``; waits until it listens."""
    log = ws.root / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "argosy.cli.main", "models", "serve", ref, "--port", "0", *args],
            cwd=ws.root, env=ws.env(**(env or {})), stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return Service(found.group(2), process, log)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the service did not start:\n{log.read_text()}")
        time.sleep(0.05)


@dataclass
class Demo:
    ws: Workspace
    run_id: str
    test: Any  # the held-out rows (preprocess/test), a DataFrame
    model: Any  # the pipeline's best model, loaded from its artifact
    accuracy: float  # what the pipeline measured for it


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo run once, its best model registered as breast-cancer@production (version 1)."""
    root = tmp_path_factory.mktemp("serving")
    ws = Workspace(root / "project", root / "state")
    ws.root.mkdir()
    shutil.copy(EXAMPLES / "demo.py", ws.root / "demo.py")
    res = ws.argosy("run", "demo.py:breast_cancer", "-q", "--output", "json", timeout=300)
    assert res.code == 0, res.stderr
    doc = res.json()
    run_id = doc["id"]
    reg = ws.argosy("models", "register", "breast-cancer", f"{run_id}/select_best/model",
                    "--target", "malignant", "--exclude", "patient_id")  # fmt: skip
    assert reg.code == 0, reg.stderr
    promoted = ws.argosy("models", "promote", "breast-cancer", "1", "--alias", "production")
    assert promoted.code == 0, promoted.stderr
    sys.path.insert(0, str(EXAMPLES))
    old = os.environ.get("ARGOSY_HOME")
    os.environ["ARGOSY_HOME"] = str(ws.home)
    try:
        import demo as demo_module

        import argosy

        FEATURES[:] = demo_module.FEATURES
        backend = argosy.connect()
        run = argosy.Run(run_id)
        test = run["preprocess"].outputs["test"].load()
        model = run.outputs["model"].load()
        backend.close()
    finally:
        sys.path.remove(str(EXAMPLES))
        if old is None:
            os.environ.pop("ARGOSY_HOME", None)
        else:
            os.environ["ARGOSY_HOME"] = old
    yield Demo(ws, run_id, test, model, doc["outputs"]["metrics"]["value"]["accuracy"])


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]  # fmt: skip


def test_the_demo_model_served_predicts_as_in_the_pipeline(demo: Demo) -> None:
    service = serve(demo.ws, "breast-cancer@production", "--insecure")
    try:
        health = httpx.get(f"{service.url}/health", timeout=10).json()
        assert (health["status"], health["version"]) == ("ok", 1)
        # whole rows (patient_id and the label too: fields the schema does not name are ignored)
        answer = httpx.post(
            f"{service.url}/predict", json={"records": _records(demo.test)}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert (got["model"], got["version"]) == ("breast-cancer", 1)
        expected = demo.model.predict(demo.test[FEATURES]).tolist()
        assert got["predictions"] == expected
        correct = sum(
            p == y for p, y in zip(got["predictions"], demo.test["malignant"], strict=True)
        )
        assert round(correct / len(expected), 6) == demo.accuracy  # what evaluate measured
        # the same rows as columns
        columns = {c: demo.test[c].tolist() for c in FEATURES}
        by_columns = httpx.post(f"{service.url}/predict", json={"columns": columns}, timeout=60)
        assert by_columns.json()["predictions"] == expected

        meta = httpx.get(f"{service.url}/metadata", timeout=10).json()
        assert meta["artifact"] == f"{demo.run_id}/select_best/model"
        assert meta["training_data"] == f"{demo.run_id}/preprocess/train"
        assert meta["columns"] == FEATURES and meta["metrics"]["accuracy"] == demo.accuracy
        assert meta["lineage"]["command"] == f"argosy lineage {demo.run_id}/select_best/model"

        # malformed requests: 422 naming the field (and the row)
        row = _records(demo.test.head(2))
        row[1]["mean radius"] = "large"
        bad = httpx.post(f"{service.url}/predict", json={"records": row}, timeout=10)
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["field"] == "mean radius"
        assert "row 1, field 'mean radius': expected a number (float64)" in bad.json()["detail"]
        del row[1]["mean radius"]
        row[0]["worst area"] = None
        bad = httpx.post(f"{service.url}/predict", json={"records": row}, timeout=10)
        fields = {(e["row"], e["field"]) for e in bad.json()["errors"]}
        assert bad.status_code == 422 and fields == {(1, "mean radius"), (0, "worst area")}
        for body in (b"not json", b'{"rows": []}', b'{"records": []}'):
            refused = httpx.post(f"{service.url}/predict", content=body, timeout=10)
            assert refused.status_code == 422 and refused.json()["field"] in ("body", "records")

        metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
        assert (
            'argosy_predict_requests_total{model="breast-cancer",version="1",status="200"} 2'
            in (metrics)
        )
        assert 'status="422"} 5' in metrics and 'argosy_model_version{model="breast-cancer"} 1' in (
            metrics
        )
        assert (
            f'argosy_predict_rows_total{{model="breast-cancer",version="1"}} {2 * len(expected)}'
            in (metrics)
        )
        assert 'argosy_predict_latency_seconds_count{model="breast-cancer"} 7' in metrics
    finally:
        service.stop()


def test_moving_the_alias_swaps_the_version_without_a_failed_request(demo: Demo) -> None:
    # version 2: the other model the demo trained (same training data, so the same schema)
    other = "train_boosting" if "Logistic" in type(demo.model).__name__ else "train_logistic"
    reg = demo.ws.argosy("models", "register", "breast-cancer", f"{demo.run_id}/{other}/output",
                         "--target", "malignant", "--exclude", "patient_id", "--output", "json")  # fmt: skip
    assert reg.code == 0, reg.stderr
    v2 = reg.json()["version"]["version"]
    service = serve(demo.ws, "breast-cancer@production", "--insecure", "--poll", "0.2")
    statuses: Counter[int] = Counter()
    versions: list[int] = []
    stop = threading.Event()
    rows = {"records": _records(demo.test.head(20))}

    def hammer() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{service.url}/predict", json=rows)
                except httpx.HTTPError:
                    statuses[-1] += 1
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    versions.append(r.json()["version"])

    clients = [threading.Thread(target=hammer) for _ in range(3)]
    try:
        for c in clients:
            c.start()
        time.sleep(1.0)
        moved = demo.ws.argosy("models", "promote", "breast-cancer", str(v2), "--alias",
                               "production", "-m", "swap test")  # fmt: skip
        assert moved.code == 0, moved.stderr
        deadline = time.monotonic() + 30
        while httpx.get(f"{service.url}/health", timeout=10).json()["version"] != v2:
            assert time.monotonic() < deadline, service.log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)
        metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
        assert 'argosy_model_swaps_total{model="breast-cancer"} 1' in metrics
    finally:
        stop.set()
        for c in clients:
            c.join(30)
        service.stop()
        back = demo.ws.argosy("models", "promote", "breast-cancer", "1", "--alias", "production")
        assert back.code == 0
    assert set(statuses) == {200}, statuses  # not one refused, failed or dropped request
    assert statuses[200] > 20
    first_new = versions.index(v2)
    assert set(versions[:first_new]) == {1} and v2 in versions[first_new:]


def test_a_local_service_needs_its_token(demo: Demo) -> None:
    no_token = demo.ws.argosy("models", "serve", "breast-cancer@production", "--port", "0")
    assert no_token.code == 2 and "ARGOSY_SERVING_TOKEN" in no_token.stderr
    token = "local-serving-token-0123456789"
    service = serve(demo.ws, "breast-cancer@production", env={"ARGOSY_SERVING_TOKEN": token})
    rows = {"records": _records(demo.test.head(3))}
    try:
        anon = httpx.post(f"{service.url}/predict", json=rows, timeout=10)
        assert anon.status_code == 401 and anon.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.post(f"{service.url}/predict", json=rows, timeout=10,
                           headers={"Authorization": "Bearer not-the-token-at-all"})  # fmt: skip
        assert wrong.status_code == 403
        assert httpx.get(f"{service.url}/metadata", timeout=10).status_code == 401
        right = httpx.post(f"{service.url}/predict", json=rows, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert right.status_code == 200 and len(right.json()["predictions"]) == 3
        assert httpx.get(f"{service.url}/health", timeout=10).status_code == 200  # open
    finally:
        service.stop()


TINY = """
import pandas as pd
from typing import Annotated
from argosy import pipeline, serializer, step

@step
def fit() -> Annotated[object, serializer("joblib")]:
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression().fit(pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]}), [0, 0, 1, 1])

@pipeline
def tiny_fit():
    fit()
"""


def test_on_a_server_the_servers_tokens_with_the_viewer_role_may_predict(
    oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    from argosy.api import ModelVersionCreate
    from argosy.client.client import Client
    from argosy.spec.compile import compile_pipeline
    from argosy.spec.loader import load_pipeline

    server = start_server(tmp_path / "server", oidc_env(oidc_issuer.issuer))
    try:
        root = oidc_issuer.token(sub="root", groups=["platform-admins"])
        admin = Client(server.url, token=root, tenant="team")
        for tenant in ("team", "other"):
            admin.create_tenant(tenant)
        (tmp_path / "tiny.py").write_text(TINY)
        admin.push_pipeline(compile_pipeline(load_pipeline(f"{tmp_path / 'tiny.py'}:tiny_fit")))
        run = admin.wait(admin.create_run("tiny_fit").id, poll=0.2, timeout=120)
        assert run.status == "succeeded", run.error
        admin.register_model("tiny", ModelVersionCreate(artifact=f"{run.id}/fit"))
        admin.promote_model("tiny", "production", 1)
        viewer = admin.create_token("serve-viewer", "viewer", 1)
        caller = admin.create_token("caller", "viewer", 1)
        other = Client(server.url, token=root, tenant="other")
        stranger = other.create_token("stranger", "owner", 1)

        ws = Workspace(tmp_path / "project", tmp_path / "state")
        ws.root.mkdir()
        env = {"ARGOSY_SERVER": server.url, "ARGOSY_TOKEN": viewer.token, "ARGOSY_TENANT": "team"}
        service = serve(ws, "tiny@production", "--token-cache", "0", env=env)
        body = {"records": [{"a": 0.5}, {"a": 2.5}]}

        def call(token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.post(f"{service.url}/predict", json=body, headers=headers,
                              timeout=10).status_code  # fmt: skip

        try:
            assert call(None) == 401
            assert call(stranger.token) == 403  # an owner, of another tenant
            assert call("argosy_not-a-real-token") == 403
            assert call(caller.token) == 200
            assert call(root) == 200
            admin.revoke_token(caller.id)
            assert call(caller.token) == 403  # revoked: refused at once (--token-cache 0)
            meta = httpx.get(f"{service.url}/metadata", timeout=10,
                             headers={"Authorization": f"Bearer {viewer.token}"}).json()  # fmt: skip
            assert meta["lineage"]["api"].startswith(f"{server.url}/api/v1/tenants/team/artifacts/")
        finally:
            service.stop()
    finally:
        server.stop(timeout=20)


def test_the_serving_deployment_files_are_valid() -> None:
    import kubernetes_validate
    import yaml

    root = Path(__file__).resolve().parent.parent / "deploy"
    docs = list(yaml.safe_load_all((root / "serving" / "deployment.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    text = (root / "docker" / "serving.Dockerfile").read_text()
    assert re.search(r"^ARG BASE=\S+@sha256:[0-9a-f]{64}$", text, flags=re.M)
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    assert '"models", "serve"' in text


def test_promote_and_notify_sends_a_signed_webhook(demo: Demo) -> None:
    """The pipeline-step helper promotes, then POSTs the model's URI and metadata, signed."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from argosy.client.local import LocalBackend
    from argosy.config import load_settings
    from argosy.serving.notify import promote_and_notify
    from argosy.webhooks import SignatureError, verify

    received: list[tuple[bytes, dict[str, str]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    backend = LocalBackend(load_settings(home=demo.ws.home))
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        event = promote_and_notify("breast-cancer", 1, "canary", reason="notify test",
                                   webhook=url, secret="s3cret-shared", backend=backend)  # fmt: skip
        assert (event.version, event.reason) == (1, "notify test")
        ((body, headers),) = received
        assert verify("s3cret-shared", body, headers)  # the delivery id
        doc = json.loads(body)
        assert (doc["model"], doc["alias"], doc["version"], doc["uri"]) == (
            "breast-cancer", "canary", 1, "argosy://breast-cancer/1"
        )  # fmt: skip
        assert doc["sha256"] and doc["input_schema"]["columns"][0]["name"] == FEATURES[0]
        with pytest.raises(SignatureError):
            verify("another-secret", body, headers)
        with pytest.raises(SignatureError):
            verify("s3cret-shared", body + b" ", headers)
        with pytest.raises(SignatureError, match="timestamp"):
            verify("s3cret-shared", body, headers, now=time.time() + 3600)
        assert backend.get_model("breast-cancer").aliases["canary"] == 1
        backend.demote_model("breast-cancer", "canary", "cleanup")
    finally:
        hook.shutdown()
        backend.close()
