"""One watch per namespace of Argosy's task pods, shared by every executor of the process.

List once, then watch from the list's resourceVersion with bookmarks (so a resumed watch
starts near the present, not from an old version); when the server ends a watch request it
is resumed from the last version seen; when the version has expired (410 Gone) the pods are
listed again and the difference is handed on (a pod gone meanwhile is reported deleted).

Each pod is kept as a small :class:`PodSummary` (what the executor decides on), not as the
full object: memory stays flat with thousands of pods (see ``benchmarks/kubernetes.py``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argosy.executors.kubernetes.client import KubernetesClient, WatchExpired
from argosy.executors.kubernetes.manifests import (
    ATTEMPT_LABEL,
    CONTAINER,
    INIT_CONTAINER,
    SELECTOR,
)

log = logging.getLogger("argosy.executors.kubernetes")

RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class Terminated:
    exit_code: int
    signal: int | None
    reason: str | None
    message: str | None
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True, slots=True)
class PodSummary:
    """What the executor needs to know of one task pod."""

    name: str
    attempt_id: str
    resource_version: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    reason: str | None = None  # status.reason: Evicted, DeadlineExceeded, NodeLost, ...
    message: str | None = None
    deleting: bool = False  # metadata.deletionTimestamp is set
    deleted: bool = False  # gone from the API server
    unschedulable: str | None = None  # the scheduler's message while it cannot place the pod
    disruption: str | None = None  # DisruptionTarget condition: "REASON: message"
    waiting_reason: str | None = None
    waiting_message: str | None = None
    running_since: str | None = None
    terminated: Terminated | None = None
    image: str | None = None
    init_failed: Terminated | None = None  # the init container that copies the runtime failed

    def gone(self) -> PodSummary:
        return PodSummary(
            self.name,
            self.attempt_id,
            self.resource_version,
            self.phase,
            self.reason,
            self.message,
            True,
            True,
            self.unschedulable,
            self.disruption,
            self.waiting_reason,
            self.waiting_message,
            self.running_since,
            self.terminated,
            self.image,
            self.init_failed,
        )


def _terminated(t: dict[str, Any]) -> Terminated:
    """A container status's ``terminated`` state."""
    return Terminated(
        int(t.get("exitCode", 0)), t.get("signal"), t.get("reason"), t.get("message"),
        t.get("startedAt"), t.get("finishedAt"),
    )  # fmt: skip


def summarize(pod: dict[str, Any], deleted: bool = False) -> PodSummary | None:
    """The summary of a pod document (None for a pod that is not an Argosy task's)."""
    meta = pod.get("metadata") or {}
    attempt = (meta.get("labels") or {}).get(ATTEMPT_LABEL)
    if not attempt:
        return None
    status = pod.get("status") or {}
    unschedulable = disruption = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            if cond.get("reason") == "Unschedulable":
                unschedulable = cond.get("message") or "the scheduler cannot place the pod"
        elif cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            disruption = f"{cond.get('reason')}: {cond.get('message') or ''}".rstrip(": ")
    waiting_reason = waiting_message = running_since = None
    terminated = None
    image = None
    for c in status.get("containerStatuses") or []:
        if c.get("name") != CONTAINER:
            continue
        image = c.get("image")
        state = c.get("state") or {}
        if "waiting" in state:
            waiting_reason = state["waiting"].get("reason")
            waiting_message = state["waiting"].get("message")
        if "running" in state:
            running_since = state["running"].get("startedAt")
        if "terminated" in state:
            terminated = _terminated(state["terminated"])
    init_failed = None
    for c in status.get("initContainerStatuses") or []:
        if c.get("name") != INIT_CONTAINER:
            continue
        state = c.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating") and (
            waiting_reason in (None, "PodInitializing", "ContainerCreating")
        ):  # the step's container waits for it: what keeps the pod back is the init's
            waiting_reason, waiting_message = waiting.get("reason"), waiting.get("message")
            image = c.get("image")
        t = state.get("terminated")
        if t and int(t.get("exitCode", 0)) != 0:
            init_failed = _terminated(t)
    if image is None:
        for c in (pod.get("spec") or {}).get("containers") or []:
            if c.get("name") == CONTAINER:
                image = c.get("image")
    return PodSummary(
        name=str(meta.get("name")),
        attempt_id=attempt,
        resource_version=str(meta.get("resourceVersion", "")),
        phase=str(status.get("phase") or "Pending"),
        reason=status.get("reason"),
        message=status.get("message"),
        deleting=bool(meta.get("deletionTimestamp")) or deleted,
        deleted=deleted,
        unschedulable=unschedulable,
        disruption=disruption,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        running_since=running_since,
        terminated=terminated,
        image=image,
        init_failed=init_failed,
    )


