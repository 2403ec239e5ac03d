"""Who is calling, and in which tenant: the two dependencies every API route uses.

Until authentication exists (the tenants/auth issue), :func:`current_principal` returns one
fixed local identity — the server's ``settings.user`` — for every request. That is why the
server refuses to listen on anything but loopback (see ``serve``). An ``Authorization:
Bearer ...`` header is accepted and documented in the OpenAPI schema, but NOT interpreted
yet: it neither grants nor denies anything. When OIDC and API tokens arrive, this module is
the one place that changes; routes keep depending on ``current_principal`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from argosy.server.context import ServerContext

TENANT_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

# documents bearer auth in OpenAPI; auto_error=False: a missing header is not an error (yet)
_bearer = HTTPBearer(
    auto_error=False,
    description="API token or OIDC access token (accepted, not yet interpreted: every request "
    "acts as the server's local user until authentication is configured)",
)


@dataclass(frozen=True)
class Principal:
    """A user (from OIDC/SCIM) or a service account (API token) and its groups."""

    name: str
    kind: str = "user"
    groups: tuple[str, ...] = ()


def context_of(request: Request) -> ServerContext:
    """The server's shared context (settings, database, stores, clock)."""
    context: ServerContext = request.app.state.context
    return context


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    """The caller. For now always the server's local user (``settings.user``): a bearer token,
    if sent, is accepted but not checked — authentication arrives with the tenants issue."""
    del credentials  # accepted, not interpreted yet
    return Principal(name=context_of(request).settings.user)


def tenant_path(
    tenant: Annotated[
        str,
        Path(
            pattern=TENANT_PATTERN,
            max_length=63,
            description="the tenant: a DNS-1123 label (lowercase letters, digits, '-')",
            examples=["default"],
        ),
    ],
) -> str:
    """The ``{tenant}`` path segment, validated as a DNS-1123 label (422 otherwise)."""
    return tenant


PrincipalDep = Annotated[Principal, Depends(current_principal)]
TenantDep = Annotated[str, Depends(tenant_path)]
ContextDep = Annotated[ServerContext, Depends(context_of)]
