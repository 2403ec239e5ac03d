"""The server path end to end: a real ``argosy server`` process with
``ARGOSY_EXECUTOR=kubernetes``, its kubeconfig pointing at the hand-written FAKE API server of
``tests/kubernetes_fake.py`` (run in this test process). The server's coordinator makes each
attempt a Job and a Secret in the tenant's namespace; the fake's kubelet runs the pod's
command as a local process, with only the container's environment (no store credentials);
the pod reaches its code, inputs and outputs through the server's task store with its task
token. The run must succeed with the right outputs, the Jobs must carry the tenant, pipeline,
run, step, task and attempt labels, and no Job, pod or Secret may be left afterwards."""

from __future__ import annotations

import base64
import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests import kubernetes_fake as fk
from tests.server_fixture import ServerEnv, ServerProcess, new_kek, start_server
from tests.server_fixture import server_env as server_env  # the fixture

IMAGE = "registry.example.com/argosy-runtime@sha256:" + "ef" * 32
NS = "argosy-default"  # ARGOSY_KUBERNETES_NAMESPACE's default for the tenant "default"

PIPELINE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def make(n: int) -> list[int]:
        print(f"making {n}")
        return list(range(n))

    @step
    def total(xs: list[int]) -> int:
        print(f"adding up {len(xs)}")
        return sum(xs)

    @pipeline
    def pods(n: int = 5) -> int:
        return total(xs=make(n=n))
    """
)

WIDE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def a() -> int:
        return 1

    @step
    def b() -> int:
        return 2

    @step
    def c() -> int:
        return 3

    @step
    def d() -> int:
        return 4

    @step
    def total(w: int, x: int, y: int, z: int) -> int:
        return w + x + y + z

    @pipeline
    def wide() -> int:
        return total(a(), b(), c(), d())
    """
)


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            }
        )
    )
    return path


def kubernetes_env(kubeconfig: Path, **extra: str) -> dict[str, str]:
    """The settings of a server whose tasks are pods on the fake API server."""
    return {
        "ARGOSY_EXECUTOR": "kubernetes",
        "ARGOSY_KUBERNETES_RUNTIME_IMAGE": IMAGE,
        "KUBECONFIG": str(kubeconfig),
        "KUBERNETES_SERVICE_HOST": "",  # not in a pod: read the kubeconfig
        **extra,
    }


@pytest.fixture
def fake() -> Iterator[fk.FakeKubernetes]:
    with fk.FakeKubernetes(behaviour=lambda pod: fk.Run()) as cluster:
        yield cluster


@pytest.fixture
def server(fake: fk.FakeKubernetes, tmp_path: Path) -> Iterator[ServerProcess]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    started = start_server(tmp_path / "home", kubernetes_env(kubeconfig))
    yield started
    started.stop(timeout=30)


def push(client: Client, folder: Path, source: str, name: str) -> None:
    module = folder / f"{name}_{uuid.uuid4().hex[:8]}.py"  # one module name per import
    module.write_text(source)
    client.push_pipeline(compile_pipeline(load_pipeline(f"{module}:{name}")))


def created(fake: fk.FakeKubernetes, plural: str) -> list[dict[str, Any]]:
    """Every object of ``plural`` the fake ever held in the tenant's namespace (first version)."""
    seen: dict[str, dict[str, Any]] = {}
    with fake.lock:
        for _, p, ns, kind, obj in fake.history:
            if p == plural and ns == NS and kind == "ADDED":
                seen.setdefault(obj["metadata"]["name"], obj)
    return list(seen.values())


def left(fake: fk.FakeKubernetes) -> list[str]:
    return [
        f"{plural}/{o['metadata']['name']}"
        for plural in ("jobs", "pods", "secrets")
        for o in fake.items(plural, NS, "app.kubernetes.io/managed-by=argosy")
    ]


