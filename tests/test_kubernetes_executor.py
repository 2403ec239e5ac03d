"""The Kubernetes executor against a FAKE API server (``tests/kubernetes_fake.py``): a
hand-written stand-in that speaks the real wire format (JSON, watch streams, resourceVersion,
409/410/422), since no cluster exists here. What a cluster reports for each failure is
scripted in the fake from the API reference; the real client code runs unchanged."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from argosy.errors import ExecutionError, NoRoomError
from argosy.executors.base import AttemptExit, AttemptLaunch
from argosy.executors.kubernetes.client import KubernetesClient
from argosy.executors.kubernetes.executor import KubernetesExecutor
from argosy.executors.kubernetes.manifests import Pool, job_name
from argosy.executors.kubernetes.watch import PodWatches
from argosy.executors.local.capacity import CapacityLedger
from argosy.ids import new_id
from argosy.runtime.invocation import Invocation, StoreAccess
from argosy.spec.validate import Capacity
from argosy.states import Reason
from argosy.stores.artifacts.blobs import ArtifactStore, open_artifact_store
from tests import kubernetes_fake as fk

IMAGE = "registry.example.com/argosy-runtime@sha256:" + "ab" * 32
NS = "argosy-team-a"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return open_artifact_store(str(tmp_path / "blobs"), "team-a")


class Harness:
    """A fake API server whose pods behave as each test says, and executors on it."""

    def __init__(self, store: ArtifactStore, tmp: Path) -> None:
        self.store, self.tmp = store, tmp
        self.behaviours: dict[str, fk.Behaviour] = {}
        self.default: fk.Behaviour = fk.hangs()
        self.fake = fk.FakeKubernetes(behaviour=self._pick)
        self.executors: list[KubernetesExecutor] = []
        self.clients: list[KubernetesClient] = []

    def _pick(self, pod: dict[str, Any]) -> fk.Behaviour:
        attempt = pod["metadata"]["labels"]["argosy.dev/attempt"]
        return self.behaviours.get(attempt, self.default)

    def executor(self, **options: Any) -> KubernetesExecutor:
        """An executor with its own client and watches (as a server process would have)."""
        client = KubernetesClient.for_url(self.fake.url)
        self.clients.append(client)
        watch_seconds = options.pop("watch_seconds", 5)
        options.setdefault("live_log_interval", None)
        ex = KubernetesExecutor(
            self.store,
            client,
            image=IMAGE,
            namespace=NS,
            watches=PodWatches(client, timeout_seconds=watch_seconds),
            work_dir=self.tmp,
            **options,
        )
        self.executors.append(ex)
        return ex

    def close(self) -> None:
        for ex in self.executors:
            ex.watches.stop()
            ex.close()
        self.fake.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def k8s(store: ArtifactStore, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(store, tmp_path)
    with harness.fake:
        try:
            yield harness
        finally:
            harness.close()


def launch(
    *,
    attempt_id: str | None = None,
    timeout: float | None = None,
    pool: str | None = None,
    secrets: dict[str, str] | None = None,
    cpu: float = 1.0,
    gpu: int = 0,
) -> AttemptLaunch:
    attempt_id = attempt_id or new_id()
    run_id = "01RUN" + attempt_id[-8:]
    inv = Invocation(
        tenant="team-a",
        run_id=run_id,
        node_path="train",
        attempt=1,
        attempt_id=attempt_id,
        store=StoreAccess("argosy-task+http://argosy-server:8080", {"token": "argosy-task.x"}),
        cache_dir="/cache",
        step={"name": "train", "implementation": {"kind": "python"}},
        code=None,
        inputs={},
        result_key=f"runs/{run_id}/train/1/result.json",
    )
    return AttemptLaunch(
        attempt_id=attempt_id,
        run_id=run_id,
        node_path="train",
        number=1,
        invocation=inv,
        cpu=cpu,
        memory=256 * 2**20,
        gpu=gpu,
        pool=pool,
        timeout=timeout,
        env={},
        secrets=secrets or {},
        log_key=f"runs/{run_id}/train/1/log.jsonl",
    )


_REPORTED: dict[str, AttemptExit] = {}  # exits polled while waiting for another attempt


def wait_exit(ex: KubernetesExecutor, attempt_id: str, timeout: float = 20.0) -> AttemptExit:
    end = time.monotonic() + timeout
    while attempt_id not in _REPORTED and time.monotonic() < end:
        for ended in ex.poll(0.2):
            assert ended.attempt_id not in _REPORTED, "an attempt was reported twice"
            _REPORTED[ended.attempt_id] = ended
    if attempt_id not in _REPORTED:
        raise AssertionError(f"attempt {attempt_id} was never reported")
    return _REPORTED[attempt_id]


def gone(fake: fk.FakeKubernetes, attempt_id: str) -> bool:
    selector = f"argosy.dev/attempt={attempt_id}"
    return not (
        fake.items("jobs", NS, selector)
        or fake.items("secrets", NS, selector)
        or fake.items("pods", NS, selector)
    )


# -- create, watch, clean up --------------------------------------------------------------------
def test_attempt_is_a_job_and_a_secret_and_leaves_nothing_behind(k8s: Harness) -> None:
    ex = k8s.executor()
    a = launch(secrets={"DB_PASSWORD": "hunter2"})
    k8s.behaviours[a.attempt_id] = fk.exits(0)
    identity = ex.start(a)
    assert identity.host == f"kubernetes:{NS}/{job_name(a.attempt_id)}"
    job = k8s.fake.get("jobs", NS, job_name(a.attempt_id))
    secret = k8s.fake.get("secrets", NS, job_name(a.attempt_id))
    assert job is not None and secret is not None  # the fake checked both against the schemas
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    ended = wait_exit(ex, a.attempt_id)
    assert (ended.exit_code, ended.signal, ended.reason) == (0, None, None)
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))
    assert ex.running() == 0


def test_one_watch_per_namespace_and_no_polling(k8s: Harness) -> None:
    ex = k8s.executor()
    attempts = [launch() for _ in range(6)]
    for a in attempts:
        k8s.behaviours[a.attempt_id] = fk.exits(0, after=0.3)
        ex.start(a)
    for a in attempts:
        wait_exit(ex, a.attempt_id)
    reads = [p for m, p in k8s.fake.requests if m == "GET" and "/pods" in p]
    watches = [p for p in reads if "watch=true" in p]
    assert len(watches) == 1, watches  # one watch of the namespace, none per pod
    assert "allowWatchBookmarks=true" in watches[0] and "resourceVersion=" in watches[0]
    lists = [p for p in reads if "watch" not in p and "/log" not in p]
    assert len(lists) == 1  # listed once; no GET of a single pod, ever
    assert not [p for p in reads if "/pods/" in p and "/log" not in p]


def test_watch_expired_with_410_gone_lists_again_and_resumes(k8s: Harness) -> None:
    ex = k8s.executor()
    first, second = launch(), launch()
    k8s.behaviours[first.attempt_id] = fk.hangs()
    k8s.behaviours[second.attempt_id] = fk.hangs()
    ex.start(first)
    ex.start(second)
    watch = ex.watches.namespace(NS)
    k8s.fake.wait_for(
        lambda: len(watch.pods) == 2 and all(p.running_since for p in watch.pods.values())
    )
    pods = {
        p["metadata"]["labels"]["argosy.dev/attempt"]: p["metadata"]["name"]
        for p in k8s.fake.pods(NS)
    }
    with k8s.fake.watches_held():  # the watch is between two requests ...
        # ... while one pod ends and the other is deleted behind the executor's back, and the
        # history is compacted: the resumed watch gets 410 Gone and must list again
        fk._terminate(k8s.fake, NS, pods[first.attempt_id], 0, "Completed")
        k8s.fake.remove("pods", NS, pods[second.attempt_id])
        k8s.fake.compact()
    exits = {}
    end = time.monotonic() + 20
    while len(exits) < 2 and time.monotonic() < end:
        exits.update({e.attempt_id: e for e in ex.poll(0.2)})
    assert watch.stats.expired >= 1 and watch.stats.lists >= 2
    assert exits[first.attempt_id].exit_code == 0
    assert exits[second.attempt_id].reason == Reason.NODE_LOST
    # an open watch ended by the server with a 410 ERROR event resumes too
    third = launch()
    k8s.behaviours[third.attempt_id] = fk.exits(3, after=1.0)
    ex.start(third)
    k8s.fake.wait_for(lambda: watch.get(third.attempt_id) is not None)
    expired = watch.stats.expired
    k8s.fake.expire_watches()
    assert wait_exit(ex, third.attempt_id).exit_code == 3
    assert watch.stats.expired == expired + 1


def test_bookmarks_move_the_resource_version(k8s: Harness) -> None:
    ex = k8s.executor()
    a = launch()
    ex.start(a)
    watch = ex.watches.namespace(NS)
    k8s.fake.wait_for(lambda: watch.stats.bookmarks >= 2)
    assert int(watch.resource_version) == k8s.fake.version
    ex.stop(a.attempt_id, Reason.CANCELLED)
    wait_exit(ex, a.attempt_id)


# -- every failure reason -----------------------------------------------------------------------
SCHEDULER = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available"
)
REGISTRY = (
    'failed to pull and unpack image "registry.example.com/argosy-runtime@sha256:abab": '
    "unexpected status from HEAD request: 403 Forbidden"
)


@pytest.mark.parametrize(
    ("behaviour", "reason", "exit_code", "sig", "says"),
    [
        (fk.oom_killed(), Reason.MEMORY_LIMIT, None, 9, "OOMKilled"),
        (
            fk.evicted("The node was low on resource: memory."),
            Reason.EVICTED,
            None,
            9,
            "low on resource: memory",
        ),
        (fk.image_pull_failure(REGISTRY), Reason.IMAGE_PULL, None, None, "403 Forbidden"),
        (fk.node_lost(), Reason.NODE_LOST, None, None, "node"),
        (fk.exits(3), None, 3, None, None),
        (fk.exits(139), None, None, 11, None),  # SIGSEGV: 128 + 11
        (
            fk.running(
                (
                    0.1,
                    lambda f, n, p: f.set_status(
                        n,
                        p,
                        phase="Failed",
                        reason="DeadlineExceeded",
                        message="Pod was active on the node longer than the specified deadline",
                    ),
                )
            ),
            Reason.TIMEOUT,
            None,
            None,
            "deadline",
        ),
        (
            fk.Script(
                (0.0, fk._scheduled),
                (
                    0.05,
                    lambda f, n, p: f.update(
                        "pods",
                        n,
                        p,
                        lambda o: o["status"].update(
                            containerStatuses=[
                                fk._status(
                                    o,
                                    {
                                        "waiting": {
                                            "reason": "CreateContainerConfigError",
                                            "message": 'secret "x" not found',
                                        }
                                    },
                                )
                            ]
                        ),
                    ),
                ),
            ),
            Reason.CONTAINER_ERROR,
            None,
            None,
            "not found",
        ),
    ],
    ids=["oom", "evicted", "image-pull", "node-lost", "exit-code", "signal", "deadline", "config"],
)
def test_failure_reasons(
    k8s: Harness,
    behaviour: fk.Behaviour,
    reason: str | None,
    exit_code: int | None,
    sig: int | None,
    says: str | None,
) -> None:
    ex = k8s.executor()
    a = launch()
    k8s.behaviours[a.attempt_id] = behaviour
    started = time.monotonic()
    ex.start(a)
    ended = wait_exit(ex, a.attempt_id)
    assert (ended.reason, ended.exit_code, ended.signal) == (reason, exit_code, sig)
    if says:
        assert ended.message is not None and says in ended.message
        assert any(says in line for line in ended.log_tail)  # the log says so too
    if reason == Reason.IMAGE_PULL:
        assert time.monotonic() - started < 5  # fails fast, with the image named
        assert IMAGE in (ended.message or "")
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_unschedulable_for_too_long_fails_with_the_schedulers_message(k8s: Harness) -> None:
    ex = k8s.executor(unschedulable_seconds=0.8)
    a = launch(gpu=1)
    k8s.behaviours[a.attempt_id] = fk.unschedulable(SCHEDULER)
    started = time.monotonic()
    ex.start(a)
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.UNSCHEDULABLE
    assert ended.message is not None and SCHEDULER in ended.message
    assert 0.8 <= time.monotonic() - started < 10
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_a_pod_scheduled_in_time_is_not_failed(k8s: Harness) -> None:
    ex = k8s.executor(unschedulable_seconds=1.0)
    a = launch()
    k8s.behaviours[a.attempt_id] = fk.Script(
        (0.0, lambda f, n, p: fk.unschedulable("waiting for a node").steps[0][1](f, n, p)),
        (0.5, fk._scheduled),
        (0.0, lambda f, n, p: fk._running(f, n, p) and None),
        (1.5, lambda f, n, p: fk._terminate(f, n, p, 0, "Completed")),
    )
    ex.start(a)
    ended = wait_exit(ex, a.attempt_id)
    assert (ended.exit_code, ended.reason) == (0, None)


def test_job_deadline_exceeded_while_no_engine_watched_is_a_timeout(k8s: Harness) -> None:
    """activeDeadlineSeconds is the cluster's backstop: the Job controller deletes the pod and
    marks the Job Failed/DeadlineExceeded; the executor reads that from the Job."""
    ex = k8s.executor()
    a = launch()
    ex.start(a)
    k8s.fake.wait_for(lambda: k8s.fake.pods(NS, f"argosy.dev/attempt={a.attempt_id}"))
    k8s.fake.exceed_deadline(NS, job_name(a.attempt_id))
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.TIMEOUT and "deadline" in (ended.message or "")


def test_step_timeout_deletes_the_job(k8s: Harness) -> None:
    ex = k8s.executor()
    a = launch(timeout=0.5)
    ex.start(a)
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.TIMEOUT
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_unknown_pool_is_refused_naming_the_pools(k8s: Harness) -> None:
    ex = k8s.executor(pools={"cpu": Pool("cpu", {"karpenter.sh/nodepool": "cpu"})})
    with pytest.raises(ExecutionError, match="use one of cpu"):
        ex.start(launch(pool="gpu"))
    a = launch(pool="cpu")
    ex.start(a)
    job = k8s.fake.get("jobs", NS, job_name(a.attempt_id))
    assert job is not None
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": "cpu"}
    ex.stop(a.attempt_id, Reason.CANCELLED)
    wait_exit(ex, a.attempt_id)


def test_steps_it_cannot_run_are_refused_creating_nothing(k8s: Harness) -> None:
    """Container steps (not yet), and a step image not pinned by digest (each node would
    resolve the tag itself, and the cache key and lineage name only the reference)."""
    ex = k8s.executor()
    for implementation, why in (
        ({"kind": "container", "image": "busybox", "command": ["true"]}, "container steps"),
        ({"kind": "python", "image": "registry.example.com/ml/xgb:1.2"},
         r"^train: the image 'registry.example.com/ml/xgb:1.2' is not pinned by digest"),
    ):  # fmt: skip
        a = launch()
        step = {"name": "train", "implementation": implementation}
        a = dataclasses.replace(a, invocation=a.invocation.completed(step=step))
        with pytest.raises(ExecutionError, match=why):
            ex.start(a)
        assert gone(k8s.fake, a.attempt_id)


def test_api_errors_409_and_422(k8s: Harness) -> None:
    typo = {"key": "nvidia.com/gpu", "operator": "Exists", "efect": "NoSchedule"}
    ex = k8s.executor(pools={"bad": Pool("bad", tolerations=[typo])})
    with pytest.raises(ExecutionError, match="422 Invalid"):
        ex.start(launch(pool="bad"))
    # a Job of the same name that is not this attempt's: refused (409 AlreadyExists)
    a = launch()
    k8s.fake.create("secrets", NS, {"metadata": {"name": job_name(a.attempt_id)}, "data": {}})
    with pytest.raises(ExecutionError, match="already exists"):
        ex.start(a)
    assert ex.running() == 0
    # the same attempt started twice (an engine that crashed between the calls): reused
    b = launch()
    ex.start(b)
    again = k8s.executor()
    again.start(b)
    assert len(k8s.fake.items("jobs", NS, f"argosy.dev/attempt={b.attempt_id}")) == 1


def test_quota_admission(store: ArtifactStore, k8s: Harness) -> None:
    ledger = CapacityLedger(
        Capacity(cpu=1e6, memory=2**60, gpu=1024), quotas=lambda tenant: {"running_tasks": 1}
    )
    ex = k8s.executor(ledger=ledger)
    a = launch()
    assert ex.has_room(1, None, 0)
    ex.start(a)
    assert not ex.has_room(1, None, 0)
    with pytest.raises(NoRoomError):
        ex.start(launch())
    ex.stop(a.attempt_id, Reason.CANCELLED)
    wait_exit(ex, a.attempt_id)
    assert ex.has_room(1, None, 0)


# -- cancel, re-adoption, sweeper ---------------------------------------------------------------
def test_cancel_deletes_the_job_in_the_foreground(k8s: Harness) -> None:
    ex = k8s.executor()
    a = launch()
    ex.start(a)
    k8s.fake.wait_for(
        lambda: (
            (ex.watches.namespace(NS).get(a.attempt_id) or fk)
            and getattr(ex.watches.namespace(NS).get(a.attempt_id), "running_since", None)
        )
    )
    ex.stop(a.attempt_id, Reason.CANCELLED)
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.CANCELLED
    finalized = [
        obj
        for _, plural, _, kind, obj in k8s.fake.history
        if plural == "jobs"
        and kind == "MODIFIED"
        and "foregroundDeletion" in obj["metadata"].get("finalizers", [])
    ]
    assert finalized, "the Job was not deleted with foreground propagation"
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_restart_adopts_running_jobs_by_label(k8s: Harness) -> None:
    before = k8s.executor()
    a = launch(secrets={"TOKEN": "s3cr3t"})
    k8s.behaviours[a.attempt_id] = fk.running(
        (0.0, fk.say("started", "token is s3cr3t")),
        (1.5, fk.say("done")),
        (0.1, lambda f, n, p: fk._terminate(f, n, p, 0, "Completed")),
    )
    before.start(a)
    # the server "restarts": a new process with its own client and watch, nothing in memory
    before.watches.stop()
    after = k8s.executor()
    assert after.adopt(a.attempt_id, a.log_key)
    assert not after.adopt(new_id(), "")  # nothing to adopt: the engine re-runs it
    ended = wait_exit(after, a.attempt_id)
    assert ended.exit_code == 0 and ended.reason is None
    created = [o for _, p, _, kind, o in k8s.fake.history if p == "jobs" and kind == "ADDED"]
    assert len(created) == 1  # adopted, not started again
    lines = [json.loads(x)["m"] for x in _record(k8s.store, a.log_key).splitlines()]
    assert (
        "done" in lines and "token is ***" in lines
    )  # secrets redacted, read back from the Secret
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_draining_server_hands_pods_over(k8s: Harness) -> None:
    ex = k8s.executor()
    a = launch()
    ex.start(a)
    ex.stop(a.attempt_id, Reason.ENGINE_LOST)
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.ENGINE_LOST
    assert k8s.fake.get("jobs", NS, job_name(a.attempt_id)) is not None  # still running
    successor = k8s.executor()
    assert successor.adopt(a.attempt_id, a.log_key)
    successor.stop(a.attempt_id, Reason.CANCELLED)
    wait_exit(successor, a.attempt_id)


def test_sweeper_removes_orphans_and_end_orphan(k8s: Harness) -> None:
    crashed = k8s.executor()
    orphan, live, ended = launch(), launch(), launch()
    for a in (orphan, live, ended):
        crashed.start(a)
    crashed.watches.stop()
    sweeper = k8s.executor()
    removed = sweeper.sweep(lambda attempt: attempt == live.attempt_id)
    assert set(removed) == {orphan.attempt_id, ended.attempt_id}
    k8s.fake.wait_for(
        lambda: gone(k8s.fake, orphan.attempt_id) and gone(k8s.fake, ended.attempt_id)
    )
    assert k8s.fake.get("jobs", NS, job_name(live.attempt_id)) is not None
    assert sweeper.end_orphan(live.attempt_id, None)
    assert not sweeper.end_orphan(live.attempt_id, None)
    k8s.fake.wait_for(lambda: gone(k8s.fake, live.attempt_id))


# -- logs ---------------------------------------------------------------------------------------
def test_logs_stream_while_running_and_are_kept_after_the_pod(k8s: Harness) -> None:
    ex = k8s.executor(live_log_interval=0.2)
    a = launch(secrets={"API_KEY": "k-123"})
    k8s.behaviours[a.attempt_id] = fk.running(
        (0.0, fk.say("loading data", "using k-123")),
        (1.0, fk.say("epoch 1")),
        (1.0, lambda f, n, p: fk._terminate(f, n, p, 0, "Completed")),
    )
    ex.start(a)
    live: list[str] = []
    end = time.monotonic() + 10
    while not live and time.monotonic() < end:
        ex.poll(0.1)
        raw = _record(k8s.store, a.log_key)
        live = [json.loads(x)["m"] for x in raw.splitlines()] if raw else []
    assert live[:2] == ["loading data", "using ***"]  # published while the pod runs
    wait_exit(ex, a.attempt_id)
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))
    kept = [json.loads(x)["m"] for x in _record(k8s.store, a.log_key).splitlines()]
    assert kept == ["loading data", "using ***", "epoch 1"]  # each line once


def _record(store: ArtifactStore, key: str) -> str:
    stream = store.open_record(key)
    if stream is None:
        return ""
    with stream:
        return stream.read().decode()


# -- a Python step in an image of its own: the runtime copied into the pod ----------------------
STEP_IMAGE = "registry.example.com/ml/xgb@sha256:" + "cd" * 32


def image_launch(**options: Any) -> AttemptLaunch:
    a = launch(**options)
    step = {"name": "train", "implementation": {"kind": "python", "image": STEP_IMAGE}}
    return dataclasses.replace(a, invocation=a.invocation.completed(step=step))


def test_the_runtime_copy_is_all_the_launcher_imports_at_task_time(tmp_path: Path) -> None:
    """What the init container copies suffices, with nothing else: under ``python -S`` (no
    site-packages at all) a Python without Argosy imports the launcher, the step SDK,
    encryption at rest (cryptography's compiled modules) and the task store's client (found
    through the copied entry points, as ``argosy-task+http://``), all from the copy."""
    from argosy.executors.kubernetes import bundle

    done = bundle.write_bundle(tmp_path / "runtime")
    assert done["distributions"].keys() >= {"httpx", "httpcore", "h11", "cryptography", "cffi"}
    assert "pydantic" not in done["distributions"]
    assert any(c.startswith("_cffi_backend.") for c in done["compiled"])
    assert not list((tmp_path / "runtime").rglob("*.pyc"))
    probe = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, sys.argv[1] + "/lib")
        sys.path.append(sys.argv[1] + "/site")
        import argosy.runtime.launcher
        from argosy import pipeline, step
        from argosy.stores.artifacts.blobs import open_artifact_store
        from argosy.stores.encryption import ObjectCipher
        store = open_artifact_store("argosy-task+http://argosy:8080", "t", {"token": "x"})
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        AESGCM(bytes(32)).encrypt(bytes(12), b"x", None)
        third = {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
        print(json.dumps({m: getattr(sys.modules[m], "__file__", None) or "" for m in third}))
        """
    )
    out = subprocess.run(
        [fk.plain_python(), "-S", "-c", probe, str(tmp_path / "runtime")],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    files = json.loads(out.stdout)
    assert {"argosy", "httpx", "cryptography"} <= files.keys()
    outside = {m: f for m, f in files.items() if f and not f.startswith(str(tmp_path))}
    assert not outside, f"imported from outside the copy: {outside}"


def test_the_boot_refuses_a_python_of_another_abi_before_importing_anything(
    tmp_path: Path,
) -> None:
    """Same version, other ABI (here: the runtime built for musl on arm64): the boot exits
    86 with its one line, without importing Argosy (whose compiled dependencies would not
    load there)."""
    from argosy.executors.kubernetes import bundle

    bundle.write_bundle(tmp_path / "runtime")
    manifest = json.loads((tmp_path / "runtime" / bundle.MANIFEST).read_text())
    mine = manifest["soabi"]
    manifest["soabi"] = (
        f"cpython-{sys.version_info.major}{sys.version_info.minor}-aarch64-linux-musl"
    )
    (tmp_path / "runtime" / bundle.MANIFEST).write_text(json.dumps(manifest))
    started = time.monotonic()
    out = subprocess.run(
        [fk.plain_python(), str(tmp_path / "runtime" / "boot.py"), STEP_IMAGE, "/nonexistent"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == bundle.WRONG_PYTHON
    [line] = out.stderr.splitlines()
    version = "{}.{}.{}".format(*sys.version_info[:3])
    assert line == (
        f"{bundle.MARK}image {STEP_IMAGE} has Python {version} built for {mine}, but the Argosy "
        f"runtime in the pod is built for cpython {sys.version_info.major}."
        f"{sys.version_info.minor} ({manifest['soabi']}; its compiled dependencies too): use an "
        f"image with Python {sys.version_info.major}.{sys.version_info.minor}"
    )
    assert took < 5  # the interpreter's start and a JSON read


def test_an_image_without_python3_fails_with_container_error(k8s: Harness) -> None:
    """containerd cannot start the step's container (StartError, exit 128): the attempt
    fails at once with container_error naming the image; nothing is left behind."""
    k8s.fake.images[STEP_IMAGE] = None
    ex = k8s.executor()
    a = image_launch()
    k8s.behaviours[a.attempt_id] = fk.Run()
    ex.start(a)
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.CONTAINER_ERROR
    assert ended.message is not None and ended.message.startswith(
        f"image {STEP_IMAGE} has no python3 on its PATH (the container could not start: "
        "StartError: failed to create containerd task"
    )
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_a_failed_runtime_copy_fails_with_container_error(k8s: Harness) -> None:
    """The init container fails (here the runtime image's Python has no Argosy): the pod
    fails before the step's container starts, and the attempt says which container failed
    and its last words."""
    k8s.fake.images[IMAGE] = fk.plain_python()
    ex = k8s.executor()
    a = image_launch()
    k8s.behaviours[a.attempt_id] = fk.Run()
    ex.start(a)
    ended = wait_exit(ex, a.attempt_id)
    assert ended.reason == Reason.CONTAINER_ERROR
    assert ended.message is not None
    assert ended.message.startswith(
        f"the init container that copies the Argosy runtime into the pod (argosy-runtime, "
        f"image {IMAGE}) failed (Error, exit 1): "
    )
    assert "No module named 'argosy'" in ended.message
    [pod] = [o for _, p, _, kind, o in k8s.fake.history if p == "pods" and kind == "ADDED"]
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))
    assert pod["spec"]["containers"][0]["image"] == STEP_IMAGE


def test_a_new_executor_adopting_an_image_step_still_names_a_wrong_python(
    k8s: Harness,
) -> None:
    """After a handover the next executor knows the pod runs a step image (from the Job's
    init container), so a Python of another version is still reported as such."""
    other = fk.other_python()
    if other is None:
        if os.environ.get("CI"):
            pytest.fail("no Python of another minor version on this machine (pyenv)")
        pytest.skip("no Python of another minor version on this machine")
    k8s.fake.images[STEP_IMAGE] = other
    before = k8s.executor()
    a = image_launch()
    k8s.behaviours[a.attempt_id] = fk.Run(schedule_delay=1.0)
    before.start(a)
    before.stop(a.attempt_id, Reason.ENGINE_LOST)
    [handed] = before.poll(1.0)
    assert handed.reason == Reason.ENGINE_LOST
    after = k8s.executor()
    assert after.adopt(a.attempt_id, a.log_key)
    exits: list[AttemptExit] = []
    end = time.monotonic() + 20
    while not exits and time.monotonic() < end:
        exits = after.poll(0.2)
    [ended] = exits
    assert ended.reason == Reason.CONTAINER_ERROR
    assert ended.message is not None and ended.message.startswith(
        f"image {STEP_IMAGE} has Python 3."
    )
    assert ended.exit_code == 86
    k8s.fake.wait_for(lambda: gone(k8s.fake, a.attempt_id))


def test_a_runtime_image_that_cannot_be_pulled_is_named_by_the_pods_summary() -> None:
    """While the init container waits on its image, the step's container waits on it
    (PodInitializing): the summary names the init container's image and the registry's words,
    so the attempt fails with image_pull naming the runtime image."""
    from argosy.executors.kubernetes.watch import summarize

    pod = {
        "metadata": {"name": "p", "labels": {"argosy.dev/attempt": "a1"}},
        "spec": {"containers": [{"name": "step", "image": STEP_IMAGE}]},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "argosy-runtime", "image": IMAGE, "state": {"waiting": {
                    "reason": "ErrImagePull", "message": "manifest unknown"}}},
            ],
            "containerStatuses": [
                {"name": "step", "image": STEP_IMAGE,
                 "state": {"waiting": {"reason": "PodInitializing"}}},
            ],
        },
    }  # fmt: skip
    summary = summarize(pod)
    assert summary is not None
    assert (summary.waiting_reason, summary.waiting_message, summary.image) == (
        "ErrImagePull", "manifest unknown", IMAGE,
    )  # fmt: skip
    assert summary.init_failed is None
