"""``argosy tenants|members|tokens ...`` and ``argosy login``: tenants, role bindings and API
tokens on a server, and storing the credential the CLI sends.

``argosy login --token TOKEN`` stores a bearer token (an OIDC access token or an API token)
for the server in ``~/.config/argosy/credentials`` (mode 0600; ``$XDG_CONFIG_HOME`` is
honoured); the CLI sends it when ``ARGOSY_TOKEN`` is not set. Without ``--token`` it logs in
with the OAuth device flow (RFC 8628) of the server's issuer (``GET /api/v1/auth/config``):
it prints the verification URI and user code (``--browser`` also opens it), polls the token
endpoint (honouring ``interval`` and ``slow_down``) and stores the access token (and the
refresh token, if any). Registered on the ``argosy``
app by :func:`register`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from argosy.cli.options import Format, OutputOpt, ServerOpt
from argosy.client.credentials import store_token


def _require_remote(server: str | None, command: str) -> Any:
    from argosy.cli import main

    return main._require_remote(server, command)


def _settings(**overrides: Any) -> Any:
    from argosy.cli import main

    return main._settings(**overrides)


tenants_app = typer.Typer(
    help="Tenants on a server: create, list, show, archive.", no_args_is_help=True
)
members_app = typer.Typer(
    help="A tenant's role bindings (users and IdP groups): list, add, remove.",
    no_args_is_help=True,
)
tokens_app = typer.Typer(
    help="A tenant's API tokens for CI and services: create, list, revoke.", no_args_is_help=True
)

secrets_app = typer.Typer(
    help="A tenant's secrets on a server: set, list (names only), delete.", no_args_is_help=True
)

RoleOpt = Annotated[str, typer.Option("--role", help="viewer, editor or owner")]


def _emit(json_output: bool, doc: Any, lines: list[str]) -> None:
    from argosy.cli.commands import emit_json

    if json_output:
        emit_json(doc)
    else:
        for line in lines:
            print(line)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _lifetime_days(text: str) -> float:
    from argosy.auth.tokens import parse_lifetime

    return parse_lifetime(text).total_seconds() / 86400


# -- tenants ------------------------------------------------------------------------------------
@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="a DNS-1123 label (immutable)")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Create a tenant (platform admins); then add its owners with 'argosy members add'."""
    with _require_remote(server, "tenants create") as client:
        t = client.create_tenant(name, display_name)
    _emit(output == Format.json, _dump(t), [f"tenant {t.name} created"])


@tenants_app.command("list")
def tenants_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
    """The tenants you have a role in (platform admins: all)."""
    with _require_remote(server, "tenants list") as client:
        found = client.list_tenants()
    _emit(
        output == Format.json, {"tenants": [_dump(t) for t in found]},
        [f"{t.name}\t{t.role or '-'}\t{'archived' if t.archived else 'active'}" for t in found],
    )  # fmt: skip


