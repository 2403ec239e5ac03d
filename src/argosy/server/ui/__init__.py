"""The web UI: server-rendered pages over the application layer, served by ``argosy server``
at ``/`` (same origin as the API) and by ``argosy ui`` on the local state.

Layout of the package: ``security`` (the page gate, error pages, response headers, the local
guard), ``pages`` (templates, the viewer, static assets), one module per area — ``runs``,
``artifacts``, ``compare``, ``pipelines``, ``admin`` — ``graph`` (pipeline and lineage graphs
laid out in Python), ``home`` (who executes what the UI starts), ``templates/`` and
``static/`` (one stylesheet, one script, no third-party code). See docs/ui.md.

Every route declares its action through :func:`security.Page`, which asks the API's own
authorization dependency; every page reads through :mod:`argosy.service` (or, for tenant
administration, the functions of the API's routes and :mod:`argosy.auth`).
"""

from __future__ import annotations

from fastapi import FastAPI

from argosy.server.ui import admin, artifacts, compare, pages, pipelines, runs
from argosy.server.ui.security import SecurityHeaders, install_error_pages

ROUTERS = (pages.router, runs.router, artifacts.router, compare.router, pipelines.router,
           admin.router)  # fmt: skip


def install(app: FastAPI) -> None:
    """Serve the UI from ``app``: its routes, its error pages, and security headers on every
    response (added last, so they wrap admission's refusals too)."""
    for router in ROUTERS:
        app.include_router(router)
    install_error_pages(app, pages.render_error)
    app.add_middleware(SecurityHeaders)