Listener = Callable[[PodSummary], None]


@dataclass
class WatchStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    expired: int = 0
    errors: int = 0


class NamespaceWatch:
    """The task pods of one namespace, kept current by one watch."""

    def __init__(self, client: KubernetesClient, namespace: str, timeout_seconds: int) -> None:
        self.client = client
        self.namespace = namespace
        self.timeout_seconds = timeout_seconds
        self.pods: dict[str, PodSummary] = {}  # attempt id -> its pod
        self.resource_version = ""
        self.stats = WatchStats()
        self.ready = threading.Event()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"argosy-k8s-watch-{namespace}", daemon=True
        )
        self._thread.start()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def get(self, attempt_id: str) -> PodSummary | None:
        with self._lock:
            return self.pods.get(attempt_id)

    def stop(self) -> None:
        self._stopped.set()

    def _emit(self, summary: PodSummary) -> None:
        with self._lock:
            if summary.deleted:
                known = self.pods.get(summary.attempt_id)
                if known is not None and known.name == summary.name:
                    del self.pods[summary.attempt_id]
            else:
                self.pods[summary.attempt_id] = summary
            listeners = list(self._listeners)
        for listener in listeners:
            listener(summary)

    def _relist(self) -> None:
        items, version = self.client.list("Pod", self.namespace, SELECTOR)
        self.stats.lists += 1
        fresh = {s.attempt_id: s for s in map(summarize, items) if s is not None}
        with self._lock:
            vanished = [s for a, s in self.pods.items() if a not in fresh]
        for summary in vanished:  # deleted while we were not watching
            self._emit(summary.gone())
        for summary in fresh.values():
            self._emit(summary)
        self.resource_version = version
        self.ready.set()

    def _run(self) -> None:
        must_list = True
        failures = 0
        while not self._stopped.is_set():
            try:
                if must_list:
                    self._relist()
                    must_list = False
                self.stats.watches += 1
                for event in self.client.watch(
                    "Pod", self.namespace, SELECTOR, self.resource_version, self.timeout_seconds
                ):
                    failures = 0
                    if self._stopped.is_set():
                        return
                    self._handle(event)
            except WatchExpired:
                self.stats.expired += 1
                must_list = True
            except Exception as exc:  # the API server is unreachable for now: retry
                self.stats.errors += 1
                log.warning("watch of pods in %s: %s; retrying", self.namespace, exc)
                self._stopped.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                if failures >= len(RETRY_SECONDS):
                    must_list = True

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.stats.events += 1
            summary = summarize(obj, deleted=kind == "DELETED")
            if summary is not None:
                self._emit(summary)
        if version:
            self.resource_version = version


class PodWatches:
    """The namespace watches of one client (one per namespace, started on first use)."""

    _shared: weakref.WeakKeyDictionary[KubernetesClient, PodWatches] = weakref.WeakKeyDictionary()
    _shared_lock = threading.Lock()

    def __init__(self, client: KubernetesClient, timeout_seconds: int = 290) -> None:
        self.client = client
        self.timeout_seconds = timeout_seconds
        self._watches: dict[str, NamespaceWatch] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, client: KubernetesClient) -> PodWatches:
        """The process-wide watches of ``client``."""
        with cls._shared_lock:
            watches = cls._shared.get(client)
            if watches is None:
                watches = cls._shared[client] = cls(client)
            return watches

    def namespace(self, namespace: str) -> NamespaceWatch:
        with self._lock:
            watch = self._watches.get(namespace)
            if watch is None:
                watch = self._watches[namespace] = NamespaceWatch(
                    self.client, namespace, self.timeout_seconds
                )
            return watch

    def stop(self) -> None:
        with self._lock:
            for watch in self._watches.values():
                watch.stop()
            self._watches.clear()
