"""A Python step in an image of its own (``@step(image=...)``) through a real ``argosy
server`` whose tasks are pods on the FAKE API server (``tests/kubernetes_fake.py``): the pod's
init container copies the Argosy runtime into an emptyDir, and the step's image (here a Python
of the runtime's version *without* Argosy or httpx installed) runs the launcher from that copy.
So the copy's task-store client (httpx), its entry points (``argosy-task+http://``), the task
token and encryption at rest (the tenant's data keys in the invocation) all work from it."""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
import time
from pathlib import Path

from argosy.client.client import Client
from tests import kubernetes_fake as fk
from tests.server_fixture import ServerProcess
from tests.test_kubernetes_server import created, left, push
from tests.test_kubernetes_server import fake as fake  # the fixtures: the fake cluster and
from tests.test_kubernetes_server import server as server  # a server whose tasks are pods on it

STEP_IMAGE = "registry.example.com/ml/plain@sha256:" + "a1" * 32

PIPELINE = textwrap.dedent(
    f"""
    import sys
    from argosy import pipeline, step

    @step(image={STEP_IMAGE!r})
    def where(xs: list[int]) -> dict:
        import argosy, httpx
        print("in the image", flush=True)
        return {{"python": sys.executable, "argosy": argosy.__file__, "httpx": httpx.__file__,
                 "total": sum(xs)}}

    @step
    def make(n: int) -> list[int]:
        return list(range(n))

    @pipeline
    def imaged(n: int = 5) -> dict:
        return where(xs=make(n=n))
    """
)


def test_a_step_in_its_own_image_runs_through_the_server_from_the_copied_runtime(
    fake: fk.FakeKubernetes, server: ServerProcess, tmp_path: Path
) -> None:
    plain = fk.plain_python()
    no_httpx = subprocess.run([plain, "-c", "import httpx"], capture_output=True, timeout=60)
    assert no_httpx.returncode != 0  # the image's Python really lacks what the copy brings
    fake.images[STEP_IMAGE] = plain
    with Client(server.url) as client:
        push(client, tmp_path, PIPELINE, "imaged")
        started = time.monotonic()
        run = client.create_run("imaged", parameters={"n": 5})
        done = client.wait(run.id, poll=0.2, timeout=120)
        took = time.monotonic() - started
        assert done.status == "succeeded", (done.error, server.log()[-3000:])
        values = {a.node_path: a.value for a in client.artifacts(run.id)}
        log = client.logs(run.id, node="where").model_dump_json()
    info = values["where"]
    assert isinstance(info, dict) and info["total"] == 10
    assert info["python"] == plain
    assert "fake-kubelet-runtime-" in info["argosy"] and "fake-kubelet-runtime-" in info["httpx"]
    assert "in the image" in log
    pods = {p["metadata"]["labels"]["argosy.dev/task"]: p for p in created(fake, "pods")}
    assert pods["where"]["spec"]["containers"][0]["image"] == STEP_IMAGE
    assert [c["name"] for c in pods["where"]["spec"]["initContainers"]] == ["argosy-runtime"]
    assert "initContainers" not in pods["make"]["spec"]
    secrets = {s["metadata"]["labels"]["argosy.dev/task"]: s for s in created(fake, "secrets")}
    invocation = json.loads(base64.b64decode(secrets["where"]["data"]["invocation.json"]))
    assert invocation["encryption"]  # the launcher in the image decrypted its input
    assert invocation["step"]["implementation"]["image"] is None  # it runs the step itself
    fake.wait_for(lambda: not left(fake), timeout=30)
    print(f"image-step run through the server: {took:.2f} s")