@tenants_app.command("show")
def tenants_show(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """A tenant's settings and state."""
    with _require_remote(server, "tenants show") as client:
        t = client.get_tenant(name)
    _emit(output == Format.json, _dump(t), [json.dumps(_dump(t), indent=2)])


@tenants_app.command("archive")
def tenants_archive(
    name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
) -> None:
    """Make a tenant read-only (platform admins); its data stays."""
    with _require_remote(server, "tenants archive") as client:
        client.archive_tenant(name)
    print(f"tenant {name} archived")


# -- members ------------------------------------------------------------------------------------
def _subject(user: str | None, group: str | None) -> tuple[str, str]:
    from argosy.errors import UsageError

    if bool(user) == bool(group):
        raise UsageError("name exactly one of --user SUBJECT or --group GROUP")
    return ("user", user) if user else ("group", group or "")


@members_app.command("list")
def members_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
    """The tenant's role bindings (ARGOSY_TENANT)."""
    with _require_remote(server, "members list") as client:
        found = client.list_members()
    _emit(
        output == Format.json, {"members": [_dump(m) for m in found]},
        [f"{m.id}\t{m.role}\t{m.subject_kind}\t{m.subject}" for m in found],
    )  # fmt: skip


@members_app.command("add")
def members_add(
    role: RoleOpt,
    user: Annotated[str | None, typer.Option("--user", help="a user's subject claim")] = None,
    group: Annotated[str | None, typer.Option("--group", help="an IdP group")] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Give a user or an IdP group a role in the tenant (owners)."""
    kind, subject = _subject(user, group)
    with _require_remote(server, "members add") as client:
        m = client.add_member(role, kind, subject)
    _emit(output == Format.json, _dump(m), [f"{kind} {subject} is {role} ({m.id})"])


@members_app.command("remove")
def members_remove(
    binding_id: Annotated[str, typer.Argument(metavar="BINDING_ID")], server: ServerOpt = None
) -> None:
    """Remove a role binding (see 'argosy members list'); effective at the next request."""
    with _require_remote(server, "members remove") as client:
        client.remove_member(binding_id)
    print(f"role binding {binding_id} removed")


# -- tokens -------------------------------------------------------------------------------------
@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="what it is for, e.g. ci")],
    role: RoleOpt,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="lifetime: e.g. 30d, 12h (at most 365d)")
    ] = "30d",
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Create an API token (owners); it is printed once: store it now."""
    days = _lifetime_days(expires_in)
    with _require_remote(server, "tokens create") as client:
        t = client.create_token(name, role, days)
    _emit(
        output == Format.json, _dump(t),
        [t.token, f"# token {t.id} ({t.role}, expires {t.expires_at:%Y-%m-%d}): shown only "
                  "now; send it as ARGOSY_TOKEN"],
    )  # fmt: skip


@tokens_app.command("list")
def tokens_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
    """The tenant's API tokens (never their values)."""
    with _require_remote(server, "tokens list") as client:
        found = client.list_tokens()
    _emit(
        output == Format.json, {"tokens": [_dump(t) for t in found]},
        [f"{t.id}\t{t.name}\t{t.role}\t{t.prefix}...\texpires {t.expires_at:%Y-%m-%d}"
         + ("\trevoked" if t.revoked_at else "") for t in found],
    )  # fmt: skip


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID")], server: ServerOpt = None
) -> None:
    """Revoke an API token: refused from its next request on."""
    with _require_remote(server, "tokens revoke") as client:
        client.revoke_token(token_id)
    print(f"token {token_id} revoked")


# -- secrets ------------------------------------------------------------------------------------
@secrets_app.command("set")
def secrets_set(
    name: Annotated[str, typer.Argument(metavar="NAME", help="an env-var name, e.g. HF_TOKEN")],
    from_env: Annotated[
        str | None,
        typer.Option("--from-env", metavar="VAR", help="read the value from this variable"),
    ] = None,
    server: ServerOpt = None,
) -> None:
    """Store a secret. The value comes from --from-env VAR, else from standard input (one
    line, or a hidden prompt on a terminal) — never from the command line, where it would
    land in the shell history."""
    import os
    import sys

    from argosy.errors import UsageError

    if from_env is not None:
        if from_env not in os.environ:
            raise UsageError(f"--from-env {from_env}: that variable is not set")
        value = os.environ[from_env]
    elif sys.stdin.isatty():
        value = typer.prompt(f"value of {name}", hide_input=True)
    else:
        value = sys.stdin.read().rstrip("\n")
    if not value:
        raise UsageError(f"secret {name!r} would be empty; give a value on standard input")
    with _require_remote(server, "secrets set") as client:
        info = client.set_secret(name, value)
    print(f"secret {info.name} set (encrypted; steps that declare it receive it)")


@secrets_app.command("list")
def secrets_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
    """The tenant's secrets: names and who set them when (never values)."""
    with _require_remote(server, "secrets list") as client:
        found = client.list_secrets()
    _emit(
        output == Format.json, {"secrets": [_dump(s) for s in found]},
        [f"{s.name}\tset by {s.updated_by} at {s.updated_at:%Y-%m-%d %H:%M}" for s in found],
    )  # fmt: skip


@secrets_app.command("delete")
def secrets_delete(
    name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
) -> None:
    """Delete a secret: tasks started afterwards that declare it fail, saying so."""
    with _require_remote(server, "secrets delete") as client:
        client.delete_secret(name)
    print(f"secret {name} deleted")


# -- login --------------------------------------------------------------------------------------
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    import httpx

    from argosy.errors import ServerError

    try:
        response = httpx.post(url, data=form, timeout=30, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach the identity provider at {url}: {exc}") from None
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    return response.status_code, doc if isinstance(doc, dict) else {}


def device_login(server: str, *, open_browser: bool = False) -> tuple[str, str | None]:
    """Log in with the device flow of ``server``'s issuer: (access token, refresh token)."""
    import time
    import webbrowser

    import httpx

    from argosy.errors import ServerError, UsageError

    try:
        response = httpx.get(f"{server.rstrip('/')}/api/v1/auth/config", timeout=30)
        config = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError) as exc:
        raise ServerError(f"cannot read the login settings of {server}: {exc}") from None
    client_id = config.get("client_id")
    device_endpoint = config.get("device_authorization_endpoint")
    token_endpoint = config.get("token_endpoint")
    if not client_id or not device_endpoint or not token_endpoint:
        raise UsageError(
            f"{server} offers no device login (no OIDC client id or device endpoint): pass "
            "--token TOKEN (an access token, or an API token from 'argosy tokens create')"
        )
    status, start = _post_form(
        device_endpoint, {"client_id": client_id, "scope": str(config.get("scope") or "openid")}
    )
    if status != 200 or "device_code" not in start:
        raise ServerError(
            f"the identity provider refused device login: {start.get('error', status)}"
        )
    uri = start.get("verification_uri_complete") or start.get("verification_uri")
    print(f"to log in, open {start.get('verification_uri')} and enter the code "
          f"{start.get('user_code')}", flush=True)  # fmt: skip
    if start.get("verification_uri_complete"):
        print(f"(or open {start['verification_uri_complete']})", flush=True)
    if open_browser and isinstance(uri, str):
        webbrowser.open(uri)
    interval = float(start.get("interval") or 5)
    deadline = time.monotonic() + float(start.get("expires_in") or 600)
    form = {"grant_type": DEVICE_GRANT, "device_code": str(start["device_code"]),
            "client_id": client_id}  # fmt: skip
    while True:
        time.sleep(interval)
        status, doc = _post_form(token_endpoint, form)
        if status == 200 and isinstance(doc.get("access_token"), str):
            refresh = doc.get("refresh_token")
            return doc["access_token"], refresh if isinstance(refresh, str) else None
        error = doc.get("error")
        if error == "slow_down":
            interval += 5  # RFC 8628 3.5
        elif error == "expired_token" or (
            error == "authorization_pending" and time.monotonic() > deadline
        ):
            raise ServerError("the login code expired before it was approved; run 'argosy login' "
                              "again")  # fmt: skip
        elif error == "access_denied":
            raise ServerError("the login was refused at the identity provider")
        elif error != "authorization_pending":
            raise ServerError(f"device login failed: {error or status}: "
                              f"{doc.get('error_description', '')}".rstrip(": "))  # fmt: skip


def login(
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="a bearer token (OIDC access token or argosy_ API token) to store"
        ),
    ] = None,
    browser: Annotated[
        bool, typer.Option("--browser", help="device login: also open the page in a browser")
    ] = False,
    server: ServerOpt = None,
) -> None:
    """Log in to a server and say who you are there. Without --token: device login at the
    server's identity provider (open the printed page, enter the code). The token is stored
    in ~/.config/argosy/credentials (mode 0600); ARGOSY_TOKEN, when set, wins over it."""
    from argosy.cli.main import _global_server
    from argosy.client.client import Client
    from argosy.errors import UsageError

    settings = _settings(server=server or _global_server)
    if not settings.server:
        raise UsageError("'argosy login' needs a server: pass --server URL or set ARGOSY_SERVER")
    refresh: str | None = None
    if not token:
        token, refresh = device_login(settings.server, open_browser=browser)
    with Client(settings.server, token=token, tenant=settings.tenant) as client:
        me = client.me()
    path = store_token(settings.server, token, refresh)
    roles = ", ".join(f"{t}: {r}" for t, r in me.roles.items()) or "no roles yet"
    print(f"logged in to {settings.server} as {me.name} ({me.subject}; {roles}); token in {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(members_app, name="members")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(secrets_app, name="secrets")
    app.command("login")(login)
