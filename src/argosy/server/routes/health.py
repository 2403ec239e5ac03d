"""Liveness and readiness probes (outside ``/api/v1``; no authentication ever).

``/healthz`` answers from memory: the process is up and serving HTTP. ``/readyz`` checks
what serving needs — the metadata database answers, its schema is at this version's
revision, the artifact store is reachable, and the instance is not draining — and answers
``503`` with ``Retry-After`` and the failed checks otherwise, so a load balancer sends
requests elsewhere until it is ready again.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from argosy import api
from argosy.auth.policy import Action
from argosy.config import LOCAL_TENANT
from argosy.server.context import ServerContext
from argosy.server.identity import authorized, context_of
from argosy.server.problems import RETRY_AFTER_S
from argosy.stores.metadata.db import HEAD, current_revision, error_summary, known_revisions

router = APIRouter(tags=["health"], dependencies=[Depends(authorized(Action.PUBLIC))])
log = logging.getLogger("argosy.server")

ContextDep = Annotated[ServerContext, Depends(context_of)]


def _leader(context: ServerContext) -> bool | None:
    return context.coordinator.is_leader if context.coordinator is not None else None


@router.get("/healthz", response_model=api.Health, summary="Liveness")
def healthz(context: ContextDep) -> api.Health:
    """200 while the process serves HTTP (no database access)."""
    return api.Health(status="ok", instance=context.instance_id, leader=_leader(context))


def readiness(context: ServerContext) -> dict[str, str]:
    """Each check's outcome: ``ok`` or what failed."""
    checks: dict[str, str] = {}
    engine = context.metadata.engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        revision = current_revision(engine)
        if revision == HEAD or (revision is not None and revision not in known_revisions()):
            checks["migrations"] = "ok"  # a newer revision: expand/contract keeps us working
        else:
            checks["migrations"] = f"schema at revision {revision}, this server needs {HEAD}"
    except Exception as exc:
        checks["database"] = f"unavailable: {error_summary(exc)}"
    try:
        tenant = context.settings.tenant or LOCAL_TENANT
        store = context.store(tenant)
        store.backend.exists(f"{store.prefix}readyz")  # a cheap round trip (S3: HEAD)
        checks["artifacts"] = "ok"
    except Exception as exc:
        checks["artifacts"] = f"unavailable: {str(exc)[:300]}"
    coordinator = context.coordinator
    if coordinator is not None and getattr(coordinator, "draining", False):
        checks["instance"] = "draining: shutting down, send requests to another instance"
    return checks


@router.get(
    "/readyz",
    response_model=api.Health,
    summary="Readiness",
    responses={503: {"model": api.Health, "description": "not ready: `checks` says why"}},
)
def readyz(context: ContextDep) -> api.Health | JSONResponse:
    """200 when the database, its schema and the artifact store are ready; else 503."""
    checks = readiness(context)
    ok = all(v == "ok" for v in checks.values())
    doc = api.Health(
        status="ok" if ok else "unavailable", checks=checks, instance=context.instance_id,
        leader=_leader(context),
    )  # fmt: skip
    if ok:
        return doc
    log.warning("not ready: %s", {k: v for k, v in checks.items() if v != "ok"})
    return JSONResponse(
        doc.model_dump(mode="json"), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )
