"""What the operations issue adds to the server application, installed in one call: the
routes of log search, costs, retention and retrievals, and ``/metrics``."""

from __future__ import annotations

from fastapi import FastAPI

from argosy.server.routes import search


def install(app: FastAPI) -> None:
    """Add the operations routes to ``app``."""
    app.include_router(search.router)
