"""What every page shares: templates, the viewer (who, in which tenant, allowed what), the
static assets, the landing redirect and the error page.

Templates are Jinja2 with autoescaping on for every template, so every string a user or a
step wrote — pipeline, step, parameter and artifact names, log lines, metric keys, display
names — is text, never markup. Pages never embed a script or a style: the one stylesheet and
the one script are static files (``/static/ui.css``, ``/static/ui.js``), and data a script
needs is in ``data-*`` attributes.

What a viewer may do is asked of :func:`argosy.auth.policy.authorize` with the tenant's role
bindings (:meth:`Viewer.can`) — the function that decides every request — so a page shows a
button exactly when the request behind it would be allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Path, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from argosy import api
from argosy.auth import bindings as tb
from argosy.auth.policy import Action, Binding, authorize
from argosy.server.identity import ContextDep, Principal
from argosy.server.ui.security import Page, PageProblem
from argosy.units import format_bytes

router = APIRouter(include_in_schema=False)

ASSETS = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}


def _asset_bytes(name: str) -> bytes:
    return resources.files("argosy.server.ui").joinpath("static", name).read_bytes()


ASSET_VERSION = hashlib.sha256(b"".join(_asset_bytes(n) for n in sorted(ASSETS))).hexdigest()[:12]


# -- formatting for templates ----------------------------------------------------------------------
def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    return seconds_text(seconds)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("argosy.server.ui", "templates"),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    when=when, short=short, pretty=pretty, bytes=format_bytes, number=number,
    seconds=seconds_text,
)  # fmt: skip
_env.globals.update(duration=duration, asset_version=ASSET_VERSION, urlencode=urlencode)


# -- who is looking ---------------------------------------------------------------------------------
@dataclass
class Viewer:
    """The principal, the tenant of the page (None outside one), the tenants it may switch to,
    and the tenant's role bindings (what :meth:`can` asks the policy with)."""

    principal: Principal
    tenant: str | None
    tenants: list[api.Tenant]
    bindings: list[Binding] = field(default_factory=list)
    local: bool = False
    login: bool = False  # browser login is configured (a logout button makes sense)

    def can(self, action: Action | str) -> bool:
        """Whether the policy allows ``action`` in this page's tenant."""
        found = Action(action) if isinstance(action, str) else action
        return authorize(self.principal, self.tenant, found, self.bindings).allowed

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def platform_admin(self) -> bool:
        return self.principal.platform_admin or self.principal.kind == "local"

    @property
    def tenant_document(self) -> api.Tenant | None:
        return next((t for t in self.tenants if t.name == self.tenant), None)


def viewer(request: Request, context: Any, principal: Principal, tenant: str | None) -> Viewer:
    """The :class:`Viewer` of a request (two or three indexed queries)."""
    from argosy.server.routes.tenants import tenant_document

    sees_all = principal.platform_admin or principal.kind == "local"
    with context.metadata.session() as s:
        roles = tb.roles_of(s, principal)
        rows = tb.list_tenants(s, None if sees_all else roles)
        tenants = [tenant_document(r, roles.get(r.name)) for r in rows]
        found = tb.load_bindings(s, tenant) if tenant is not None else []
    settings = context.settings
    return Viewer(
        principal, tenant, tenants, found, local=getattr(request.app.state, "ui_local", False),
        login=bool(settings.oidc_issuer and settings.oidc_client_id),
    )  # fmt: skip


def render(
    request: Request, template: str, view: Viewer, *, status: int = 200, **values: Any
) -> HTMLResponse:
    """The page ``template`` with ``values``, for ``view``."""
    body = _env.get_template(template).render(
        request=request, view=view, path=request.url.path, Action=Action, **values
    )
    return HTMLResponse(body, status_code=status)


def render_error(request: Request, status: int, detail: str) -> Response:
    """The error page (also for refusals, before any viewer is known)."""
    from argosy.server.problems import title_of

    body = _env.get_template("error.html").render(
        request=request, view=None, path=request.url.path, status=status, title=title_of(status),
        detail=detail, Action=Action,
    )  # fmt: skip
    return HTMLResponse(body, status_code=status)


def tenant_url(tenant: str, *parts: str, **query: Any) -> str:
    from urllib.parse import quote

    url = f"/t/{tenant}" + "".join("/" + quote(p, safe="[]") for p in parts)
    wanted = {k: v for k, v in query.items() if v not in (None, "", [])}
    return url + (f"?{urlencode(wanted, doseq=True)}" if wanted else "")


_env.globals.update(tenant_url=tenant_url)


# -- routes ------------------------------------------------------------------------------------------
@router.get("/", name="ui_home")
def home(
    request: Request,
    principal: Annotated[Principal, Page(Action.AUTHENTICATED)],
    context: ContextDep,
) -> Response:
    """The runs of the first tenant the user may see; a page saying so when there is none."""
    view = viewer(request, context, principal, None)
    if not view.tenants:
        return render(request, "no_tenant.html", view)
    names = [t.name for t in view.tenants]
    first = "default" if "default" in names and principal.kind == "local" else names[0]
    return RedirectResponse(tenant_url(first, "runs"), 303)


@router.get("/static/{asset}", name="ui_static")
def static(
    asset: Annotated[str, Path(max_length=40)],
    _: Annotated[Principal, Page(Action.PUBLIC)],
) -> Response:
    """The UI's stylesheet and script (no third-party code)."""
    if asset not in ASSETS:
        raise PageProblem(404, f"no asset {asset!r}", code="not_found")
    return Response(
        _asset_bytes(asset), media_type=ASSETS[asset],
        headers={"Cache-Control": "public, max-age=86400", "ETag": f'"{ASSET_VERSION}"'},
    )  # fmt: skip
