"""A FAKE Kubernetes API server, hand-written for the tests (no cluster exists here).

It is not Kubernetes. It speaks the API's wire format at the HTTP boundary, written from the
Kubernetes API reference (https://kubernetes.io/docs/reference/kubernetes-api/ and "API
Concepts": efficient detection of changes, resource versions, watch bookmarks, 410 Gone),
so the executor's real client code runs against it unchanged:

- JSON bodies; ``Status`` documents for errors: 404 NotFound, 409 AlreadyExists, 410 Gone
  (Expired), 422 Invalid (bodies are checked against the official schemas with
  ``kubernetes-validate`` and against the name/label rules);
- one global resourceVersion; lists carry it; ``?watch=true&resourceVersion=N`` streams the
  events after N as chunked JSON lines, with ``BOOKMARK`` events when
  ``allowWatchBookmarks=true``, ending after ``timeoutSeconds``; a version older than the
  retained history gets an ``ERROR`` event with a 410 ``Status`` (``compact()``), and
  ``expire_watches()`` ends open watches that way;
- list pagination (``limit``/``continue``), label selectors (``a=b``, ``a!=b``, ``a``);
- DELETE with ``propagationPolicy`` (Foreground: the Job waits, with a deletionTimestamp and
  the foregroundDeletion finalizer, until its pods are gone; Background; Orphan), and the
  garbage collector removing objects whose owner (``ownerReferences``) is gone;
- PATCH as JSON merge patch and as server-side apply (create or update);
- pod logs (``/log?timestamps=true&sinceSeconds=N``).

Behind it, simplified controllers: a Job controller (one pod per Job, status and conditions,
``activeDeadlineSeconds``), and per pod a *behaviour* standing in for the scheduler and the
kubelet. The default behaviour, :class:`Run`, really runs the pod's init containers, in
order, and then its container's command as local processes: an image's ``python``/``python3``
is ``python`` (this interpreter) unless ``images`` names another interpreter for that image
(or none: the container then cannot start, as containerd's ``StartError``), and each volume
(Secret, emptyDir) is a temporary folder, shared by the containers that mount it, that
replaces its mount path in the command, arguments, environment and working directory; a
container that fails gets the end of its log as its termination message where its
``terminationMessagePolicy`` is ``FallbackToLogsOnError``. Scripted behaviours reproduce what a cluster reports when the scheduler
cannot place a pod, an image cannot be pulled, the kernel OOM-kills a container, a pod is
evicted, a node is lost, a container exits with a code or is killed by a signal.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from queue import Empty, Queue
from typing import Any
from urllib.parse import parse_qs, urlsplit

KUBERNETES_VERSION = "1.33"  # the schemas the fake validates against (kubernetes-validate)

# plural -> (kind, apiVersion, list kind)
RESOURCES: dict[str, tuple[str, str]] = {
    "namespaces": ("Namespace", "v1"),
    "pods": ("Pod", "v1"),
    "secrets": ("Secret", "v1"),
    "serviceaccounts": ("ServiceAccount", "v1"),
    "resourcequotas": ("ResourceQuota", "v1"),
    "limitranges": ("LimitRange", "v1"),
    "jobs": ("Job", "batch/v1"),
    "rolebindings": ("RoleBinding", "rbac.authorization.k8s.io/v1"),
    "networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1"),
}
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)"
    r"(?:/namespaces/(?P<ns>[a-z0-9-]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?P<sub>/log)?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_nano() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            doc["details"] = self.details
        return doc


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class _Watcher:
    plural: str
    namespace: str | None
    selector: str
    queue: Queue[dict[str, Any] | None] = field(default_factory=Queue)


@dataclass
class PodRuntime:
    """The fake kubelet's side of one pod."""

    stop: threading.Event = field(default_factory=threading.Event)
    log: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line)
    folders: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None


Behaviour = Callable[["FakeKubernetes", str, str], None]  # (fake, namespace, pod name)


