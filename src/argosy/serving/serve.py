"""``argosy models serve MODEL@ALIAS``: load the version the alias points at and answer
predictions until stopped (SIGTERM or Ctrl-C: Uvicorn finishes the requests in flight).

The service reads the registry and the model's bytes through the backend of the settings: a
server (``--server``/``ARGOSY_SERVER`` with ``ARGOSY_TOKEN``, e.g. a viewer API token of the
tenant) or the local state folder. Once it listens it prints one line on stderr::

    argosy models serve: breast-cancer@production version 3 on http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from argosy.errors import UsageError
from argosy.serving.app import (
    TOKEN_CACHE_S,
    Follower,
    Insecure,
    ServerTokens,
    StaticToken,
    Tokens,
    create_app,
)
from argosy.serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from argosy import api
    from argosy.client.backend import Backend

TOKEN_ENV = "ARGOSY_SERVING_TOKEN"


def tokens_for(
    backend: Backend, model: str, insecure: bool, cache_s: float = TOKEN_CACHE_S
) -> Tokens:
    if insecure:
        return Insecure()
    if backend.server_url:
        return ServerTokens(backend.server_url, backend.tenant, model, ttl=cache_s)
    token = os.environ.get(TOKEN_ENV, "")
    if len(token) < 16:
        raise UsageError(
            f"a locally served model needs a bearer token of 16 characters or more in {TOKEN_ENV} "
            "(callers send it as Authorization: Bearer TOKEN), or --insecure to answer anyone"
        )
    return StaticToken(token)


def lineage_link(backend: Backend) -> Any:
    server = backend.server_url

    def link(v: api.ModelVersion) -> dict[str, Any]:
        hint = f" --server {server}" if server else ""
        found: dict[str, Any] = {
            "artifact": v.artifact,
            "command": f"argosy lineage {v.artifact}{hint}",
        }
        if server:
            base = server.rstrip("/")
            found["api"] = (
                f"{base}/api/v1/tenants/{backend.tenant}/artifacts/{v.artifact_id}/lineage"
            )
            found["ui"] = f"{base}/t/{backend.tenant}/artifacts/{v.artifact_id}/lineage"
        return found

    return link


def serve(
    backend: Backend,
    ref: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    insecure: bool = False,
    poll: float = 5.0,
    follow: bool = True,
    token_cache: float = TOKEN_CACHE_S,
) -> None:
    import uvicorn

    from argosy.service.models import parse_ref

    name, which = parse_ref(ref)
    tokens = tokens_for(backend, name, insecure, token_cache)
    metrics = ServingMetrics(name)
    follower = Follower(backend, name, which, metrics, poll=poll, follow=follow)
    app = create_app(follower, tokens, metrics, lineage=lineage_link(backend))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it a response's headers and body wait on the
    # client's delayed ACK (~40 ms a request on Linux)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=30
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    v = follower.current.version
    sys.stderr.write(
        f"argosy models serve: {name}@{which or 'latest'} version {v.version} on "
        f"http://{shown}:{bound}{' (insecure: no token needed)' if insecure else ''}\n"
    )
    sys.stderr.flush()
    follower.start()
    try:
        server.run(sockets=[sock])
    finally:
        follower.stop()
        sock.close()
