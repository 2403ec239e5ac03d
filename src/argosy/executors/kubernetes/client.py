"""Every call the Kubernetes executor makes to the API server, and nothing else.

One small class over the official ``kubernetes`` client's ``ApiClient`` (its configuration,
kubeconfig/in-cluster loading, authentication and connection pool), exchanging plain JSON
documents (dicts) instead of generated model objects: cheaper for thousands of pods, and the
shapes are the API reference's. The ``kubernetes`` package is imported only when a client is
made, so ``import argosy`` and the CLI stay fast.

Tests point it at a hand-written fake API server on loopback (``tests/kubernetes_fake.py``)
that speaks the same wire format, so everything above this module runs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from argosy.errors import ExecutionError

WATCH_SECONDS = 290  # a watch request's timeoutSeconds (the server ends it; we resume)
REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read (non-watch requests)

# resource paths of the kinds Argosy creates or applies: (API prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "Pod": ("/api/v1", "pods", True),
    "ResourceQuota": ("/api/v1", "resourcequotas", True),
    "LimitRange": ("/api/v1", "limitranges", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}


class KubernetesApiError(ExecutionError):
    """The API server answered with an error status (a ``Status`` document)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


def _path(kind: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    prefix, plural, namespaced = KINDS[kind]
    path = prefix
    if namespaced:
        if not namespace:
            raise ValueError(f"a {kind} needs a namespace")
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path + sub


class KubernetesClient:
    """JSON in, JSON out, over one connection pool (thread-safe)."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> KubernetesClient:
        """In a pod: the in-cluster service account; elsewhere ``KUBECONFIG`` (or ~/.kube)."""
        import os

        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(  # KUBECONFIG read now (the client reads it at import)
                config_file=kubeconfig or os.environ.get("KUBECONFIG"),
                context=context,
                client_configuration=configuration,
            )
        configuration.connection_pool_maxsize = 32
        return cls(client.ApiClient(configuration))

    @classmethod
    def for_url(cls, url: str, token: str | None = None) -> KubernetesClient:
        """A client of the API server at ``url`` (tests: the fake API server)."""
        from kubernetes import client

        configuration = client.Configuration(host=url.rstrip("/"))
        if token:
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.connection_pool_maxsize = 32
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self._api.close()

    # -- the one HTTP call ----------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout: Any = REQUEST_TIMEOUT,
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except ApiException as exc:
            raise _api_error(exc.status or 0, exc.body, exc.reason) from None
        if stream:
            return response
        data = response.data
        if not data:
            return {}
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(data)
        return data.decode("utf-8", "replace")

    # -- generic --------------------------------------------------------------------------------
    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        namespace = doc["metadata"].get("namespace")
        result: dict[str, Any] = self._call("POST", _path(doc["kind"], namespace), body=doc)
        return result

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call("GET", _path(kind, namespace, name))
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def delete(
        self, kind: str, namespace: str | None, name: str, *, propagation: str | None = None
    ) -> bool:
        """Delete one object; False when it was already gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            self._call("DELETE", _path(kind, namespace, name), body=body)
        except KubernetesApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch(
        self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch."""
        result: dict[str, Any] = self._call(
            "PATCH",
            _path(kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    def apply(self, doc: dict[str, Any], field_manager: str = "argosy") -> dict[str, Any]:
        """Server-side apply (creates or updates; Argosy owns the fields it sets)."""
        meta = doc["metadata"]
        result: dict[str, Any] = self._call(
            "PATCH",
            _path(doc["kind"], meta.get("namespace"), meta["name"]),
            query=[("fieldManager", field_manager), ("force", "true")],
            body=doc,
            content_type="application/apply-patch+yaml",  # JSON is YAML
        )
        return result

    def list(
        self, kind: str, namespace: str | None, selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` matching the label selector, and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("labelSelector", selector), ("limit", 500)]
            if token:
                query.append(("continue", token))
            page = self._call("GET", _path(kind, namespace), query=query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    # -- pods -----------------------------------------------------------------------------------
    def watch(
        self,
        kind: str,
        namespace: str,
        selector: str,
        resource_version: str,
        timeout_seconds: int = WATCH_SECONDS,
    ) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) after ``resource_version``, with bookmarks,
        until the server ends the request; raises :class:`WatchExpired` on 410 Gone."""
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("labelSelector", selector),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        try:
            response = self._call(
                "GET",
                _path(kind, namespace),
                query=query,
                stream=True,
                timeout=(REQUEST_TIMEOUT[0], timeout_seconds + 30),
            )
        except KubernetesApiError as exc:
            if exc.status == 410:
                raise WatchExpired(exc.message) from None
            raise
        try:
            buffer = b""
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise WatchExpired(str(status.get("message", "")))
                        raise _api_error(status.get("code") or 500, json.dumps(status), "")
                    yield event
        finally:
            response.release_conn()

    def pod_log(
        self, namespace: str, pod: str, *, since_seconds: int | None = None, limit_bytes: int = 0
    ) -> str:
        """The pod's log with RFC 3339 timestamps (stdout and stderr, interleaved)."""
        query: list[tuple[str, Any]] = [("container", "step"), ("timestamps", "true")]
        if since_seconds is not None:
            query.append(("sinceSeconds", max(1, since_seconds)))
        if limit_bytes:
            query.append(("limitBytes", limit_bytes))
        text = self._call("GET", _path("Pod", namespace, pod, "/log"), query=query)
        return text if isinstance(text, str) else ""


def _api_error(status: int, body: Any, reason: str | None) -> KubernetesApiError:
    """The error of a ``Status`` body (or of whatever the server sent instead)."""
    try:
        doc = json.loads(body) if body else {}
    except (TypeError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    return KubernetesApiError(
        int(doc.get("code") or status),
        str(doc.get("reason") or reason or ""),
        str(doc.get("message") or body or ""),
    )
