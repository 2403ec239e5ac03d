"""``argosy tenants|members|tokens ...`` and ``argosy login``: tenants, role bindings and API
tokens on a server, and storing the credential the CLI sends.

``argosy login --token TOKEN`` stores a bearer token (an OIDC access token or an API token)
for the server in ``~/.config/argosy/credentials`` (mode 0600; ``$XDG_CONFIG_HOME`` is
honoured); the CLI sends it when ``ARGOSY_TOKEN`` is not set. Registered on the ``argosy``
app by :func:`register`.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from argosy.client.credentials import store_token


class Format(StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Format,
    typer.Option(
        "--output", "-o", help="text for people, json for programs (one document on stdout)"
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", metavar="URL", show_default=False,
        help="the Argosy server (default: the global --server, ARGOSY_SERVER)",
    ),
]  # fmt: skip


def _require_remote(server: str | None, command: str) -> Any:
    from argosy.cli import main

    return main._require_remote(server, command)


def _settings(**overrides: Any) -> Any:
    from argosy.config import load_settings

    return load_settings(**overrides)


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
def login(
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="a bearer token (OIDC access token or argosy_ API token) to store"
        ),
    ] = None,
    server: ServerOpt = None,
) -> None:
    """Store a token for the server (~/.config/argosy/credentials, mode 0600), check it, and
    say who you are there. ARGOSY_TOKEN, when set, wins over the stored token."""
    from argosy.cli.main import _global_server
    from argosy.client.client import Client
    from argosy.errors import UsageError

    settings = _settings(server=server or _global_server)
    if not settings.server:
        raise UsageError("'argosy login' needs a server: pass --server URL or set ARGOSY_SERVER")
    if not token:
        raise UsageError(
            "pass --token TOKEN (an access token from your identity provider, or an API token "
            "from 'argosy tokens create'); browser and device login are not available yet"
        )
    with Client(settings.server, token=token, tenant=settings.tenant) as client:
        me = client.me()
    path = store_token(settings.server, token)
    roles = ", ".join(f"{t}: {r}" for t, r in me.roles.items()) or "no roles yet"
    print(f"logged in to {settings.server} as {me.name} ({me.subject}; {roles}); token in {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(members_app, name="members")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(secrets_app, name="secrets")
    app.command("login")(login)
