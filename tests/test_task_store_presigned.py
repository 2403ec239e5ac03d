"""Presigned S3 URLs for task data (issue 15, data path), against moto's S3 server.

In process: the task-store routes over a real state folder and an S3 store — a granted blob
is read through a redirect to a presigned GET of exactly it; an upload gets a presigned PUT
of exactly its key (write-once, with the key's sha256 as the required checksum), and once
the task reports the object's ETag it is recorded as that attempt's upload (the
accepted-outputs rule); for an encrypted tenant reads still go direct (ciphertext, which the
task decrypts) and uploads go through the task store. End to end: a real server with
``ARGOSY_EXECUTOR=kubernetes`` on the FAKE API server (``tests/kubernetes_fake.py``), its
pods behind a FAKE Service that counts the bytes they exchange with the server: with
presigned URLs a 3 MB output never passes through the server.

moto does not check signatures nor the signed checksum (S3 does: a body with another sha256
is refused with BadDigest), so what these tests show is the server's side: which URL is
issued for which object, and what is recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from argosy.auth.task_credentials import TaskClaims, TaskGrants, TaskTokens
from argosy.auth.uploads import uploaded
from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.encryption import MAGIC, ObjectCipher, StaticDataKeys
from argosy.stores.keys import LocalKeyProvider, TenantKeys
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Attempt, Task
from tests import kubernetes_fake as fk
from tests.s3_fixture import TEST_REGION, S3Endpoint
from tests.server_fixture import new_kek, start_server
from tests.test_kubernetes_server import kubernetes_env, left, write_kubeconfig

with warnings.catch_warnings():  # Starlette asks for httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

API = "/api/v1/task-store/"
DIRECT = {"X-Argosy-Direct": "s3"}


def blob_key(tenant: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"tenants/{tenant}/blobs/sha256/{sha[:2]}/{sha}"


@pytest.fixture(scope="module")
def routes(
    tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Endpoint
) -> Iterator[SimpleNamespace]:
    """The task-store routes in process on an S3 store: one finished local run whose attempt
    is set back to ``running``; tenant ``default`` is plaintext, tenant ``sealed`` encrypted."""
    from argosy.server.problems import install
    from argosy.server.routes import task_store  # with task_direct's routes

    root = tmp_path_factory.mktemp("presigned")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "ps_pipe.py").write_text(
        "from argosy import pipeline, step\n\n@step\ndef train() -> int:\n    return 1\n\n"
        "@pipeline\ndef psp():\n    train()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(root / "state")
    done = subprocess.run([sys.executable, "-m", "argosy.cli.main", "run", "ps_pipe.py:psp"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    metadata = MetadataStore.open(f"sqlite:///{root / 'state' / 'argosy.db'}")
    with metadata.session() as s:
        attempt = s.scalars(select(Attempt)).one()
        task = s.get_one(Task, attempt.task_id)
        attempt.state = "running"
        ids = (attempt.id, attempt.run_id, task.node_path, attempt.number)
    saved = {k: os.environ.get(k) for k in s3_endpoint.env()}
    os.environ.update(s3_endpoint.env())
    bucket = s3_endpoint.create_bucket()
    keys = TenantKeys(metadata, LocalKeyProvider.from_settings(root / "state", None))
    stores: dict[str, Any] = {}

    def store(tenant: str) -> Any:
        if tenant not in stores:
            found = open_artifact_store(f"s3://{bucket}/argosy", tenant, s3_endpoint.options())
            stores[tenant] = found.with_cipher(keys.cipher(tenant)) if tenant == "sealed" else found
        return stores[tenant]

    settings = SimpleNamespace(home=root / "state", task_store_presign=True, presign_seconds=300)
    context = SimpleNamespace(task_tokens=TaskTokens(), task_grants=TaskGrants(), store=store,
                              metadata=metadata, settings=settings)  # fmt: skip
    app = FastAPI()
    app.state.context = context
    install(app)
    app.include_router(task_store.router)
    with TestClient(app) as client:
        yield SimpleNamespace(client=client, context=context, store=store, ids=ids,
                              s3=s3_endpoint, bucket=bucket)  # fmt: skip
    metadata.close()
    s3_endpoint.remove_bucket(bucket)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def token(routes: SimpleNamespace, tenant: str, inputs: dict[str, Any]) -> dict[str, str]:
    attempt_id, run_id, node, number = routes.ids
    claims = TaskClaims(attempt_id, tenant, run_id, node, number, expires=2_000_000_000.0)
    routes.context.task_grants.add(attempt_id, run_id, inputs, [])
    return {"Authorization": f"Bearer {routes.context.task_tokens.mint(claims)}"}


def test_a_granted_blob_is_read_through_a_presigned_url_for_exactly_it(
    routes: SimpleNamespace,
) -> None:
    store = routes.store("default")
    mine, theirs = b"my input " * 100, b"someone else's model"
    infos = {d: store.put_bytes(d) for d in (mine, theirs)}
    auth = token(routes, "default", {"x": {"artifact": {"sha256": infos[mine].sha256}}})
    key = blob_key("default", mine)

    answer = routes.client.get(API + key, headers={**auth, **DIRECT}, follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["cache-control"] == "no-store"
    url = urlsplit(answer.headers["location"])
    assert f"{url.scheme}://{url.netloc}" == routes.s3.url
    assert url.path == f"/{routes.bucket}/argosy/{key}"  # exactly this object
    assert "X-Amz-Signature=" in url.query and "X-Amz-Expires=300" in url.query
    assert httpx.get(answer.headers["location"]).content == mine  # no token needed, or sent

    # a blob it was not granted: refused before any URL is made
    other = routes.client.get(API + blob_key("default", theirs), headers={**auth, **DIRECT},
                              follow_redirects=False)  # fmt: skip
    assert other.status_code == 403 and "location" not in other.headers
    # without the header (an older task runtime) the bytes come through the server
    assert routes.client.get(API + key, headers=auth).content == mine
    # records are never redirected
    _, run_id, node, number = routes.ids
    record = f"tenants/default/runs/{run_id}/{node}/{number}/probe.json"
    assert routes.client.put(API + record, headers=auth, content=b"{}").status_code == 201
    assert routes.client.get(API + record, headers={**auth, **DIRECT}).content == b"{}"


def test_an_upload_is_a_write_once_presigned_put_recorded_as_the_attempts(
    routes: SimpleNamespace,
) -> None:
    auth = token(routes, "default", {})
    attempt_id = routes.ids[0]
    data = f"a model {uuid.uuid4()}".encode() * 1000
    sha = hashlib.sha256(data).hexdigest()
    key = blob_key("default", data)

    offer = routes.client.post("/api/v1/task-store-uploads", headers=auth, json={"key": key})
    assert offer.status_code == 201, offer.text
    doc = offer.json()
    url = urlsplit(doc["url"])
    assert url.path == f"/{routes.bucket}/argosy/{key}"
    signed = dict(p.split("=", 1) for p in url.query.split("&"))["X-Amz-SignedHeaders"]
    assert {"x-amz-checksum-sha256", "if-none-match"} <= set(signed.split("%3B"))
    assert doc["headers"]["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert doc["headers"]["If-None-Match"] == "*"

    with routes.context.metadata.session() as s:
        assert sha not in uploaded(s, attempt_id)  # a URL alone proves nothing
    put = httpx.put(doc["url"], content=data, headers=doc["headers"])
    assert put.status_code == 200
    wrong = routes.client.post("/api/v1/task-store-uploads/done", headers=auth,
                               json={"key": key, "etag": '"0123"'})  # fmt: skip
    assert wrong.status_code == 422 and wrong.json()["code"] == "upload_not_found"
    done = routes.client.post("/api/v1/task-store-uploads/done", headers=auth,
                              json={"key": key, "etag": put.headers["etag"]})  # fmt: skip
    assert done.status_code == 201, done.text
    with routes.context.metadata.session() as s:
        assert sha in uploaded(s, attempt_id)  # counts for the accepted-outputs rule
    assert routes.client.head(API + key, headers=auth).status_code == 200  # it may know it now
    assert routes.store("default").read_blob(sha) == data

    # the blob exists now: no second URL (it would overwrite); prove it through the store
    again = routes.client.post("/api/v1/task-store-uploads", headers=auth, json={"key": key})
    assert again.status_code == 409
    # a write-once URL: a second PUT of an existing key is refused by the object store
    assert httpx.put(doc["url"], content=data, headers=doc["headers"]).status_code == 412
    # only blob keys of its own tenant
    for bad in ("tenants/default/runs/x/y/1/result.json", blob_key("other", data)):
        refused = routes.client.post("/api/v1/task-store-uploads", headers=auth, json={"key": bad})
        assert refused.status_code in (403, 422), (bad, refused.text)


def test_an_encrypted_tenant_reads_ciphertext_directly_and_uploads_through_the_server(
    routes: SimpleNamespace,
) -> None:
    store = routes.store("sealed")
    secret = b"patient records " * 200
    info = store.put_bytes(secret)
    auth = token(routes, "sealed", {"x": {"artifact": {"sha256": info.sha256}}})
    key = blob_key("sealed", secret)
    answer = routes.client.get(API + key, headers={**auth, **DIRECT}, follow_redirects=False)
    assert answer.status_code == 307
    sealed = httpx.get(answer.headers["location"]).content
    assert sealed.startswith(MAGIC) and secret not in sealed  # at rest: ciphertext only
    task_keys = StaticDataKeys.from_document(store.cipher.task_document())  # its invocation's
    assert ObjectCipher(task_keys).decrypt_bytes(sealed, key) == secret
    fresh = blob_key("sealed", b"a new output")
    offer = routes.client.post("/api/v1/task-store-uploads", headers=auth, json={"key": fresh})
    assert offer.status_code == 204  # S3's checksum of ciphertext cannot prove the plaintext


# -- end to end: pods behind a Service, bytes straight to S3 -----------------------------------
BIG = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def produce(n: int) -> str:
        import random
        rng = random.Random(n)
        return "".join(rng.choice("abcdefghij") for _ in range(n))

    @step
    def consume(text: str) -> int:
        return len(text)

    @pipeline
    def big(n: int = 3_000_000) -> int:
        return consume(produce(n))
    """
)