class FakeKubernetes:
    """The fake API server, its controllers and its kubelet (see the module docstring)."""

    def __init__(
        self,
        *,
        behaviour: Callable[[dict[str, Any]], Behaviour] | None = None,
        validate: bool = True,
        bookmark_seconds: float = 0.5,
        python: str = sys.executable,
        images: dict[str, str | None] | None = None,
    ) -> None:
        self.behaviour = behaviour or (lambda pod: Run())
        self.validate = validate
        self.bookmark_seconds = bookmark_seconds
        self.python = python
        # image -> the interpreter its "python"/"python3" is here (None: the image has none);
        # an image not named runs ``python``
        self.images = dict(images or {})
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.version = 1000
        self.history: list[tuple[int, str, str | None, str, dict[str, Any]]] = []
        self.compacted = 0  # versions at or below this are gone (410)
        self.watchers: list[_Watcher] = []
        self.runtimes: dict[tuple[str, str], PodRuntime] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._stopping = threading.Event()
        self._watch_gate = threading.Event()
        self._watch_gate.set()
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, daemon=True),
            threading.Thread(target=self._deadlines, daemon=True),
        ]

    def __enter__(self) -> FakeKubernetes:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        with self.lock:
            watchers, self.watchers = self.watchers, []
            runtimes = list(self.runtimes.values())
        for w in watchers:
            w.queue.put(None)
        for rt in runtimes:
            rt.stop.set()
        for rt in runtimes:
            if rt.thread is not None:
                rt.thread.join(10)
            for folder in rt.folders:
                shutil.rmtree(folder, ignore_errors=True)
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the store ---------------------------------------------------------------------------
    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def _record(self, kind: str, plural: str, ns: str | None, obj: dict[str, Any]) -> None:
        """Append an event to the history and hand it to matching watches (lock held)."""
        snapshot = copy.deepcopy(obj)
        rv = int(obj["metadata"]["resourceVersion"])
        self.history.append((rv, plural, ns, kind, snapshot))
        labels = obj["metadata"].get("labels") or {}
        for w in self.watchers:
            if w.plural == plural and w.namespace in (None, ns) and matches(labels, w.selector):
                w.queue.put({"type": kind, "object": snapshot})

    def get(self, plural: str, ns: str | None, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj else None

    def items(self, plural: str, ns: str | None = None, selector: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (p, n, _), o in sorted(self.objects.items())
                if p == plural
                and (ns is None or n == ns)
                and matches(o["metadata"].get("labels") or {}, selector)
            ]

    def create(self, plural: str, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        kind, api_version = RESOURCES[plural]
        meta = body.get("metadata") or {}
        name = meta.get("name") or ""
        if meta.get("generateName") and not name:
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        self._check(plural, kind, name, body)
        with self.lock:
            if (plural, ns, name) in self.objects:
                group = api_version.rpartition("/")[0]
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{plural}{"." + group if group else ""} "{name}" already exists',
                    {"name": name, "group": group, "kind": plural},
                )
            obj = copy.deepcopy(body)
            obj["apiVersion"], obj["kind"] = api_version, kind
            m = obj.setdefault("metadata", {})
            m.update(
                name=name,
                uid=str(uuid.uuid4()),
                creationTimestamp=now_rfc3339(),
                resourceVersion=self._bump(),
                generation=1,
            )
            if ns is not None:
                m["namespace"] = ns
            if plural == "jobs":
                self._default_job(obj)
            self.objects[(plural, ns, name)] = obj
            self._record("ADDED", plural, ns, obj)
            created = copy.deepcopy(obj)
        if plural == "jobs":
            threading.Thread(target=self._start_job_pod, args=(ns, name), daemon=True).start()
        return created

    def update(
        self, plural: str, ns: str | None, name: str, change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                return None
            change(obj)
            obj["metadata"]["resourceVersion"] = self._bump()
            self._record("MODIFIED", plural, ns, obj)
            return copy.deepcopy(obj)

    def remove(self, plural: str, ns: str | None, name: str) -> None:
        """The object is gone (DELETED), and so is what it owned (the garbage collector)."""
        with self.lock:
            obj = self.objects.pop((plural, ns, name), None)
            if obj is None:
                return
            obj["metadata"]["resourceVersion"] = self._bump()
            self._record("DELETED", plural, ns, obj)
            runtime = self.runtimes.pop((ns or "", name), None) if plural == "pods" else None
            uid = obj["metadata"]["uid"]
            owned = [
                (p, n, nm)
                for (p, n, nm), o in self.objects.items()
                if n == ns
                and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
            ]
        if runtime is not None:  # the pod's volumes and log go with it
            runtime.stop.set()
            for folder in runtime.folders:
                shutil.rmtree(folder, ignore_errors=True)
        for p, n, nm in owned:
            with suppress(ApiError):
                self.delete(p, n, nm, "Background")

    def delete(
        self, plural: str, ns: str | None, name: str, propagation: str | None
    ) -> dict[str, Any]:
        obj = self.get(plural, ns, name)
        if obj is None:
            raise self._not_found(plural, name)
        if plural == "pods":
            self._delete_pod(ns or "", name)
        elif plural == "jobs":
            pods = [p["metadata"]["name"] for p in self.items("pods", ns, f"job-name={name}")]
            policy = propagation or "Background"
            if policy == "Foreground" and pods:
                stamp = now_rfc3339()

                def finalizing(o: dict[str, Any]) -> None:
                    o["metadata"]["deletionTimestamp"] = stamp
                    o["metadata"]["finalizers"] = ["foregroundDeletion"]

                self.update("jobs", ns, name, finalizing)
                for pod in pods:
                    self._delete_pod(ns or "", pod)
                threading.Thread(
                    target=self._finish_foreground, args=(ns, name), daemon=True
                ).start()
            else:
                self.remove("jobs", ns, name)
                if policy != "Orphan":
                    for pod in pods:
                        self._delete_pod(ns or "", pod)
        else:
            self.remove(plural, ns, name)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": plural},
        }

    def _finish_foreground(self, ns: str, job: str) -> None:
        while not self._stopping.is_set():
            if not self.items("pods", ns, f"job-name={job}"):
                self.remove("jobs", ns, job)
                return
            time.sleep(0.05)

    def _not_found(self, plural: str, name: str) -> ApiError:
        group = RESOURCES[plural][1].rpartition("/")[0]
        return ApiError(
            404,
            "NotFound",
            f'{plural}{"." + group if group else ""} "{name}" not found',
            {"name": name, "kind": plural},
        )

    def _check(self, plural: str, kind: str, name: str, body: dict[str, Any]) -> None:
        """422 Invalid, as the API server's validation would answer."""
        problems = []
        limit = 63 if plural in ("jobs", "namespaces") else 253
        if not name or len(name) > limit or not all(_DNS_LABEL.match(p) for p in name.split(".")):
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 name")
        for value in ((body.get("metadata") or {}).get("labels") or {}).values():
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"metadata.labels: Invalid value: {value!r}: a valid label value")
        if self.validate and not problems:
            import kubernetes_validate

            api_version = RESOURCES[plural][1]
            doc = {"apiVersion": api_version, "kind": kind, **body}  # the URL says what it is
            if (doc["apiVersion"], doc["kind"]) != (api_version, kind):
                problems.append(f"the body is a {doc['kind']}, not a {kind}")
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path) or "(root)"
                problems.append(f"{path}: {str(exc).splitlines()[0]}")
        if problems:
            group = RESOURCES[plural][1].rpartition("/")[0]
            raise ApiError(
                422,
                "Invalid",
                f'{kind}{"." + group if group else ""} "{name}" is invalid: {"; ".join(problems)}',
                {"name": name, "kind": plural},
            )

    # -- the Job controller ------------------------------------------------------------------
    def _default_job(self, job: dict[str, Any]) -> None:
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        spec = job["spec"]
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            }
        )
        job["status"] = {}

    def _start_job_pod(self, ns: str, job_name: str) -> None:
        job = self.get("jobs", ns, job_name)
        if job is None:
            return
        template = job["spec"]["template"]
        pod = {
            "metadata": dict(
                copy.deepcopy(template.get("metadata") or {}),
                generateName=f"{job_name}-",
                ownerReferences=[
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            ),
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        created = self.create("pods", ns, pod)
        name = created["metadata"]["name"]
        self.update(
            "jobs", ns, job_name, lambda j: j["status"].update(active=1, startTime=now_rfc3339())
        )
        runtime = PodRuntime()
        behaviour = self.behaviour(created)
        runtime.thread = threading.Thread(
            target=self._kubelet, args=(behaviour, ns, name), daemon=True
        )
        with self.lock:  # close() never sees a runtime whose thread has not started
            self.runtimes[(ns, name)] = runtime
            runtime.thread.start()

    def _kubelet(self, behaviour: Behaviour, ns: str, name: str) -> None:
        try:
            behaviour(self, ns, name)
        finally:
            pod = self.get("pods", ns, name)
            if pod is not None and pod["metadata"].get("deletionTimestamp"):
                self.remove("pods", ns, name)  # the kubelet confirms the deletion

    def _job_of(self, pod: dict[str, Any]) -> str | None:
        return (pod["metadata"].get("labels") or {}).get("job-name")

    def pod_ended(self, ns: str, name: str) -> None:
        """The Job controller sees the pod's end: the Job's status and conditions."""
        pod = self.get("pods", ns, name)
        if pod is None:
            return
        job = self._job_of(pod)
        phase = pod["status"].get("phase")
        if job is None or phase not in ("Succeeded", "Failed"):
            return

        def conclude(j: dict[str, Any]) -> None:
            if any(c.get("status") == "True" for c in j["status"].get("conditions") or []):
                return
            j["status"]["active"] = 0
            stamp = now_rfc3339()
            if phase == "Succeeded":
                j["status"]["succeeded"] = 1
                j["status"]["completionTime"] = stamp
                j["status"]["conditions"] = [
                    {"type": "Complete", "status": "True", "lastTransitionTime": stamp}
                ]
            else:
                j["status"]["failed"] = 1
                j["status"]["conditions"] = [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                        "lastTransitionTime": stamp,
                    }
                ]

        self.update("jobs", ns, job, conclude)

    def _deadlines(self) -> None:
        """activeDeadlineSeconds: the Job fails with DeadlineExceeded and its pods are deleted."""
        while not self._stopping.wait(0.1):
            for job in self.items("jobs"):
                deadline = job["spec"].get("activeDeadlineSeconds")
                started = job.get("status", {}).get("startTime")
                if deadline is None or started is None or job["status"].get("conditions"):
                    continue
                began = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                if (datetime.now(UTC) - began).total_seconds() < deadline:
                    continue
                self.exceed_deadline(job["metadata"]["namespace"], job["metadata"]["name"])

    def exceed_deadline(self, ns: str, name: str) -> None:
        """The Job ran past activeDeadlineSeconds: Failed/DeadlineExceeded, its pods deleted."""
        stamp = now_rfc3339()
        self.update(
            "jobs",
            ns,
            name,
            lambda j: j["status"].update(
                active=0,
                failed=1,
                conditions=[
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "Job was active longer than specified deadline",
                        "lastTransitionTime": stamp,
                    }
                ],
            ),
        )
        for pod in self.items("pods", ns, f"job-name={name}"):
            self._delete_pod(ns, pod["metadata"]["name"])

    def _delete_pod(self, ns: str, name: str) -> None:
        stamp = now_rfc3339()
        runtime = self.runtimes.get((ns, name))
        alive = runtime is not None and runtime.thread is not None and runtime.thread.is_alive()
        if not alive:
            self.remove("pods", ns, name)
            return
        self.update(
            "pods",
            ns,
            name,
            lambda p: p["metadata"].update(deletionTimestamp=stamp, deletionGracePeriodSeconds=30),
        )
        assert runtime is not None
        runtime.stop.set()
        threading.Thread(
            target=self._confirm_deletion, args=(runtime, ns, name), daemon=True
        ).start()

    def _confirm_deletion(self, runtime: PodRuntime, ns: str, name: str) -> None:
        """The kubelet confirms a deletion once the pod's containers are gone — also when they
        ended on their own just as the deletion came (its own check had passed already)."""
        if runtime.thread is not None:
            runtime.thread.join()
        pod = self.get("pods", ns, name)
        if pod is not None and pod["metadata"].get("deletionTimestamp"):
            self.remove("pods", ns, name)

    # -- what tests do to pods ----------------------------------------------------------------
    def set_status(self, ns: str, name: str, **status: Any) -> None:
        self.update("pods", ns, name, lambda p: p["status"].update(status))

    def compact(self) -> None:
        """Drop the event history (as etcd compaction does): older versions answer 410."""
        with self.lock:
            self.compacted = self.version
            self.history.clear()

    def expire_watches(self) -> None:
        """End every open watch with a 410 Gone ERROR event."""
        with self.lock:
            self.compacted = self.version
            self.history.clear()
            watchers, self.watchers = self.watchers, []
        for w in watchers:
            w.queue.put(_gone(self.compacted, self.version))
            w.queue.put(None)

    @contextmanager
    def watches_held(self) -> Iterator[None]:
        """End open watches normally (as at their timeoutSeconds) and hold new watch requests
        until the block ends: what changes meanwhile is missed by the watchers."""
        self._watch_gate.clear()
        with self.lock:
            watchers, self.watchers = self.watchers, []
        for w in watchers:
            w.queue.put(None)
        try:
            yield
        finally:
            self._watch_gate.set()

    def pods(self, ns: str | None = None, selector: str = "") -> list[dict[str, Any]]:
        return self.items("pods", ns, selector)

    def wait_for(self, what: Callable[[], Any], timeout: float = 20.0) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = what()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError("the fake Kubernetes never reached the expected state")

    # -- the watch stream ---------------------------------------------------------------------
    def watch(
        self,
        plural: str,
        ns: str | None,
        selector: str,
        version: str,
        bookmarks: bool,
        timeout: float,
    ) -> Iterator[dict[str, Any]]:
        self._watch_gate.wait()
        with self.lock:
            since = int(version) if version not in ("", "0") else None
            if since is not None and since < self.compacted:
                yield _gone(since, self.version)
                return
            watcher = _Watcher(plural, ns, selector)
            if since is None:
                backlog = [{"type": "ADDED", "object": o} for o in self.items(plural, ns, selector)]
            else:
                backlog = [
                    {"type": kind, "object": obj}
                    for rv, p, n, kind, obj in self.history
                    if rv > since
                    and p == plural
                    and n == ns
                    and matches(obj["metadata"].get("labels") or {}, selector)
                ]
            self.watchers.append(watcher)
        try:
            yield from backlog
            end = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_seconds
            while True:
                left = end - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return
                wait = min(left, max(0.0, next_bookmark - time.monotonic())) if bookmarks else left
                try:
                    event = watcher.queue.get(timeout=max(0.01, wait))
                except Empty:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        next_bookmark = time.monotonic() + self.bookmark_seconds
                        yield {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": RESOURCES[plural][0],
                                "apiVersion": RESOURCES[plural][1],
                                "metadata": {"resourceVersion": str(self.version)},
                            },
                        }
                    continue
                if event is None:
                    return
                yield event
        finally:
            with self.lock:
                if watcher in self.watchers:
                    self.watchers.remove(watcher)


