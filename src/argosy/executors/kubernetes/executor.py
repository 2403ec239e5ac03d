"""The Kubernetes executor: each attempt is a ``batch/v1`` Job (one pod) in the tenant's namespace.

Per attempt it creates a Secret (the invocation with the task token, and the step's declared
secrets, mounted as files) and a Job (``manifests.py``), then learns what becomes of the pod
from the one watch of that namespace (``watch.py``), never by polling. It ends an attempt:

- at the step's timeout (it deletes the Job; ``activeDeadlineSeconds`` is the cluster's
  backstop when no engine is left);
- when the image cannot be pulled (at once, with the image and the registry's message);
- when the pod stays unschedulable longer than ``unschedulable_seconds`` (with the
  scheduler's message), or its container cannot be created;
- on ``stop`` (cancel): the Job is deleted with foreground propagation.

What the pod became maps to the engine's reasons: ``memory_limit`` (OOMKilled), ``evicted``,
``node_lost``, ``timeout`` (deadline exceeded), ``image_pull``, ``unschedulable``,
``container_error`` (not created or started; the runtime copy failed; a step image's Python
is not the runtime's: ``bundle.py``), or the container's exit code / signal (the launcher's
result record decides success, as locally).

A Python step in an image of its own (``@step(image=...)``, pinned by digest) runs in that
image, with the Argosy runtime copied in by an init container (``manifests.attempt_job``,
``bundle.py``); its invocation names no image, so the launcher there runs the step itself.

The log is read from the API server while the pod runs and copied to the attempt's log
record every ``live_log_interval`` seconds and at the end, so it outlives the pod. The Job,
its pod and the Secret are deleted as soon as the attempt is settled; ``sweep`` removes what a
crashed server left. After a restart the engine asks :meth:`adopt`: a Job of the attempt
still there (found by its ``argosy.dev/attempt`` label) is watched again, not started anew;
``stop(..., "engine_lost")`` (a draining server) leaves the pod running for the next owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from argosy.errors import ExecutionError, NoRoomError, StoreError, UsageError
from argosy.executors.base import (
    AttemptExit,
    AttemptLaunch,
    Executor,
    ProcessIdentity,
    Usage,
)
from argosy.executors.kubernetes import bundle, manifests
from argosy.executors.kubernetes.client import KubernetesApiError, KubernetesClient
from argosy.executors.kubernetes.manifests import ATTEMPT_LABEL, JobOptions, Pool
from argosy.executors.kubernetes.watch import NamespaceWatch, PodSummary, PodWatches
from argosy.executors.local.capacity import CapacityLedger
from argosy.spec.validate import Capacity
from argosy.states import Reason
from argosy.stores.artifacts.blobs import ArtifactStore

if TYPE_CHECKING:
    from argosy.config import Settings

log = logging.getLogger("argosy.executors.kubernetes")

LOG_TAIL_LINES = 20
# the cluster as seen by the engine: it does not count cluster capacity (the scheduler and
# the autoscaler place pods); quotas still apply through the ledger
UNLIMITED = Capacity(cpu=1e6, memory=2**60, gpu=1024)
IMAGE_PULL_FAILURES = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
}
CONTAINER_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
NODE_LOST = {"NodeLost", "Shutdown", "Terminated", "NodeShutdown", "UnexpectedAdmissionError"}
EVICTIONS = {"EvictionByEvictionAPI", "PreemptionByScheduler", "TerminationByKubelet"}
# the container was created but could not be started (containerd: "StartError", with runc's
# "exec: ... executable file not found in $PATH"; docker: "ContainerCannotRun")
START_FAILURES = {"StartError", "ContainerCannotRun"}
STOP_REPORT_AFTER = manifests.STOP_GRACE_SECONDS + 15.0  # report a stopped attempt by then


@dataclass
class _Attempt:
    attempt_id: str
    namespace: str
    job: str
    log_key: str
    secrets: list[str]  # values, redacted from the log
    cpu: float
    memory: int | None
    gpu: int
    created: float  # monotonic
    deadline: float | None
    log_path: Path
    log: IO[str]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    pod: PodSummary | None = None
    pod_name: str | None = None
    stop_reason: str | None = None
    stop_message: str | None = None
    stopped_at: float | None = None
    log_mark: tuple[int, int] = (0, 0)  # (timestamp ns, lines at it) read so far
    published_at: float = 0.0
    published_size: int = 0
    reserved: bool = True
    step_image: str | None = None  # a Python step in an image of its own (bundle.py)


class KubernetesExecutor(Executor):
    """Runs the attempts of one tenant's runs as Jobs in the tenant's namespace."""

    def __init__(
        self,
        store: ArtifactStore,
        client: KubernetesClient,
        *,
        image: str,
        namespace: str | None = None,
        service_account: str = "argosy-task",
        pools: Mapping[str, Pool] | None = None,
        default_pool: str | None = None,
        unschedulable_seconds: float = 600.0,
        ttl_seconds: int = 3600,
        memory_margin: float = 1.25,
        live_log_interval: float | None = 3.0,
        capacity: Capacity = UNLIMITED,
        ledger: CapacityLedger | None = None,
        watches: PodWatches | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.tenant = store.tenant
        self.image = manifests.check_pinned(image)
        self.namespace = namespace or f"argosy-{self.tenant}"
        self.service_account = service_account
        self.pools = dict(pools or {})
        self.default_pool = default_pool
        self.unschedulable_seconds = unschedulable_seconds
        self.ttl_seconds = ttl_seconds
        self.memory_margin = memory_margin
        self.live_log_interval = live_log_interval
        self._capacity = capacity
        self.ledger = ledger or CapacityLedger(capacity)
        self.watches = watches or PodWatches.of(client)
        self._work = work_dir or _process_work_dir()  # the logs of running attempts
        self._attempts: dict[str, _Attempt] = {}
        self._dirty: set[str] = set()
        self._handed_over: list[AttemptExit] = []  # stop(..., engine_lost): reported by poll
        self._cond = threading.Condition()
        self._watch: NamespaceWatch | None = None

    # -- capacity ------------------------------------------------------------------------------
    @property
    def capacity(self) -> Capacity:
        return self._capacity

    def has_room(
        self, cpu: float, memory: int | None, gpu: int, besides: Usage | None = None
    ) -> bool:
        return self.ledger.fits(self.tenant, cpu, memory, gpu, besides)

    def running(self) -> int:
        return len(self._attempts)

    # -- the namespace's watch ---------------------------------------------------------------
    def _namespace_watch(self) -> NamespaceWatch:
        if self._watch is None:
            self._watch = self.watches.namespace(self.namespace)
            self._watch.subscribe(self._on_pod)
        return self._watch

    def _on_pod(self, pod: PodSummary) -> None:
        with self._cond:
            attempt = self._attempts.get(pod.attempt_id)
            if attempt is None:
                return
            if attempt.pod_name is not None and pod.name != attempt.pod_name and pod.deleted:
                return  # an older pod of the same attempt (there is none: backoffLimit 0)
            attempt.pod = pod
            attempt.pod_name = pod.name
            self._dirty.add(pod.attempt_id)
            self._cond.notify_all()

    # -- start ---------------------------------------------------------------------------------
    def _pool(self, name: str | None) -> Pool | None:
        name = name or self.default_pool
        if name is None:
            return None
        if name not in self.pools:
            known = ", ".join(sorted(self.pools)) or "none are configured"
            raise ExecutionError(
                f"node pool {name!r} is not in this deployment's pool map "
                f"(ARGOSY_KUBERNETES_POOLS): use one of {known}"
            )
        return self.pools[name]

    def start(self, launch: AttemptLaunch) -> ProcessIdentity:
        if launch.invocation.kind == "container":
            raise ExecutionError(
                f"{launch.node_path}: container steps do not run on the Kubernetes executor yet; "
                "run the command from a Python step in an image of your own, or use a local "
                "executor for this pipeline"
            )
        step_image = (launch.invocation.step.get("implementation") or {}).get("image")
        if step_image:
            try:
                manifests.check_pinned(str(step_image))
            except UsageError as exc:
                raise ExecutionError(f"{launch.node_path}: {exc}") from None
        pool = self._pool(launch.pool)
        if self.ledger.reserve(self.tenant, launch.cpu, launch.memory, launch.gpu) is None:
            raise NoRoomError(f"no room to start {launch.node_path}: the tenant's quota is used")
        try:
            return self._start(launch, pool)
        except BaseException:
            self.ledger.release(self.tenant, launch.cpu, launch.memory, ())
            raise

    def _start(self, launch: AttemptLaunch, pool: Pool | None) -> ProcessIdentity:
        watch = self._namespace_watch()
        invocation = launch.invocation.completed(
            scratch=f"{manifests.SCRATCH}/work", cache_dir=f"{manifests.SCRATCH}/cache"
        )
        step = invocation.step
        step_image = (step.get("implementation") or {}).get("image") or None
        if step_image:  # the pod runs in that image: there, the launcher runs the step itself
            implementation = {**step["implementation"], "image": None}
            invocation = invocation.completed(step={**step, "implementation": implementation})
        if self.store.cipher is not None:  # the tenant's data keys, never the KEK
            invocation = invocation.completed(encryption=self.store.cipher.task_document())
        doc = invocation.to_json()
        options = JobOptions(
            namespace=self.namespace,
            image=self.image,
            service_account=self.service_account,
            ttl_seconds=self.ttl_seconds,
            memory_margin=self.memory_margin,
            pool=pool,
        )
        job = manifests.attempt_job(
            tenant=self.tenant,
            attempt_id=launch.attempt_id,
            invocation=doc,
            cpu=launch.cpu,
            memory=launch.memory,
            gpu=launch.gpu,
            timeout=launch.timeout,
            env=launch.env,
            secret_names=sorted(launch.secrets),
            log_key=launch.log_key,
            options=options,
            pipeline=launch.pipeline,
            step_image=str(step_image) if step_image else None,
        )
        name = job["metadata"]["name"]
        secret = manifests.attempt_secret(
            name, self.namespace, job["metadata"]["labels"], doc, launch.secrets
        )
        attempt = self._track(
            launch.attempt_id,
            name,
            launch.log_key,
            list(launch.secrets.values()),
            launch.cpu,
            launch.memory,
            launch.gpu,
            launch.timeout,
            step_image=str(step_image) if step_image else None,
        )
        try:
            self._create(secret, launch.attempt_id)
            created = self._create(job, launch.attempt_id)
            uid = (created.get("metadata") or {}).get("uid")
            if uid:  # the Secret goes with the Job, even if we never get to delete it
                owner = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": uid,
                    "blockOwnerDeletion": False,
                }
                with contextlib.suppress(KubernetesApiError):
                    self.client.patch(
                        "Secret", self.namespace, name, {"metadata": {"ownerReferences": [owner]}}
                    )
        except BaseException:
            self._forget(launch.attempt_id)
            attempt.log.close()
            with contextlib.suppress(KubernetesApiError):
                self.client.delete("Secret", self.namespace, name)
            raise
        known = watch.get(launch.attempt_id)  # the pod may have been seen already
        if known is not None:
            self._on_pod(known)
        return ProcessIdentity(
            host=f"kubernetes:{self.namespace}/{name}", pid=0, pgid=0, started=time.time()
        )

    def _create(self, doc: dict[str, Any], attempt_id: str) -> dict[str, Any]:
        try:
            return self.client.create(doc)
        except KubernetesApiError as exc:
            if exc.status != 409:
                raise ExecutionError(
                    f"the API server refused the {doc['kind']} of attempt {attempt_id}: "
                    f"{exc.status} {exc.reason}: {exc.message}"
                ) from None
            # it exists: ours if it carries this attempt's label (a repeated start)
            found = self.client.get(doc["kind"], self.namespace, doc["metadata"]["name"])
            labels = ((found or {}).get("metadata") or {}).get("labels") or {}
            if labels.get(ATTEMPT_LABEL) != manifests.label_value(attempt_id):
                raise ExecutionError(
                    f"a {doc['kind']} named {doc['metadata']['name']} already exists in "
                    f"{self.namespace} and is not attempt {attempt_id}'s"
                ) from None
            return found or {}

    def _track(
        self,
        attempt_id: str,
        name: str,
        log_key: str,
        secrets: list[str],
        cpu: float,
        memory: int | None,
        gpu: int,
        timeout: float | None,
        elapsed: float = 0.0,
        step_image: str | None = None,
    ) -> _Attempt:
        now = time.monotonic() - elapsed
        path = self._work / f"{attempt_id}.jsonl"
        attempt = _Attempt(
            attempt_id=attempt_id,
            namespace=self.namespace,
            job=name,
            log_key=log_key,
            secrets=[s for s in secrets if s],
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            created=now,
            deadline=now + timeout if timeout else None,
            log_path=path,
            log=path.open("a", encoding="utf-8"),
            step_image=step_image,
        )
        with self._cond:
            self._attempts[attempt_id] = attempt
        return attempt

    # -- watch ---------------------------------------------------------------------------------
    def poll(self, timeout: float) -> list[AttemptExit]:
        end = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._dirty and not self._handed_over:
                left = end - time.monotonic()
                due = self._next_due()
                if due is not None:
                    left = min(left, due - time.monotonic())
                if left <= 0:
                    break
                self._cond.wait(left)
            self._dirty.clear()
            attempts = list(self._attempts.values())
            exits, self._handed_over = self._handed_over, []
        for attempt in attempts:
            ended = self._check(attempt)
            if ended is not None:
                exits.append(ended)
        return exits

    def _next_due(self) -> float | None:
        """The earliest time something must be checked without an event (deadlines, the
        unschedulable timer, live logs, a stop's fallback)."""
        times: list[float] = []
        for a in self._attempts.values():
            if a.deadline is not None and a.stop_reason is None:
                times.append(a.deadline)
            if a.stop_reason is None and (a.pod is None or a.pod.unschedulable):
                times.append(a.created + self.unschedulable_seconds)
            if a.stopped_at is not None:
                times.append(a.stopped_at + STOP_REPORT_AFTER)
            if self.live_log_interval and a.pod is not None and a.pod.running_since:
                times.append(a.published_at + self.live_log_interval)
        return min(times) if times else None

    def _check(self, a: _Attempt) -> AttemptExit | None:
        """Decide on one attempt: end it, report it, or leave it running."""
        pod, now = a.pod, time.monotonic()
        if a.stop_reason is not None:
            if pod is None or pod.deleted or pod.terminated or pod.phase in ("Succeeded", "Failed"):
                return self._finish(a)
            if a.stopped_at is not None and now - a.stopped_at > STOP_REPORT_AFTER:
                return self._finish(a)
            return None
        if pod is not None and (pod.deleted or pod.phase in ("Succeeded", "Failed")):
            return self._finish(a)
        if a.deadline is not None and now >= a.deadline:
            self.stop(a.attempt_id, Reason.TIMEOUT)
            return self._check(a)
        if pod is not None and pod.waiting_reason in IMAGE_PULL_FAILURES:
            self._stop(
                a,
                Reason.IMAGE_PULL,
                f"cannot pull the image {pod.image}: {pod.waiting_message or pod.waiting_reason}",
            )
            return self._check(a)
        if pod is not None and pod.waiting_reason in CONTAINER_FAILURES:
            detail = f"{pod.waiting_reason}: {pod.waiting_message or ''}".rstrip(": ")
            self._stop(a, Reason.CONTAINER_ERROR, _cannot_start(a.step_image, detail))
            return self._check(a)
        if (pod is None or pod.unschedulable) and now - a.created >= self.unschedulable_seconds:
            waited = f"{self.unschedulable_seconds:g} s"
            if pod is None:
                why = (
                    f"no pod was created for Job {a.job} in {waited} (is the namespace's "
                    "ResourceQuota used up? see 'kubectl describe job')"
                )
            else:
                why = f"the pod could not be scheduled for {waited}: {pod.unschedulable}"
            self._stop(a, Reason.UNSCHEDULABLE, why)
            return self._check(a)
        live = self.live_log_interval
        if (
            pod is not None
            and pod.running_since
            and live is not None
            and now - a.published_at >= live
        ):
            self._read_log(a)  # the log so far, every interval
            self._publish(a, now)
        return None

    # -- ending --------------------------------------------------------------------------------
    def _outcome(self, a: _Attempt) -> tuple[int | None, int | None, str | None, str | None]:
        """(exit code, signal, reason, message) of an attempt whose pod ended or is gone."""
        pod = a.pod
        exit_code = sig = None
        t = pod.terminated if pod is not None else None
        if t is not None:
            if t.signal:
                sig = int(t.signal)
            elif t.exit_code > 128 and t.exit_code - 128 < signal.NSIG:
                sig = t.exit_code - 128  # a runtime reports "killed by signal N" as 128+N
            else:
                exit_code = t.exit_code
        if a.stop_reason is not None:
            return exit_code, sig, a.stop_reason, a.stop_message
        if pod is None:
            return None, None, Reason.NODE_LOST, "the pod disappeared before it was seen"
        status_reason = pod.reason or ""
        disruption = pod.disruption or ""
        if status_reason == "Evicted" or disruption.startswith(tuple(EVICTIONS)):
            return (
                exit_code,
                sig,
                Reason.EVICTED,
                (f"the pod was evicted: {pod.message or disruption or 'no message'}"),
            )
        if status_reason == "DeadlineExceeded":
            return (
                exit_code,
                sig,
                Reason.TIMEOUT,
                (f"the Job's deadline was exceeded: {pod.message or ''}".rstrip(": ")),
            )
        if status_reason in NODE_LOST or disruption.startswith(
            ("DeletionByTaintManager", "DeletionByPodGC")
        ):
            return (
                exit_code,
                sig,
                Reason.NODE_LOST,
                (f"the pod's node was lost: {pod.message or disruption or status_reason}"),
            )
        if pod.deleting:  # deleted, not by us: the Job's deadline, or its node went away
            if self._job_status(a) == "DeadlineExceeded":
                return (
                    exit_code,
                    sig,
                    Reason.TIMEOUT,
                    ("the Job's deadline (activeDeadlineSeconds) was exceeded"),
                )
            return (
                exit_code,
                sig,
                Reason.NODE_LOST,
                (
                    f"the pod {pod.name} was deleted while it ran (its node was lost, or it was "
                    "deleted from outside Argosy)"
                ),
            )
        if pod.init_failed is not None:
            i = pod.init_failed
            said = (i.message or "").strip().splitlines()
            return (
                exit_code,
                sig,
                Reason.CONTAINER_ERROR,
                (
                    f"the init container that copies the Argosy runtime into the pod "
                    f"({manifests.INIT_CONTAINER}, image {self.image}) failed "
                    f"({i.reason or 'Error'}, exit {i.exit_code})"
                    + (f": {said[-1]}" if said else "")
                ),
            )
        if t is not None and t.reason in START_FAILURES:
            why = f"{t.reason}: {t.message or ''}".rstrip(": ")
            return exit_code, sig, Reason.CONTAINER_ERROR, _cannot_start(a.step_image, why)
        if t is not None and a.step_image and t.exit_code == bundle.WRONG_PYTHON:
            line = _boot_line(t.message, a.tail)
            if line is not None:  # the image's Python is not the runtime's
                return exit_code, sig, Reason.CONTAINER_ERROR, line
        if t is not None and t.reason == "OOMKilled":
            return (
                None,
                signal.SIGKILL,
                Reason.MEMORY_LIMIT,
                (
                    "the container was killed for using more than its memory limit (OOMKilled); "
                    "raise memory= on the step"
                ),
            )
        return exit_code, sig, None, None

    def _job_status(self, a: _Attempt) -> str | None:
        """The reason of the Job's Failed condition, if it has one."""
        try:
            job = self.client.get("Job", a.namespace, a.job)
        except KubernetesApiError:
            return None
        for cond in ((job or {}).get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Failed" and cond.get("status") == "True":
                return str(cond.get("reason") or "")
        return None

    def _forget(self, attempt_id: str) -> None:
        """Drop an attempt; with none left, stop listening to the namespace's watch (the
        executor of a finished run must not stay subscribed in a long-lived server)."""
        with self._cond:
            self._attempts.pop(attempt_id, None)
            idle = not self._attempts
        if idle and self._watch is not None:
            self._watch.unsubscribe(self._on_pod)
            self._watch = None

    def _finish(self, a: _Attempt) -> AttemptExit:
        self._forget(a.attempt_id)
        if a.pod is not None and not a.pod.deleted:
            self._read_log(a)  # the rest of it, while the pod is still there
        exit_code, sig, reason, message = self._outcome(a)
        if message and reason is not None:
            self._write(a, f"argosy: {message}", stream="err")
        self._end_log(a, keep=True)
        self._delete(a)
        ended_at = datetime.now(UTC)
        self._release(a)
        return AttemptExit(
            attempt_id=a.attempt_id,
            exit_code=exit_code,
            signal=sig,
            reason=reason,
            wall_time=_wall_time(a.pod),
            cpu_time=None,
            peak_memory=None,
            log_tail=list(a.tail),
            message=message,
            ended_at=ended_at,
        )

    def _end_log(self, a: _Attempt, *, keep: bool) -> None:
        """Close the attempt's log file and remove it, stored first as its log record when
        ``keep`` (a handed-over attempt's log goes on with its next owner)."""
        a.log.close()
        if keep and a.log_key:
            try:
                self.store.put_record_file(a.log_key, a.log_path)
            except (OSError, StoreError) as exc:
                log.warning("attempt %s: could not store its log: %s", a.attempt_id, exc)
        a.log_path.unlink(missing_ok=True)

    def _release(self, a: _Attempt) -> None:
        """Give the attempt's share of the tenant's quota back (once)."""
        if a.reserved:
            self.ledger.release(self.tenant, a.cpu, a.memory, ())
            a.reserved = False

    def _remove(self, kind: str, name: str) -> bool:
        """Delete an attempt's Job (foreground: its pod goes first) or Secret; False when it
        was gone already."""
        propagation = "Foreground" if kind == "Job" else None
        return self.client.delete(kind, self.namespace, name, propagation=propagation)

    def _delete(self, a: _Attempt) -> None:
        """The Job (its pod with it) and the Secret: nothing is left behind."""
        for kind in ("Job", "Secret"):
            try:
                self._remove(kind, a.job)
            except KubernetesApiError as exc:  # the sweeper removes it later
                log.warning("could not delete %s %s/%s: %s", kind, a.namespace, a.job, exc)

    # -- stop ----------------------------------------------------------------------------------
    def stop(self, attempt_id: str, reason: str) -> None:
        a = self._attempts.get(attempt_id)
        if a is None:
            return
        if reason == Reason.ENGINE_LOST:  # a draining server: the next owner adopts the pod
            self._forget(attempt_id)
            with self._cond:
                self._handed_over.append(
                    AttemptExit(
                        attempt_id,
                        None,
                        None,
                        Reason.ENGINE_LOST,
                        None,
                        None,
                        None,
                        list(a.tail),
                        "handed over: the pod keeps running",
                    )
                )
                self._cond.notify_all()
            self._end_log(a, keep=False)
            self._release(a)
            return
        messages: dict[str, str] = {
            Reason.TIMEOUT: "ran past its timeout; the Job was deleted",
            Reason.CANCELLED: "the run was cancelled; the Job was deleted",
        }
        self._stop(a, reason, messages.get(reason, reason))

    def _stop(self, a: _Attempt, reason: str, message: str) -> None:
        if a.stop_reason is not None:
            return
        a.stop_reason, a.stop_message, a.stopped_at = reason, message, time.monotonic()
        if a.pod is not None and not a.pod.deleted:
            self._read_log(a)
        try:
            self._remove("Job", a.job)
        except KubernetesApiError as exc:
            log.warning("could not delete Job %s/%s: %s", a.namespace, a.job, exc)
        with self._cond:
            self._dirty.add(a.attempt_id)
            self._cond.notify_all()

    # -- recovery ------------------------------------------------------------------------------
    def _jobs_of(self, attempt_id: str) -> list[dict[str, Any]]:
        selector = f"{manifests.SELECTOR},{ATTEMPT_LABEL}={manifests.label_value(attempt_id)}"
        jobs, _ = self.client.list("Job", self.namespace, selector)
        return jobs

    def adopt(self, attempt_id: str, log_key: str) -> bool:
        """Watch an attempt started by an engine that is gone, if its Job is still there."""
        if attempt_id in self._attempts:
            return True
        jobs = [j for j in self._jobs_of(attempt_id) if not j["metadata"].get("deletionTimestamp")]
        if not jobs:
            return False
        job = jobs[0]
        meta = job["metadata"]
        annotations = meta.get("annotations") or {}
        timeout_text = annotations.get(f"{manifests.GROUP}/timeout") or ""
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        requests = (container.get("resources") or {}).get("requests") or {}
        inits = [c.get("name") for c in pod_spec.get("initContainers") or []]
        step_image = container.get("image") if manifests.INIT_CONTAINER in inits else None
        started = _parse_time(meta.get("creationTimestamp"))
        elapsed = max(0.0, time.time() - started) if started else 0.0
        secrets = self._secret_values(meta["name"])
        cpu = _cpu(requests.get("cpu", "1"))
        memory = _memory(requests.get("memory"))
        gpu = int(requests.get(manifests.GPU_RESOURCE, 0))
        reserved = self.ledger.reserve(self.tenant, cpu, memory, gpu) is not None
        self._namespace_watch().ready.wait(10.0)
        attempt = self._track(
            attempt_id,
            meta["name"],
            log_key or annotations.get(f"{manifests.GROUP}/log-key", ""),
            secrets,
            cpu,
            memory,
            gpu,
            float(timeout_text) if timeout_text else None,
            elapsed,
            step_image=step_image,
        )
        attempt.reserved = reserved
        known = self._namespace_watch().get(attempt_id)
        if known is not None:
            self._on_pod(known)
        else:
            with self._cond:
                self._dirty.add(attempt.attempt_id)
        return True

    def _secret_values(self, name: str) -> list[str]:
        import base64

        try:
            secret = self.client.get("Secret", self.namespace, name)
        except KubernetesApiError:
            return []
        data = (secret or {}).get("data") or {}
        return [
            base64.b64decode(v).decode("utf-8", "replace")
            for k, v in data.items()
            if k.startswith("secret.")
        ]

    def end_orphan(self, attempt_id: str, identity: ProcessIdentity | None) -> bool:
        found = False
        for job in self._jobs_of(attempt_id):
            if job["metadata"].get("deletionTimestamp"):
                continue  # already going
            found |= self._remove("Job", job["metadata"]["name"])
        return self._remove("Secret", manifests.job_name(attempt_id)) or found

    def adopt_log(self, attempt_id: str, log_key: str) -> list[str]:
        """Store what an orphaned attempt's pod logged (if the pod is still there)."""
        pod = self._namespace_watch().get(attempt_id)
        if pod is None or pod.deleted:
            return []
        a = self._track(attempt_id, manifests.job_name(attempt_id), log_key, [], 0, None, 0, None)
        self._forget(attempt_id)
        a.pod, a.pod_name = pod, pod.name
        self._read_log(a)
        self._end_log(a, keep=True)
        return list(a.tail)

    def sweep(self, is_live: Callable[[str], bool]) -> list[str]:
        """Delete the Jobs and Secrets of attempts that are not live (the sweeper's hook);
        returns the attempt ids whose objects were removed."""
        removed: list[str] = []
        for kind in ("Job", "Secret"):
            items, _ = self.client.list(kind, self.namespace, manifests.SELECTOR)
            for item in items:
                meta = item["metadata"]
                attempt = (meta.get("labels") or {}).get(ATTEMPT_LABEL, "")
                if not attempt or attempt in self._attempts or is_live(attempt):
                    continue
                if self._remove(kind, meta["name"]) and attempt not in removed:
                    removed.append(attempt)
        return removed

    def close(self) -> None:
        """Stop listening (running attempts are left to the cluster and a later adopt)."""
        if self._watch is not None:
            self._watch.unsubscribe(self._on_pod)
            self._watch = None

    # -- construction from settings ----------------------------------------------------------
    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: ArtifactStore,
        *,
        quotas: Callable[[str], Mapping[str, Any] | None] | None = None,
    ) -> KubernetesExecutor:
        """The executor of a server (``ARGOSY_EXECUTOR=kubernetes``): one API client, one
        watch per namespace and one quota ledger per process, shared by every run."""
        if not settings.kubernetes_runtime_image:
            raise UsageError(
                "ARGOSY_EXECUTOR=kubernetes needs ARGOSY_KUBERNETES_RUNTIME_IMAGE: the task "
                "image, pinned by digest (REPO@sha256:...); see docs/deploy-kubernetes.md"
            )
        tenant = store.tenant
        default_pool = settings.kubernetes_default_pool
        pools = manifests.parse_pools(settings.kubernetes_pools)
        if default_pool is not None and default_pool not in pools:
            raise UsageError(
                f"ARGOSY_KUBERNETES_DEFAULT_POOL={default_pool!r} is not in "
                f"ARGOSY_KUBERNETES_POOLS ({', '.join(sorted(pools)) or 'empty'})"
            )
        client, ledger = _process_client(), _process_ledger(quotas)
        return cls(
            store,
            client,
            image=settings.kubernetes_runtime_image,
            namespace=manifests.namespace_for(settings.kubernetes_namespace, tenant),
            service_account=settings.kubernetes_service_account.format(tenant=tenant),
            pools=pools,
            default_pool=default_pool,
            unschedulable_seconds=settings.kubernetes_unschedulable_seconds,
            ttl_seconds=settings.kubernetes_job_ttl_seconds,
            memory_margin=settings.memory_margin,
            ledger=ledger,
        )

    # -- logs ----------------------------------------------------------------------------------
    def _read_log(self, a: _Attempt) -> None:
        """Append what the pod logged since the last read (timestamps dedupe the overlap)."""
        if a.pod_name is None:
            return
        since = None
        if a.log_mark[0]:
            since = int(time.time() - a.log_mark[0] / 1e9) + 2
        try:
            text = self.client.pod_log(a.namespace, a.pod_name, since_seconds=since)
        except KubernetesApiError as exc:
            if exc.status not in (400, 404):  # 400: the container has not started yet
                log.warning("log of %s: %s", a.pod_name, exc)
            return
        mark_ns, mark_count = a.log_mark
        seen_at = 0
        for line in text.splitlines():
            stamp, _, message = line.partition(" ")
            ns = _parse_ns(stamp)
            if ns is None:
                ns, message = mark_ns, line
            if ns < mark_ns:
                continue
            if ns == mark_ns:
                seen_at += 1
                if seen_at <= mark_count:
                    continue
                mark_count += 1
            else:
                mark_ns, mark_count, seen_at = ns, 1, 1
            self._write(a, message, stamp=stamp)
        a.log_mark = (mark_ns, mark_count)
        a.log.flush()

    def _write(self, a: _Attempt, text: str, *, stamp: str = "", stream: str = "out") -> None:
        for secret in a.secrets:
            text = text.replace(secret, "***")
        when = stamp or datetime.now(UTC).isoformat()
        a.log.write(json.dumps({"t": when, "s": stream, "m": text}) + "\n")
        a.tail.append(text)

    def _publish(self, a: _Attempt, now: float) -> None:
        a.published_at = now
        if not a.log_key:
            return
        a.log.flush()
        try:
            size = a.log_path.stat().st_size
            if size != a.published_size:
                self.store.put_record_file(a.log_key, a.log_path)
                a.published_size = size
        except (OSError, StoreError):
            pass  # the next interval tries again


_PROCESS: dict[str, Any] = {}
_PROCESS_LOCK = threading.Lock()


def _per_process(name: str, make: Callable[[], Any]) -> Any:
    """One ``name`` per server process (made on first use), shared by every run's executor."""
    with _PROCESS_LOCK:
        if name not in _PROCESS:
            _PROCESS[name] = make()
        return _PROCESS[name]


def _process_client() -> KubernetesClient:
    client: KubernetesClient = _per_process("client", KubernetesClient.connect)
    return client


def _process_ledger(quotas: Callable[[str], Mapping[str, Any] | None] | None) -> CapacityLedger:
    """Quotas across every run of this process (the cluster's capacity is not counted)."""
    ledger: CapacityLedger = _per_process(
        "ledger", lambda: CapacityLedger(UNLIMITED, quotas=quotas)
    )
    return ledger


def _process_work_dir() -> Path:
    work: Path = _per_process("work", lambda: Path(tempfile.mkdtemp(prefix="argosy-k8s-")))
    return work


def _cannot_start(step_image: str | None, detail: str) -> str:
    """The error of a container that could not start; for a step in an image of its own the
    likely cause first (``python3`` is what that container runs)."""
    if step_image and "python3" in detail:
        return (
            f"image {step_image} has no python3 on its PATH (the container could not start: "
            f"{detail}): a Python step in an image needs python3 there, of the runtime image's "
            "Python version"
        )
    return f"the container cannot start: {detail}"


def _boot_line(message: str | None, tail: Iterable[str]) -> str | None:
    """The boot script's one line (``bundle.MARK``) from the termination message (the log's
    end, ``FallbackToLogsOnError``) or the log tail, without its mark."""
    for text in [*(message or "").splitlines()[::-1], *list(tail)[::-1]]:
        if text.startswith(bundle.MARK):
            return text[len(bundle.MARK) :].strip()
    return None


def _parse_ns(stamp: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp with up to 9 fraction digits."""
    if len(stamp) < 20 or stamp[4] != "-" or not stamp.endswith("Z"):
        return None
    base, _, fraction = stamp[:-1].partition(".")
    try:
        seconds = datetime.fromisoformat(base).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    digits = (fraction + "000000000")[:9] if fraction.isdigit() else "0"
    return int(seconds) * 1_000_000_000 + int(digits)


def _parse_time(stamp: Any) -> float | None:
    if not stamp:
        return None
    ns = _parse_ns(str(stamp))
    return ns / 1e9 if ns is not None else None


def _wall_time(pod: PodSummary | None) -> float | None:
    if pod is None or pod.terminated is None:
        return None
    start, end = _parse_time(pod.terminated.started_at), _parse_time(pod.terminated.finished_at)
    return end - start if start is not None and end is not None else None


def _cpu(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _memory(text: str | None) -> int | None:
    if not text:
        return None
    from argosy.units import parse_memory

    return parse_memory(text)