@pytest.mark.parametrize("encryption", ["off", "on"])
def test_pods_move_their_bytes_to_and_from_s3_without_the_server(
    encryption: str, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    bucket = s3_endpoint.create_bucket()
    env = s3_endpoint.argosy_env(f"s3://{bucket}/argosy")
    env.update(ARGOSY_S3_REGION=TEST_REGION, ARGOSY_KEK=new_kek(),
               ARGOSY_ENCRYPTION="true" if encryption == "on" else "false")  # fmt: skip
    try:
        with fk.FakeKubernetes(behaviour=lambda pod: fk.Run()) as fake, fk.FakeService([]) as svc:
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
            env.update(kubernetes_env(kubeconfig, ARGOSY_KUBERNETES_TASK_STORE_URL=svc.url))
            server = start_server(tmp_path / "home", env)
            try:
                svc.backends = [server.url.removeprefix("http://")]
                with Client(server.url) as client:
                    module = tmp_path / f"big_{uuid.uuid4().hex[:8]}.py"
                    module.write_text(BIG)
                    client.push_pipeline(compile_pipeline(load_pipeline(f"{module}:big")))
                    run = client.create_run("big")
                    done = client.wait(run.id, poll=0.2, timeout=180)
                    values = {a.node_path: a.value for a in client.artifacts(run.id)
                              if a.node_path == "consume"}  # fmt: skip
            finally:
                server.stop(timeout=30)
            fake.wait_for(lambda: not left(fake), timeout=30)
        assert done.status == "succeeded", (done.error, server.log()[-3000:])
        assert values == {"consume": 3_000_000}
        # the 3 MB output: stored once in S3 (ciphertext when encrypted)
        sizes = [o["Size"] for o in s3_endpoint.client().list_objects_v2(
            Bucket=bucket, Prefix="argosy/tenants/default/blobs/").get("Contents", [])]  # fmt: skip
        assert any(size >= 3_000_000 for size in sizes), sizes
        print(json.dumps({"encryption": encryption, "pods_to_server": svc.bytes_in,
                          "server_to_pods": svc.bytes_out}))  # fmt: skip
        assert svc.bytes_out < 1_000_000  # reads (the output, the code package) came from S3
        if encryption == "off":
            assert svc.bytes_in < 1_000_000  # ... and the upload went there directly
        else:
            assert svc.bytes_in > 3_000_000  # uploads of encrypted tenants: through the server
    finally:
        s3_endpoint.remove_bucket(bucket)