def _gone(since: int, current: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": ApiError(
            410, "Expired", f"too old resource version: {since} ({current})"
        ).status(),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeKubernetes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()  # headers and body go out as separate writes: no Nagle delay
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, code: int, doc: Any, content_type: str = "application/json") -> None:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON") from None

    def _route(self, method: str) -> None:
        fake = self.server_fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fake.requests.append((method, self.path))
        try:
            m = _PATH.match(url.path)
            if m is None or m["plural"] not in RESOURCES:
                raise ApiError(
                    404,
                    "NotFound",
                    f"the server could not find the requested resource ({url.path})",
                )
            plural, ns, name = m["plural"], m["ns"], m["name"]
            if plural == "namespaces":
                ns = None
            if method == "GET" and m["sub"]:
                self._log(ns or "", name or "", query)
            elif method == "GET" and name is None and query.get("watch") in ("true", "1"):
                self._watch(plural, ns, query)
            elif method == "GET" and name is None:
                self._list(plural, ns, query)
            elif method == "GET":
                obj = fake.get(plural, ns, name or "")
                if obj is None:
                    raise fake._not_found(plural, name or "")
                self._send(200, obj)
            elif method == "POST" and name is None:
                self._send(201, fake.create(plural, ns, self._body() or {}))
            elif method == "DELETE" and name is not None:
                body = self._body() or {}
                policy = query.get("propagationPolicy") or body.get("propagationPolicy")
                self._send(200, fake.delete(plural, ns, name, policy))
            elif method == "PATCH" and name is not None:
                self._patch(plural, ns, name, query)
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _list(self, plural: str, ns: str | None, query: dict[str, str]) -> None:
        fake = self.server_fake
        with fake.lock:
            items = fake.items(plural, ns, query.get("labelSelector", ""))
            version = str(fake.version)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": version}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        for item in page:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        kind, api_version = RESOURCES[plural]
        self._send(
            200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": page}
        )

    def _watch(self, plural: str, ns: str | None, query: dict[str, str]) -> None:
        fake = self.server_fake
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = fake.watch(
            plural,
            ns,
            query.get("labelSelector", ""),
            query.get("resourceVersion", ""),
            query.get("allowWatchBookmarks") == "true",
            float(query.get("timeoutSeconds") or 1800),
        )
        try:
            for event in events:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            events.close()  # type: ignore[attr-defined]

    def _log(self, ns: str, name: str, query: dict[str, str]) -> None:
        fake = self.server_fake
        pod = fake.get("pods", ns, name)
        if pod is None:
            raise fake._not_found("pods", name)
        statuses = pod["status"].get("containerStatuses") or []
        started = any("running" in s["state"] or "terminated" in s["state"] for s in statuses)
        runtime = fake.runtimes.get((ns, name))
        if not started or runtime is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "step" in pod "{name}" is waiting to start: ContainerCreating',
            )
        lines = list(runtime.log)
        if query.get("sinceSeconds"):
            cutoff = time.time() - int(query["sinceSeconds"])
            lines = [(t, m) for t, m in lines if _epoch(t) >= cutoff]
        stamps = query.get("timestamps") == "true"
        text = "".join(f"{t} {m}\n" if stamps else f"{m}\n" for t, m in lines)
        self._send(200, text.encode(), "text/plain")

    def _patch(self, plural: str, ns: str | None, name: str, query: dict[str, str]) -> None:
        fake = self.server_fake
        body = self._body() or {}
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("application/apply-patch"):
            if fake.get(plural, ns, name) is None:
                self._send(201, fake.create(plural, ns, body))
                return
            fake._check(plural, RESOURCES[plural][0], name, body)
            patch = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        elif kind.startswith("application/merge-patch+json"):
            patch = body
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the patch type {kind!r} is not supported")
        current = fake.get(plural, ns, name)
        if current is None:
            raise fake._not_found(plural, name)
        if current.get("immutable") and "data" in patch:
            raise ApiError(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: data: Forbidden: field is immutable when `immutable` is set',
            )
        updated = fake.update(plural, ns, name, lambda o: o.update(merge_patch(o, patch)))
        self._send(200, updated)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")


