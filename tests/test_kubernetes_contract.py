"""The executor contract: the same runs through the real engine and the real step launcher on
every executor implementation (``IMPLEMENTATIONS``). ``local`` runs processes here;
``kubernetes`` runs the Kubernetes executor against the hand-written FAKE API server of
``tests/kubernetes_fake.py``, whose fake kubelet runs each pod's command as a local process
(the image's ``python`` is this interpreter; Secret and emptyDir volumes are temporary
folders). So a pass here means the Job, the Secret with the invocation, the watch, the log
and the clean-up work end to end, short of a real cluster (``tests/live_k8s/`` for that).
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from argosy.engine.engine import Engine
from argosy.executors.base import Capacity, Executor
from argosy.executors.kubernetes.client import KubernetesClient
from argosy.executors.kubernetes.executor import KubernetesExecutor
from argosy.executors.kubernetes.watch import PodWatches
from argosy.executors.local.executor import LocalExecutor
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.states import Reason, RunStatus
from argosy.stores.artifacts.blobs import open_artifact_store
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Artifact, Attempt, Task
from tests import kubernetes_fake as fk

IMPLEMENTATIONS = ["local", "kubernetes"]
IMAGE = "registry.example.com/argosy-runtime@sha256:" + "cd" * 32

PIPELINES = textwrap.dedent(
    """
    import os, time
    from argosy import pipeline, step

    @step
    def make(n: int) -> list[int]:
        print(f"making {n}")
        return list(range(n))

    @step
    def total(xs: list[int]) -> int:
        print("adding up")
        return sum(xs)

    @pipeline
    def happy(n: int = 4) -> int:
        return total(xs=make(n=n))

    @step
    def broken() -> int:
        print("about to fail")
        raise ValueError("the column 'age' is missing")

    @pipeline
    def raises() -> int:
        return broken()

    @step
    def dies() -> int:
        print("exiting hard", flush=True)
        os._exit(3)

    @pipeline
    def exit_code() -> int:
        return dies()

    @step(timeout=1.0)
    def slow() -> int:
        time.sleep(60)
        return 1

    @pipeline
    def too_slow() -> int:
        return slow()

    @step
    def forever() -> int:
        print("working", flush=True)
        time.sleep(60)
        return 1

    @pipeline
    def cancelled() -> int:
        return forever()

    @step
    def steady() -> int:
        print("started", flush=True)
        time.sleep(3)
        print("finished", flush=True)
        return 7

    @pipeline
    def handover() -> int:
        return steady()
    """
)


@dataclass
class Setup:
    engine: Engine
    metadata: MetadataStore
    flows: Path
    fake: fk.FakeKubernetes | None

    def run(self, name: str, **parameters: Any) -> str:
        compiled = compile_pipeline(load_pipeline(f"{self.flows}:{name}"))
        return self.engine.submit(compiled, parameters)

    def attempts(self, run_id: str) -> list[tuple[str, str, str | None, str | None]]:
        with self.metadata.session() as s:
            rows = s.execute(
                select(Task.node_path, Attempt.state, Attempt.reason, Attempt.error)
                .join(Task, Task.id == Attempt.task_id)
                .where(Attempt.run_id == run_id)
                .order_by(Attempt.number)
            ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _setup(kind: str, tmp_path: Path) -> Iterator[Setup]:
    project = tmp_path / "project"
    project.mkdir()
    flows = project / f"contract_{uuid.uuid4().hex[:12]}.py"  # a module name of its own
    flows.write_text(PIPELINES)
    metadata = MetadataStore.open(f"sqlite:///{tmp_path / 'argosy.db'}")
    store = open_artifact_store(str(tmp_path / "blobs"), "default")
    fake = None
    client = None
    executor: Executor
    if kind == "local":
        executor = LocalExecutor(store, tmp_path / "attempts", Capacity(4, 8 * 2**30, 0))
    else:
        fake = fk.FakeKubernetes(python=sys.executable).__enter__()
        client = KubernetesClient.for_url(fake.url)
        executor = KubernetesExecutor(
            store,
            client,
            image=IMAGE,
            namespace="argosy-default",
            watches=PodWatches(client, timeout_seconds=30),
            work_dir=tmp_path,
        )
    engine = Engine(
        metadata,
        store,
        executor,
        user="tester",
        cache_dir=str(tmp_path / "cache"),
        store_url=str(tmp_path / "blobs"),
        poll_interval=0.1,
        cache=False,
    )
    try:
        yield Setup(engine, metadata, flows, fake)
    finally:
        if isinstance(executor, KubernetesExecutor):
            executor.watches.stop()
            executor.close()
        if fake is not None:
            fake.close()
        if client is not None:
            client.close()
        metadata.engine.dispose()


@pytest.fixture(params=IMPLEMENTATIONS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    yield from _setup(request.param, tmp_path)


def test_a_pipeline_runs_and_passes_outputs(setup: Setup) -> None:
    run_id = setup.run("happy", n=5)
    assert setup.engine.execute(run_id) == RunStatus.SUCCEEDED
    assert [(node, state) for node, state, _, _ in setup.attempts(run_id)] == [
        ("make", "succeeded"),
        ("total", "succeeded"),
    ]
    with setup.metadata.session() as s:
        log_keys = s.scalars(select(Attempt.log_key).where(Attempt.run_id == run_id)).all()
    logs = [setup.engine.store.open_record(k) for k in log_keys]
    text = b"".join(f.read() for f in logs if f is not None).decode()
    assert "making 5" in text and "adding up" in text  # the log outlives the process/pod
    if setup.fake is not None:  # nothing left behind in the cluster
        setup.fake.wait_for(
            lambda: (
                not setup.fake.items("jobs")
                and not setup.fake.items("pods")  # type: ignore[union-attr]
                and not setup.fake.items("secrets")
            )  # type: ignore[union-attr]
        )


def test_an_exception_fails_the_task_with_its_message(setup: Setup) -> None:
    run_id = setup.run("raises")
    assert setup.engine.execute(run_id) == RunStatus.FAILED
    [(_, state, reason, error)] = setup.attempts(run_id)
    assert (state, reason) == ("failed", Reason.EXCEPTION)
    assert "the column 'age' is missing" in (error or "")


def test_an_exit_without_a_result_is_an_exit_code(setup: Setup) -> None:
    run_id = setup.run("exit_code")
    assert setup.engine.execute(run_id) == RunStatus.FAILED
    [(_, state, reason, error)] = setup.attempts(run_id)
    assert (state, reason) == ("failed", Reason.EXIT_CODE)
    assert "3" in (error or "")


def test_a_step_past_its_timeout_is_ended(setup: Setup) -> None:
    started = time.monotonic()
    run_id = setup.run("too_slow")
    assert setup.engine.execute(run_id) == RunStatus.FAILED
    [(_, state, reason, _)] = setup.attempts(run_id)
    assert (state, reason) == ("failed", Reason.TIMEOUT)
    assert time.monotonic() - started < 30


def test_cancel_ends_the_running_attempt(setup: Setup) -> None:
    run_id = setup.run("cancelled")

    def cancel_when_running() -> None:
        end = time.monotonic() + 20
        while time.monotonic() < end and not setup.engine.executor.running():
            time.sleep(0.05)
        time.sleep(1.0)
        setup.engine.interrupted = True  # what Ctrl-C does

    threading.Thread(target=cancel_when_running, daemon=True).start()
    assert setup.engine.execute(run_id) == RunStatus.CANCELLED
    [(_, state, reason, _)] = setup.attempts(run_id)
    assert (state, reason) == ("cancelled", Reason.CANCELLED)


# -- Kubernetes only: a run handed over to another engine keeps its pod -------------------------
@pytest.mark.parametrize("pod_ends", ["after_the_handover", "before_the_handover"])
def test_kubernetes_a_new_engine_adopts_the_pod_of_an_abandoned_run(
    tmp_path: Path, pod_ends: str
) -> None:
    """A draining server abandons the run (stop with engine_lost): the pod keeps running; the
    next engine (its own client and watch, nothing in memory) adopts it by label instead of
    starting the attempt again, and the run succeeds with one attempt and one Job. When the
    pod finished before the next engine came (a slow restart), its result is taken as it is
    and its Job, pod and Secret are still removed (they were left behind before)."""
    first_setup = _setup("kubernetes", tmp_path)
    setup = next(first_setup)
    assert setup.fake is not None
    try:
        run_id = setup.run("handover")
        outcome: list[BaseException | RunStatus] = []

        def drive() -> None:
            try:
                outcome.append(setup.engine.execute(run_id))
            except Exception as exc:
                outcome.append(exc)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        setup.fake.wait_for(
            lambda: any(p["status"].get("phase") == "Running" for p in setup.fake.pods())
        )  # type: ignore[union-attr]
        setup.engine.abandoned = True  # the instance stops driving the run
        driver.join(30)
        assert type(outcome[0]).__name__ == "RunAbandoned"
        assert setup.fake.items("jobs"), "the Job must outlive the engine that started it"
        old = setup.engine.executor
        assert isinstance(old, KubernetesExecutor)
        old.watches.stop()
        if pod_ends == "before_the_handover":
            setup.fake.wait_for(
                lambda: [p["status"].get("phase") for p in setup.fake.pods()] == ["Succeeded"]
            )  # type: ignore[union-attr]
        client = KubernetesClient.for_url(setup.fake.url)
        successor = KubernetesExecutor(
            setup.engine.store,
            client,
            image=IMAGE,
            namespace="argosy-default",
            watches=PodWatches(client, timeout_seconds=30),
            work_dir=tmp_path,
        )
        engine = Engine(
            setup.metadata,
            setup.engine.store,
            successor,
            user="tester",
            cache_dir=str(tmp_path / "cache"),
            store_url=str(tmp_path / "blobs"),
            poll_interval=0.1,
            cache=False,
        )
        try:
            assert engine.execute(run_id) == RunStatus.SUCCEEDED
        finally:
            successor.watches.stop()
            successor.close()
            client.close()
        assert [(n, st) for n, st, _, _ in setup.attempts(run_id)] == [("steady", "succeeded")]
        created = [o for _, p, _, kind, o in setup.fake.history if p == "jobs" and kind == "ADDED"]
        assert len(created) == 1  # adopted, never started twice
        setup.fake.wait_for(
            lambda: not any(setup.fake.items(k) for k in ("jobs", "pods", "secrets"))
        )  # type: ignore[union-attr]
    finally:
        first_setup.close()


# -- Kubernetes only: a Python step in an image of its own ----------------------------------
IMAGE_STEPS = textwrap.dedent(
    """
    import sys
    from argosy import pipeline, step

    @step(image="registry.example.com/ml/plain@sha256:" + "ee" * 32)
    def where(n: int) -> dict:
        import argosy
        return {"python": sys.executable, "argosy": argosy.__file__, "doubled": n * 2}

    @step
    def total(info: dict) -> int:
        return info["doubled"] + 1

    @pipeline
    def in_image(n: int = 4) -> int:
        return total(info=where(n=n))

    @step(image="registry.example.com/ml/other-python@sha256:" + "ff" * 32)
    def elsewhere() -> int:
        return 1

    @pipeline
    def wrong_python() -> int:
        return elsewhere()
    """
)


def test_kubernetes_a_step_in_its_own_image_runs_with_the_runtime_copied_in(
    tmp_path: Path,
) -> None:
    """The pod of a step in its own image: an init container in the runtime image copies the
    Argosy runtime into an emptyDir; the step's image (here a Python with no Argosy
    installed) runs the launcher from that copy, mounted read-only, and its output flows on.
    An image whose Python is another minor version fails the task at once with one line
    naming the image and both Pythons. Nothing is left behind either way."""
    other = fk.other_python()
    if other is None:  # never skipped where CI is set: the mismatch is half of this test
        if os.environ.get("CI"):
            pytest.fail("no Python of another minor version on this machine (pyenv)")
        pytest.skip("no Python of another minor version on this machine")
    plain = fk.plain_python()
    steps = _setup("kubernetes", tmp_path)
    setup = next(steps)
    flows = setup.flows.parent / f"images_{uuid.uuid4().hex[:12]}.py"  # a module of its own
    flows.write_text(IMAGE_STEPS)
    assert setup.fake is not None
    fake = setup.fake
    fake.images["registry.example.com/ml/plain@sha256:" + "ee" * 32] = plain
    fake.images["registry.example.com/ml/other-python@sha256:" + "ff" * 32] = other
    try:
        setup.flows = flows
        run_id = setup.run("in_image", n=5)
        assert setup.engine.execute(run_id) == RunStatus.SUCCEEDED
        with setup.metadata.session() as s:
            rows = s.execute(
                select(Artifact.node_path, Artifact.value).where(Artifact.run_id == run_id)
            ).all()
        values: dict[str, Any] = {node: value for node, value in rows}
        info = values["where"]["json"]
        assert info["python"] == plain and info["doubled"] == 10
        assert "fake-kubelet-runtime-" in info["argosy"]  # the copy, not an installed Argosy
        assert values["total"] == {"json": 11}
        [pod, _] = [o for _, p, _, kind, o in fake.history if p == "pods" and kind == "ADDED"]
        [init] = pod["spec"]["initContainers"]
        [main] = pod["spec"]["containers"]
        assert (
            init["image"] == IMAGE and init["command"][-1] == "argosy.executors.kubernetes.bundle"
        )
        assert main["image"] == "registry.example.com/ml/plain@sha256:" + "ee" * 32
        assert main["command"] == ["python3", "/opt/argosy/boot.py"]
        assert {"name": "runtime", "mountPath": "/opt/argosy", "readOnly": True} in main[
            "volumeMounts"
        ]

        started = time.monotonic()
        run_id = setup.run("wrong_python")
        assert setup.engine.execute(run_id) == RunStatus.FAILED
        [(_, state, reason, error)] = setup.attempts(run_id)
        assert (state, reason) == ("failed", Reason.CONTAINER_ERROR)
        theirs = ".".join(Path(other).name.removeprefix("python").split(".")[:2])
        mine = f"{sys.version_info.major}.{sys.version_info.minor}"
        assert error is not None and "\n" not in error
        assert error.startswith(
            f"image registry.example.com/ml/other-python@sha256:{'ff' * 32} has Python {theirs}."
        )
        assert f"built for cpython {mine}" in error and error.endswith(
            f"use an image with Python {mine}"
        )
        assert time.monotonic() - started < 15
        fake.wait_for(lambda: not any(fake.items(k) for k in ("jobs", "pods", "secrets")))
    finally:
        steps.close()
