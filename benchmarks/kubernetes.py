"""Kubernetes executor benchmarks, against the hand-written FAKE API server of the tests
(tests/kubernetes_fake.py; no cluster here, so these measure Argosy's side and the fake's,
not an API server's):

(h) Job manifests created per second: ``KubernetesExecutor.start`` (Secret, Job, owner patch:
    three requests over one connection pool) for N attempts whose pods stay Pending; with the
    fake validating every body against the official schemas (as a real API server validates)
    and without (Argosy's own cost);
(i) watch memory with 5,000 pods: the namespace watch's state (``PodSummary`` per pod)
    measured with tracemalloc after listing 5,000 task pods, then after 5,000 MODIFIED events;
    and how long the watch takes to apply them.

    .venv/bin/python benchmarks/kubernetes.py [--jobs 300] [--pods 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this file is named like the kubernetes package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from tests import kubernetes_fake as fk  # noqa: E402

from argosy.executors.base import AttemptLaunch  # noqa: E402
from argosy.executors.kubernetes.client import KubernetesClient  # noqa: E402
from argosy.executors.kubernetes.executor import KubernetesExecutor  # noqa: E402
from argosy.executors.kubernetes.manifests import SELECTOR  # noqa: E402
from argosy.executors.kubernetes.watch import PodWatches  # noqa: E402
from argosy.ids import new_id  # noqa: E402
from argosy.runtime.invocation import Invocation, StoreAccess  # noqa: E402
from argosy.stores.artifacts.blobs import open_artifact_store  # noqa: E402

IMAGE = "registry.example.com/argosy/runtime@sha256:" + "ab" * 32
NS = "argosy-bench"


def _launch() -> AttemptLaunch:
    attempt_id = new_id()
    inv = Invocation(
        tenant="bench",
        run_id="01BENCHRUN",
        node_path="train",
        attempt=1,
        attempt_id=attempt_id,
        store=StoreAccess("argosy-task+http://argosy:8080", {"token": "argosy-task.x"}),
        cache_dir="/cache",
        step={"name": "train", "implementation": {"kind": "python"}},
        code=None,
        inputs={"x": {"value": 1}},
        result_key="runs/01BENCHRUN/train/1/result.json",
    )
    return AttemptLaunch(
        attempt_id=attempt_id,
        run_id="01BENCHRUN",
        node_path="train",
        number=1,
        invocation=inv,
        cpu=1.0,
        memory=2**30,
        gpu=0,
        pool=None,
        timeout=3600.0,
        env={"MODE": "x"},
        secrets={"TOKEN": "s"},
        log_key="runs/01BENCHRUN/train/1/log.jsonl",
    )


def jobs_per_second(n: int, validate: bool) -> float:
    pending = fk.Script()  # the pod stays Pending: only the API calls are measured
    with (
        fk.FakeKubernetes(behaviour=lambda pod: pending, validate=validate) as fake,
        tempfile.TemporaryDirectory() as tmp,
    ):
        client = KubernetesClient.for_url(fake.url)
        store = open_artifact_store(str(Path(tmp) / "blobs"), "bench")
        ex = KubernetesExecutor(
            store,
            client,
            image=IMAGE,
            namespace=NS,
            live_log_interval=None,
            watches=PodWatches(client),
            work_dir=Path(tmp),
        )
        launches = [_launch() for _ in range(n)]
        ex.start(launches[0])  # warm: connection, watch
        started = time.perf_counter()
        for launch in launches[1:]:
            ex.start(launch)
        elapsed = time.perf_counter() - started
        ex.watches.stop()
        client.close()
        return (n - 1) / elapsed


def _pod(i: int) -> dict[str, Any]:
    attempt = f"01BENCH{i:019d}"
    return {
        "metadata": {
            "name": f"argosy-{attempt.lower()}-abcde",
            "labels": {
                "app.kubernetes.io/managed-by": "argosy",
                "app.kubernetes.io/component": "task",
                "argosy.dev/attempt": attempt,
                "argosy.dev/tenant": "bench",
                "argosy.dev/run": "01BENCHRUN",
                "argosy.dev/task": f"fold-{i}",
                "job-name": f"argosy-{attempt.lower()}",
            },
            "annotations": {"argosy.dev/node-path": f"fold[{i}]"},
        },
        "spec": {
            "containers": [
                {
                    "name": "step",
                    "image": IMAGE,
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                }
            ]
        },
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
    }


def watch_memory(pods: int) -> dict[str, float]:
    with fk.FakeKubernetes(validate=False) as fake:
        for i in range(pods):
            fake.create("pods", NS, _pod(i))
        client = KubernetesClient.for_url(fake.url)
        watches = PodWatches(client, timeout_seconds=600)
        tracemalloc.start(40)  # deep stacks: attribute memory to the watch's own frames
        base = tracemalloc.take_snapshot()
        started = time.perf_counter()
        watch = watches.namespace(NS)
        watch.ready.wait(300)
        listed = time.perf_counter() - started
        after_list = tracemalloc.take_snapshot()
        names = [p["metadata"]["name"] for p in fake.items("pods", NS, SELECTOR)]
        stamp = fk.now_rfc3339()
        started = time.perf_counter()
        for name in names:
            fake.update(
                "pods",
                NS,
                name,
                lambda p: p["status"].update(
                    phase="Running",
                    containerStatuses=[
                        {
                            "name": "step",
                            "image": IMAGE,
                            "ready": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": stamp}},
                        }
                    ],
                ),
            )
        target = fake.version
        while int(watch.resource_version or 0) < target and time.perf_counter() - started < 300:
            time.sleep(0.01)
        applied = time.perf_counter() - started
        after_events = tracemalloc.take_snapshot()
        tracemalloc.stop()
        watches.stop()
        client.close()

    # only what is still held and was allocated under the executor's watch code (the fake
    # runs in this process too: its event history must not count)
    ours = [tracemalloc.Filter(True, "*/argosy/executors/kubernetes/*", all_frames=True)]

    def grown(snapshot: tracemalloc.Snapshot) -> int:
        filtered = snapshot.filter_traces(ours)
        return sum(s.size_diff for s in filtered.compare_to(base.filter_traces(ours), "filename"))

    return {
        "pods": pods,
        "tracked": len(watch.pods),
        "list_seconds": round(listed, 2),
        "memory_after_list_mib": round(grown(after_list) / 2**20, 2),
        "memory_after_events_mib": round(grown(after_events) / 2**20, 2),
        "bytes_per_pod": round(grown(after_events) / pods),
        "events_per_second": round(pods / applied),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--pods", type=int, default=5000)
    args = parser.parse_args()
    results = {
        "jobs_per_second_fake_validating": round(jobs_per_second(args.jobs, True), 1),
        "jobs_per_second_fake_not_validating": round(jobs_per_second(args.jobs, False), 1),
        "watch": watch_memory(args.pods),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
