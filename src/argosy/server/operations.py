"""What the operations issue adds to the server application, installed in one call: the
routes of log search, costs, retention and retrievals, and ``/metrics``."""

from __future__ import annotations

from fastapi import FastAPI

from argosy.server import metrics
from argosy.server.access_log import AccessLog
from argosy.server.routes import cleanup, costs, retention, search


def install(app: FastAPI) -> None:
    """Add the operations routes to ``app``, ``/metrics`` and the access log."""
    app.include_router(search.router)
    app.include_router(costs.router)
    app.include_router(costs.platform_router)
    app.include_router(cleanup.router)
    app.include_router(cleanup.platform_router)
    app.include_router(retention.router)
    app.include_router(retention.platform_router)
    metrics.install(app, app.state.context)
    app.add_middleware(AccessLog)