def _epoch(stamp: str) -> float:
    base, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp() + float(
        "0." + (frac or "0")
    )


# -- behaviours: the scheduler and kubelet of one pod --------------------------------------------
def _scheduled(fake: FakeKubernetes, ns: str, name: str, node: str = "fake-node-1") -> None:
    stamp = now_rfc3339()

    def place(p: dict[str, Any]) -> None:
        p["spec"]["nodeName"] = node
        p["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp}
        ]
        p["status"]["containerStatuses"] = [
            _status(p, {"waiting": {"reason": "ContainerCreating"}})
        ]

    fake.update("pods", ns, name, place)


def _status(pod: dict[str, Any], state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    image = pod["spec"]["containers"][0]["image"]
    return {
        "name": "step",
        "image": image,
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
        **extra,
    }


def _terminate(
    fake: FakeKubernetes,
    ns: str,
    name: str,
    exit_code: int,
    reason: str,
    message: str | None = None,
    status_reason: str | None = None,
    status_message: str | None = None,
    started: str | None = None,
) -> None:
    stamp = now_rfc3339()

    def end(p: dict[str, Any]) -> None:
        t: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started or stamp,
            "finishedAt": stamp,
        }
        if message:
            t["message"] = message
        p["status"]["phase"] = "Succeeded" if exit_code == 0 and not status_reason else "Failed"
        p["status"]["containerStatuses"] = [_status(p, {"terminated": t})]
        if status_reason:
            p["status"]["reason"] = status_reason
            p["status"]["message"] = status_message or ""

    fake.update("pods", ns, name, end)
    fake.pod_ended(ns, name)


