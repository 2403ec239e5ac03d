"""The FastAPI application: the REST API under ``/api/v1``, health probes, problem responses.

``create_app(context)`` builds it around a :class:`ServerContext`; routes read the context
from ``request.app.state.context``. The lifespan starts the instance's coordinator (run
claims, heartbeat, scheduler lease) after start-up and stops it — draining its runs — at
shutdown. Route handlers are plain functions: FastAPI runs them in its thread pool, so a
slow database call never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

import argosy
from argosy.api import API_PREFIX
from argosy.server import admission, audit_middleware, operations, problems, ui
from argosy.server.context import ServerContext
from argosy.server.identity import INSECURE_HEADER
from argosy.server.routes import (
    artifacts,
    blobs,
    health,
    login,
    logs,
    members,
    models,
    pipelines,
    runs,
    schedules,
    secrets,
    task_store,
    tenants,
    tokens,
    triggers,
    uploads,
)
from argosy.server.routes import audit as audit_routes
from argosy.server.routes import kfp as kfp_routes
from argosy.server.routes import scim as scim_routes

DESCRIPTION = """\
The Argosy REST API: push pipeline versions, create and follow runs, read logs and artifacts,
manage schedules. Every resource lives in a tenant (`/api/v1/tenants/{tenant}/...`).

Errors are `application/problem+json` documents (RFC 9457) whose `detail` says what to do
and whose `code` is stable. Lists are pages: pass `next_cursor` back as `cursor`.
See docs/api.md for pagination, idempotency, ranges and log streams.
"""


def insecure_header(app: FastAPI) -> None:
    """Every response of an unauthenticated development server says so."""

    @app.middleware("http")
    async def _announce(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers[INSECURE_HEADER] = "true"
        return response


def create_app(context: ServerContext) -> FastAPI:
    """The API application serving ``context``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context.coordinator is not None:
            await run_in_threadpool(context.coordinator.start)
        try:
            async with audit_middleware.flushing(app):  # aggregated refusals, every few s
                yield
        finally:
            if context.coordinator is not None:
                await run_in_threadpool(context.coordinator.stop)

    app = FastAPI(
        title="Argosy",
        version=getattr(argosy, "__version__", "0.1.0"),
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = context
    problems.install(app)
    app.include_router(health.router)
    app.include_router(login.router)  # /auth/login, /auth/callback, /auth/logout
    app.include_router(login.api_router)  # /api/v1/auth/config
    for module in (
        blobs,
        uploads,
        pipelines,
        runs,
        artifacts,
        logs,
        schedules,
        models,
        triggers,
        secrets,
        task_store,
    ):
        app.include_router(module.router)
    for router in (tenants.me_router, tenants.router, members.router, tokens.router):
        app.include_router(router)
    app.include_router(kfp_routes.router)  # the KFP v2beta1 API kfp.Client uses
    if getattr(getattr(context, "settings", None), "insecure_dev", False):
        insecure_header(app)
    for audit_router in audit_routes.routers:
        app.include_router(audit_router)
    scim_routes.install(app)  # /scim/v2 (404 unless ARGOSY_SCIM_TOKEN is set)
    operations.install(app)  # log search, costs, retention, /metrics, access logs (issue 17)
    # admission: the gate, rate, media type, size, deadline and JSON depth of every request,
    # before its body is read; the audit middleware outside it records (and aggregates) refusals
    admission.install(app)
    audit_middleware.install(app)  # records mutating requests, denials, artifact reads
    ui.install(app)  # the web UI at / (its security headers wrap every response)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            app.openapi_schema = problems.problem_openapi(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