def test_a_run_through_the_server_runs_as_pods_and_leaves_nothing(
    fake: fk.FakeKubernetes, server: ServerProcess, tmp_path: Path
) -> None:
    with Client(server.url) as client:
        push(client, tmp_path, PIPELINE, "pods")
        run = client.create_run("pods", parameters={"n": 5})
        done = client.wait(run.id, poll=0.2, timeout=120)
        assert done.status == "succeeded", (done.error, server.log()[-3000:])
        values = {a.node_path: a.value for a in client.artifacts(run.id)}
        logs = {
            node: client.logs(run.id, node=node).model_dump_json() for node in ("make", "total")
        }
        attempts = [a for t in client.tasks(run.id) for a in t.attempts]
    assert values == {"make": [0, 1, 2, 3, 4], "total": 10}

    jobs = created(fake, "jobs")
    assert sorted(j["metadata"]["labels"]["argosy.dev/task"] for j in jobs) == ["make", "total"]
    for job in jobs:
        labels = job["metadata"]["labels"]
        assert labels["argosy.dev/tenant"] == "default"
        assert labels["argosy.dev/pipeline"] == "pods"
        assert labels["argosy.dev/run"] == run.id
        assert labels["argosy.dev/step"] == labels["argosy.dev/task"]
        assert labels["argosy.dev/attempt-number"] == "1"
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "argosy-task"

    # the pod's invocation: the server's task store and a task token, no store credentials
    secrets = created(fake, "secrets")
    assert len(secrets) == 2
    for secret in secrets:
        invocation = json.loads(base64.b64decode(secret["data"]["invocation.json"]))
        store = invocation["store"]
        assert store["url"] == "argosy-task+" + server.url, store["url"]
        assert set(store["options"]) == {"token"}
        assert store["options"]["token"].startswith("argosy-task.")
        assert "encryption" in invocation  # the tenant's data keys (encryption at rest is on)
        env = {
            e["name"]
            for job in jobs
            for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert not {n for n in env if n.startswith(("AWS_", "ARGOSY_DATABASE", "ARGOSY_KEK"))}

    # resource use, as the launcher in the pod measured it (the API server reports none)
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.cpu_time is not None and attempt.cpu_time > 0, attempt
        assert attempt.peak_memory is not None and attempt.peak_memory > 10 * 2**20, attempt
        assert attempt.wall_time is not None, attempt

    # what the pods printed reached the run's logs (through the log store)
    assert "making 5" in logs["make"]
    assert "adding up 5" in logs["total"]
    fake.wait_for(lambda: not left(fake), timeout=30)


SLOW = textwrap.dedent(
    """
    import time
    from argosy import pipeline, step

    @step
    def steady(seconds: float) -> str:
        print("started", flush=True)
        time.sleep(seconds)
        print("finished", flush=True)
        return "done"

    @pipeline
    def slow(seconds: float = 60.0) -> str:
        return steady(seconds)
    """
)


def running_pod(fake: fk.FakeKubernetes) -> dict[str, Any]:
    pods: list[dict[str, Any]] = fake.wait_for(
        lambda: [
            p
            for p in fake.pods(NS)
            if p["status"].get("phase") == "Running"
            and any(line == "started" for _, line in fake.runtimes[(NS, p["metadata"]["name"])].log)
        ],
        timeout=60,
    )
    return pods[0]


def test_cancel_through_the_server_deletes_the_job_and_its_pod(
    fake: fk.FakeKubernetes, server: ServerProcess, tmp_path: Path
) -> None:
    with Client(server.url) as client:
        push(client, tmp_path, SLOW, "slow")
        run = client.create_run("slow")
        running_pod(fake)
        client.cancel_run(run.id)
        done = client.wait(run.id, poll=0.2, timeout=90)
        tasks = {t.node_path: t for t in client.tasks(run.id)}
    assert done.status == "cancelled", done
    assert tasks["steady"].state == "cancelled"
    deletes = [p for m, p in fake.requests if m == "DELETE" and "/jobs/" in p]
    assert deletes  # the Job was deleted (foreground), which ended the pod
    fake.wait_for(lambda: not left(fake), timeout=30)


def test_a_new_server_adopts_the_pod_of_one_that_stopped(
    fake: fk.FakeKubernetes, tmp_path: Path
) -> None:
    """A draining server leaves the pod running (engine_lost); the next server instance on
    the same database adopts the Job by its attempt label instead of starting another, and
    serves the pod's task token (the deployment's shared ARGOSY_TASK_TOKEN_KEY) through the
    Service the pod was given."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    with fk.FakeService([]) as service:
        env = kubernetes_env(
            kubeconfig, ARGOSY_LEASE_SECONDS="3", ARGOSY_HEARTBEAT_SECONDS="0.5",
            ARGOSY_SHUTDOWN_GRACE_SECONDS="1", ARGOSY_TASK_TOKEN_KEY=new_kek(),
            ARGOSY_KUBERNETES_TASK_STORE_URL=service.url,
        )  # fmt: skip
        first = start_server(tmp_path / "home", env)
        second = None
        try:
            service.backends = [first.url.removeprefix("http://")]
            with Client(first.url) as client:
                push(client, tmp_path, SLOW, "slow")
                run = client.create_run("slow", parameters={"seconds": 6.0})
            pod = running_pod(fake)
            assert first.stop(timeout=30) == 0
            assert fake.get("pods", NS, pod["metadata"]["name"]) is not None  # left running
            second = start_server(tmp_path / "home", env, stderr_path=tmp_path / "second.log")
            service.backends = [second.url.removeprefix("http://")]  # the Service's endpoints
            with Client(second.url) as client:
                done = client.wait(run.id, poll=0.2, timeout=120)
                values = {a.node_path: a.value for a in client.artifacts(run.id)}
                attempts = client.tasks(run.id)[0].attempts
                tail = client.tasks(run.id)[0].log_tail
        finally:
            first.stop(timeout=30)
            if second is not None:
                second.stop(timeout=30)
    assert done.status == "succeeded", (done.error, tail, second.log()[-3000:])
    assert values == {"steady": "done"}
    assert len(created(fake, "jobs")) == 1  # adopted, not started again
    assert len(attempts) == 1, attempts
    try:
        fake.wait_for(lambda: not left(fake), timeout=30)
    except AssertionError:
        raise AssertionError(f"left behind: {left(fake)}; {second.log()[-3000:]}") from None


def test_two_replicas_behind_one_service_serve_each_others_pods(
    fake: fk.FakeKubernetes, server_env: ServerEnv, tmp_path: Path
) -> None:
    """The production shape: two instances on PostgreSQL and S3, pods reaching the task store
    through the Service, which balances their connections over both replicas — so a pod's
    requests reach an instance that did not start its attempt."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    with fk.FakeService([]) as service:
        env = kubernetes_env(
            kubeconfig, ARGOSY_TASK_TOKEN_KEY=new_kek(),
            ARGOSY_KUBERNETES_TASK_STORE_URL=service.url, ARGOSY_TASK_STORE_PRESIGN="false",
        )  # fmt: skip
        replicas = [server_env.start(**env) for _ in range(2)]
        service.backends = [r.url.removeprefix("http://") for r in replicas]
        with Client(replicas[0].url) as client:
            push(client, tmp_path, WIDE, "wide")
            run = client.create_run("wide")
            done = client.wait(run.id, poll=0.2, timeout=120)
            values = {a.node_path: a.value for a in client.artifacts(run.id)}
    assert done.status == "succeeded", (done.error, [r.log()[-2000:] for r in replicas])
    assert values == {"a": 1, "b": 2, "c": 3, "d": 4, "total": 10}
    assert all(service.connections.get(b, 0) > 0 for b in service.backends), service.connections
    fake.wait_for(lambda: not left(fake), timeout=30)