def _running(fake: FakeKubernetes, ns: str, name: str) -> str:
    stamp = now_rfc3339()

    def run(p: dict[str, Any]) -> None:
        p["status"]["phase"] = "Running"
        p["status"]["startTime"] = stamp
        p["status"]["containerStatuses"] = [_status(p, {"running": {"startedAt": stamp}})]

    fake.update("pods", ns, name, run)
    return stamp


class Run:
    """Schedule the pod and run its containers' commands as local processes: the init
    containers one after the other (each must exit 0, as with ``restartPolicy: Never``), then
    the container. Volumes are folders per pod, shared by the containers that mount them."""

    def __init__(self, schedule_delay: float = 0.0) -> None:
        self.schedule_delay = schedule_delay

    def __call__(self, fake: FakeKubernetes, ns: str, name: str) -> None:
        runtime = fake.runtimes.get((ns, name))
        if runtime is None:  # deleted before its kubelet started
            return
        if runtime.stop.wait(self.schedule_delay):
            return
        _scheduled(fake, ns, name)
        pod = fake.get("pods", ns, name)
        if pod is None:
            return
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        folders: dict[str, str] = {}  # volume name -> its folder on this machine
        for index, init in enumerate(pod["spec"].get("initContainers") or []):
            if index == 0:
                _initializing(fake, ns, name)
            prepared = _prepare(fake, runtime, ns, name, init, volumes, folders)
            if prepared is None:
                return
            argv, env, cwd = prepared
            _init_status(fake, ns, name, index, {"running": {"startedAt": now_rfc3339()}})
            lines: list[tuple[str, str]] = []
            started = now_rfc3339()
            code = _run_process(runtime, argv, env, cwd, lines)
            message: str | None
            if code is None:  # no such command in the image
                code, reason, message = 128, "StartError", _start_error(argv[0])
            else:
                reason = "Completed" if code == 0 else "Error"
                message = _fallback_message(init, lines) if code else None
            terminated: dict[str, Any] = {
                "exitCode": code, "reason": reason, "startedAt": started,
                "finishedAt": now_rfc3339(),
            }  # fmt: skip
            if message:
                terminated["message"] = message
            _init_status(fake, ns, name, index, {"terminated": terminated})
            if code != 0 or runtime.stop.is_set():
                fake.update("pods", ns, name, lambda p: p["status"].update(phase="Failed"))
                fake.pod_ended(ns, name)
                return
        container = pod["spec"]["containers"][0]
        prepared = _prepare(fake, runtime, ns, name, container, volumes, folders)
        if prepared is None:
            return
        argv, env, cwd = prepared
        started = _running(fake, ns, name)
        code = _run_process(runtime, argv, env, cwd, runtime.log)
        if code is None:  # the image has no such command: created, never started
            _terminate(fake, ns, name, 128, "StartError", _start_error(argv[0]), started=started)
            return
        exit_code = 128 - code if code < 0 else code
        said = _fallback_message(container, runtime.log) if exit_code else None
        _terminate(
            fake, ns, name, exit_code, "Completed" if exit_code == 0 else "Error", said,
            started=started,
        )  # fmt: skip


