"""The API's routes, one module per resource. A route authorizes (its ``Allowed(Action.X)``
dependency), makes one call to the application layer (:mod:`argosy.service`) and lets the
error handlers map what it raises; it holds no SQL and changes no state itself.

Lists are keyset pages (:mod:`argosy.service.paging`): pass ``next_cursor`` back as ``cursor``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from argosy import api
from argosy.server.context import ServerContext
from argosy.server.identity import Principal
from argosy.service import ServiceContext
from argosy.service.documents import must_utc, utc

__all__ = [
    "CursorQuery",
    "LimitQuery",
    "RunIdPath",
    "must_utc",
    "service_context",
    "tenant_router",
    "utc",
]

LimitQuery = Annotated[
    int, Query(ge=1, le=200, description="page size: how many items at most (1-200)")
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=200, description="``next_cursor`` of the previous page (omit for the first)"),
]
RunIdPath = Annotated[
    str,
    Path(
        min_length=4,
        max_length=26,
        pattern=r"^[0-9A-Za-z]+$",
        description="a run id, or a unique prefix of it (at least 4 characters)",
    ),
]


def tenant_router(tag: str) -> APIRouter:
    """A router for a tenant-scoped resource. Each of its routes declares its action with
    ``principal: Annotated[Principal, Allowed(Action.X)]`` (see ``server.identity``)."""
    return APIRouter(prefix=f"{api.API_PREFIX}/tenants/{{tenant}}", tags=[tag])


def service_context(context: ServerContext, tenant: str, principal: Principal) -> ServiceContext:
    """The application layer's view of one authorized request."""
    s = context.settings
    return ServiceContext(
        metadata=context.metadata,
        store=context.store(tenant),
        tenant=tenant,
        actor=principal.subject,
        attempts_dir=s.attempts_dir,
        max_parameter_bytes=s.max_parameter_bytes,
    )
