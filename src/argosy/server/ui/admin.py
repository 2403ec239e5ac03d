"""Tenant administration pages (owners): members and group bindings, API tokens, secrets
(names only), settings and quotas, the audit log; and every tenant (platform admins).

Each page reads through the functions the API's routes use (:mod:`argosy.server.routes`
``members``, ``tokens``, ``secrets``, ``tenants``, ``audit``; :mod:`argosy.auth`), and each
change is a call of the API itself from the page's script (``POST .../members``,
``PUT .../secrets/NAME`` ...), authorized and CSRF-checked as every API call is. A token's
value is in the answer to its creation only, shown once by the script and never rendered by a
page; a secret's value is never returned by anything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from argosy.auth.policy import Action
from argosy.server.identity import ContextDep, Principal, TenantDep
from argosy.server.routes import audit as audit_routes
from argosy.server.routes import members as member_routes
from argosy.server.routes import secrets as secret_routes
from argosy.server.routes import tenants as tenant_routes
from argosy.server.routes import tokens as token_routes
from argosy.server.ui.pages import render, viewer
from argosy.server.ui.runs import _time
from argosy.server.ui.security import Page, PageProblem, as_page_errors

router = APIRouter(include_in_schema=False)

Text = Annotated[str | None, Query(max_length=255)]
OUTCOMES = ("allowed", "denied", "failed")


@router.get("/t/{tenant}/members", name="ui_members")
def members_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.MEMBER_READ)],
    context: ContextDep,
) -> Response:
    """Role bindings of users and identity-provider groups; owners add and remove them."""
    found = member_routes.list_members(tenant, principal, context)
    view = viewer(request, context, principal, tenant)
    return render(request, "members.html", view, members=found)


@router.get("/t/{tenant}/tokens", name="ui_tokens")
def tokens_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.TOKEN_READ)],
    context: ContextDep,
) -> Response:
    """API tokens (never their values); a new one is shown once, by the page's script."""
    found = token_routes.list_tokens(tenant, principal, context)
    view = viewer(request, context, principal, tenant)
    return render(request, "tokens.html", view, tokens=found)


@router.get("/t/{tenant}/secrets", name="ui_secrets")
def secrets_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.SECRET_READ)],
    context: ContextDep,
) -> Response:
    """Secrets by name (a value is written, never read back)."""
    found = secret_routes.list_secrets(tenant, principal, context)
    view = viewer(request, context, principal, tenant)
    return render(request, "secrets.html", view, secrets=found)


@router.get("/t/{tenant}/settings", name="ui_settings")
def settings_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.TENANT_READ)],
    context: ContextDep,
) -> Response:
    """The tenant's display name, settings and quotas (quotas are set by platform admins)."""
    found = tenant_routes.get_tenant(tenant, principal, context)
    view = viewer(request, context, principal, tenant)
    return render(request, "settings.html", view, tenant_doc=found)


@router.get("/t/{tenant}/audit", name="ui_audit")
def audit_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.AUDIT_READ)],
    context: ContextDep,
    actor: Text = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """The tenant's audit events, newest first, filtered by actor, action, outcome and time."""
    if outcome and outcome not in OUTCOMES:
        raise PageProblem(422, f"outcome must be one of {', '.join(OUTCOMES)}", code="invalid")
    with as_page_errors():
        page = audit_routes.list_tenant_audit(
            tenant, context, actor=actor or None, action=action or None,
            outcome=outcome or None,  # type: ignore[arg-type]
            since=_time(since, "since"), until=_time(until, "until"), limit=50,
            cursor=cursor or None,
        )  # fmt: skip
    filters = {"actor": actor or "", "action": action or "", "outcome": outcome or "",
               "since": since or "", "until": until or ""}  # fmt: skip
    view = viewer(request, context, principal, tenant)
    return render(
        request, "audit.html", view, page=page, filters=filters, outcomes=OUTCOMES,
        cursor=cursor, base=f"/t/{tenant}/audit",
    )  # fmt: skip


@router.get("/admin/audit", name="ui_audit_all")
def audit_all_page(
    request: Request,
    principal: Annotated[Principal, Page(Action.AUDIT_READ_ALL)],
    context: ContextDep,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    actor: Text = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Every tenant's audit events (platform admins), filtered like a tenant's."""
    if outcome and outcome not in OUTCOMES:
        raise PageProblem(422, f"outcome must be one of {', '.join(OUTCOMES)}", code="invalid")
    with as_page_errors():
        page = audit_routes.list_audit(
            context, tenant=tenant or None, actor=actor or None, action=action or None,
            outcome=outcome or None,  # type: ignore[arg-type]
            since=_time(since, "since"), until=_time(until, "until"), limit=50,
            cursor=cursor or None,
        )  # fmt: skip
    filters = {"tenant": tenant or "", "actor": actor or "", "action": action or "",
               "outcome": outcome or "", "since": since or "", "until": until or ""}  # fmt: skip
    view = viewer(request, context, principal, None)
    return render(
        request, "audit.html", view, page=page, filters=filters, outcomes=OUTCOMES,
        cursor=cursor, base="/admin/audit",
    )  # fmt: skip


@router.get("/admin/tenants", name="ui_tenants")
def tenants_page(
    request: Request,
    principal: Annotated[Principal, Page(Action.TENANT_LIST_ALL)],
    context: ContextDep,
) -> Response:
    """Every tenant (platform admins): create one, open its pages."""
    found = tenant_routes.list_tenants(principal, context)
    view = viewer(request, context, principal, None)
    return render(request, "tenants.html", view, tenants=found)