def _prepare(
    fake: FakeKubernetes,
    runtime: PodRuntime,
    ns: str,
    name: str,
    container: dict[str, Any],
    volumes: dict[str, dict[str, Any]],
    folders: dict[str, str],
) -> tuple[list[str], dict[str, str], str] | None:
    """A container's command, environment and working directory with its mount paths made
    this machine's folders (its volumes' contents written first); None when a Secret it
    mounts is missing (the container stays in CreateContainerConfigError until deleted)."""
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in folders:
            folder = tempfile.mkdtemp(prefix=f"fake-kubelet-{mount['name']}-")
            runtime.folders.append(folder)
            folders[mount["name"]] = folder
        mounts[mount["mountPath"]] = folders[mount["name"]]

    def host(text: str) -> str:
        for path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if text == path or text.startswith(path + "/"):
                return folder + text[len(path) :]
        return text

    def host_paths_in(data: bytes) -> bytes:
        """No mount namespaces here: a mount path named inside a file (the invocation's
        scratch folder) becomes the pod's own folder too, so pods never share one."""
        text = data.decode("utf-8", "replace")
        for path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
            text = re.sub(re.escape(json.dumps(path)[:-1]) + r'(?=["/])', '"' + folder, text)
        return text.encode()

    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        folder = mounts[mount["mountPath"]]
        if "secret" in volume:
            secret = fake.get("secrets", ns, volume["secret"]["secretName"])
            if secret is None:
                missing = f'secret "{volume["secret"]["secretName"]}" not found'
                waiting = {"reason": "CreateContainerConfigError", "message": missing}
                fake.update(
                    "pods",
                    ns,
                    name,
                    lambda p, waiting=waiting: p["status"].update(  # type: ignore[misc]
                        containerStatuses=[_status(p, {"waiting": waiting})]
                    ),
                )
                runtime.stop.wait()
                return None
            for item in volume["secret"].get("items") or [
                {"key": k, "path": k} for k in secret.get("data") or {}
            ]:
                target = Path(folder) / item["path"]
                target.write_bytes(host_paths_in(base64.b64decode(secret["data"][item["key"]])))

    argv = [host(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if argv and argv[0] in ("python", "python3"):  # the image's Python: see ``images``
        argv[0] = fake.images.get(container["image"], fake.python) or ""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for var in container.get("env") or []:
        env[var["name"]] = host(str(var.get("value", "")))
    return argv, env, host(container.get("workingDir") or "/")


def _run_process(
    runtime: PodRuntime,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    log: list[tuple[str, str]],
) -> int | None:
    """Run one container's command until it ends or the pod is stopped (SIGTERM, then SIGKILL
    after 5 s); its output lines go to ``log``. None when the command does not exist."""
    if not argv or not argv[0]:
        return None
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        return None

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            log.append((now_nano(), raw.decode("utf-8", "replace").rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        if runtime.stop.wait(0.02):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            break
    reader.join(5)
    return proc.returncode


def _start_error(command: str) -> str:
    """What containerd reports for a container whose command is not in its image."""
    return (
        "failed to create containerd task: failed to create shim task: OCI runtime create "
        "failed: runc create failed: unable to start container process: exec: "
        f'"{command or "python3"}": executable file not found in $PATH: unknown'
    )


def _fallback_message(container: dict[str, Any], log: list[tuple[str, str]]) -> str | None:
    """``terminationMessagePolicy: FallbackToLogsOnError``: a container that failed without
    writing its termination message file gets the end of its log (80 lines, 2048 bytes)."""
    if container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        return None
    text = "\n".join(line for _, line in log[-80:])
    return text.encode()[-2048:].decode("utf-8", "replace") or None


def _initializing(fake: FakeKubernetes, ns: str, name: str) -> None:
    """The container waits for the init containers (the pod's Initialized condition)."""

    def wait(p: dict[str, Any]) -> None:
        p["status"]["containerStatuses"] = [_status(p, {"waiting": {"reason": "PodInitializing"}})]
        p["status"]["conditions"] = [
            *(p["status"].get("conditions") or []),
            {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
             "lastTransitionTime": now_rfc3339()},
        ]  # fmt: skip

    fake.update("pods", ns, name, wait)


def _init_status(
    fake: FakeKubernetes, ns: str, name: str, index: int, state: dict[str, Any]
) -> None:
    def put(p: dict[str, Any]) -> None:
        inits = p["spec"].get("initContainers") or []
        statuses = p["status"].setdefault("initContainerStatuses", [])
        while len(statuses) < len(inits):
            c = inits[len(statuses)]
            statuses.append(
                {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                 "restartCount": 0, "started": False, "state": {"waiting": {
                     "reason": "PodInitializing"}}}
            )  # fmt: skip
        statuses[index].update(
            state=state,
            started="running" in state,
            ready="terminated" in state and state["terminated"]["exitCode"] == 0,
        )

    fake.update("pods", ns, name, put)


class Script:
    """Status changes at given delays: ``[(seconds, callable(fake, ns, name)), ...]``; then it
    stays as it is until deleted (a running container then ends with 143, SIGTERM)."""

    def __init__(self, *steps: tuple[float, Callable[[FakeKubernetes, str, str], None]]) -> None:
        self.steps = steps

    def __call__(self, fake: FakeKubernetes, ns: str, name: str) -> None:
        runtime = fake.runtimes.get((ns, name))
        if runtime is None:  # deleted before its kubelet started
            return
        for delay, step in self.steps:
            if runtime.stop.wait(delay):
                break
            step(fake, ns, name)
        else:
            runtime.stop.wait()
        pod = fake.get("pods", ns, name)
        if pod is not None and pod["status"].get("phase") == "Running":
            _terminate(fake, ns, name, 143, "Error")


def say(*lines: str) -> Callable[[FakeKubernetes, str, str], None]:
    def write(fake: FakeKubernetes, ns: str, name: str) -> None:
        for line in lines:
            runtime = fake.runtimes.get((ns, name))
            if runtime is not None:
                runtime.log.append((now_nano(), line))

    return write


def unschedulable(message: str) -> Script:
    def stuck(fake: FakeKubernetes, ns: str, name: str) -> None:
        stamp = now_rfc3339()
        fake.set_status(
            ns,
            name,
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": stamp,
                }
            ],
        )

    return Script((0.0, stuck))


def image_pull_failure(message: str) -> Script:
    def pull(fake: FakeKubernetes, ns: str, name: str) -> None:
        fake.update(
            "pods",
            ns,
            name,
            lambda p: p["status"].update(
                containerStatuses=[
                    _status(p, {"waiting": {"reason": "ErrImagePull", "message": message}})
                ]
            ),
        )

    return Script((0.0, _scheduled), (0.05, pull))


def running(*then: tuple[float, Callable[[FakeKubernetes, str, str], None]]) -> Script:
    return Script((0.0, _scheduled), (0.0, lambda f, n, p: _running(f, n, p) and None), *then)


def exits(code: int, reason: str | None = None, after: float = 0.1) -> Script:
    return running(
        (
            after,
            lambda f, n, p: _terminate(
                f, n, p, code, reason or ("Completed" if code == 0 else "Error")
            ),
        )
    )


def oom_killed(after: float = 0.1) -> Script:
    return exits(137, "OOMKilled", after)


def evicted(message: str, after: float = 0.1) -> Script:
    def evict(fake: FakeKubernetes, ns: str, name: str) -> None:
        _terminate(
            fake,
            ns,
            name,
            137,
            "ContainerStatusUnknown",
            status_reason="Evicted",
            status_message=message,
        )

    return running((after, evict))


def node_lost(after: float = 0.1) -> Script:
    """The node goes away: the pod garbage collector deletes the pod (DisruptionTarget)."""

    def lose(fake: FakeKubernetes, ns: str, name: str) -> None:
        stamp = now_rfc3339()
        fake.update(
            "pods",
            ns,
            name,
            lambda p: (
                p["status"]
                .setdefault("conditions", [])
                .append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                        "lastTransitionTime": stamp,
                    }
                )
            ),
        )
        fake.remove("pods", ns, name)

    return running((after, lose))


def hangs() -> Script:
    return running()


class FakeService:
    """A FAKE Kubernetes Service in front of server instances: a TCP proxy on loopback that
    hands each new connection to the next backend in turn (as kube-proxy balances connections,
    not requests). ``backends`` may be changed while it runs (a rollout, a switch)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)  # "host:port"
        self.connections: dict[str, int] = {}
        self.bytes_in = 0  # client -> backend (what pods sent the server)
        self.bytes_out = 0  # backend -> client (what the server sent pods)
        self._turn = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> FakeService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _next(self) -> str:
        with self._lock:
            backend = self.backends[self._turn % len(self.backends)]
            self._turn += 1
            self.connections[backend] = self.connections.get(backend, 0) + 1
            return backend

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            host, _, port = self._next().rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=10)
            except OSError:
                client.close()  # no endpoint: the connection is refused
                continue
            upstream.settimeout(None)
            pumps = [
                threading.Thread(target=self._pump, args=(a, b, inbound), daemon=True)
                for a, b, inbound in ((client, upstream, True), (upstream, client, False))
            ]
            for pump in pumps:
                pump.start()
            threading.Thread(
                target=_close_after, args=(pumps, client, upstream), daemon=True
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket, inbound: bool) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
                with self._lock:
                    if inbound:
                        self.bytes_in += len(data)
                    else:
                        self.bytes_out += len(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                target.shutdown(socket.SHUT_WR)


def _close_after(pumps: list[threading.Thread], *sockets: socket.socket) -> None:
    for pump in pumps:
        pump.join()
    for sock in sockets:
        sock.close()


# -- interpreters standing in for images' Pythons -----------------------------------------------
def plain_python() -> str:
    """The interpreter the test venv was made from: this Python's version, without Argosy
    installed (a step image's ``python3`` that has only the standard library and its own
    packages)."""
    for candidate in (getattr(sys, "_base_executable", ""), f"{sys.base_prefix}/bin/python3"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return sys.executable


def other_python() -> str | None:
    """An interpreter of another minor version on this machine (a pyenv build), if any."""
    import glob

    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    roots = sorted({*glob.glob("/root/.pyenv/versions/3.*"), *glob.glob(os.path.expanduser(
        "~/.pyenv/versions/3.*"))})  # fmt: skip
    for prefix in roots:
        version = ".".join(Path(prefix).name.split(".")[:2])
        binary = f"{prefix}/bin/python{version}"
        if version != mine and os.path.isfile(binary):
            return binary
    for minor in range(8, 20):
        found = shutil.which(f"python3.{minor}")
        if found and f"3.{minor}" != mine:
            return found
    return None
