"""``argosy ui``: the web UI on this machine's state folder (local mode).

The same pages as ``argosy server`` serves at ``/``, over the local ``.argosy`` state, with one
implicit user (the local user, who may do everything, as on the command line). There is no
identity provider, so :class:`argosy.server.ui.security.LocalGuard` keeps other local users
and web pages out, as Jupyter does: the server listens on 127.0.0.1 only; it prints a URL with
a random one-time token, which the browser exchanges for a session cookie; it refuses every
request without that cookie, every ``Host`` but the one printed (DNS rebinding), and every
state change without the CSRF token. Runs launched or retried from the UI are executed on this
machine by a background ``argosy runs resume`` process (as ``argosy run --detach``).

Importing this module is cheap: :func:`register` adds the command; it imports the server when
it runs.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def serve_local(settings: Any, *, port: int, open_browser: bool) -> None:
    """Serve the UI on ``127.0.0.1:port`` (0: a free port) until Ctrl-C."""
    import secrets
    import webbrowser

    import uvicorn

    from argosy.client.local import LocalBackend
    from argosy.server.app import create_app
    from argosy.server.connections import protocol
    from argosy.server.context import ServerContext
    from argosy.server.serve import bind
    from argosy.server.ui.home import LocalHome
    from argosy.server.ui.security import LocalGuard, SecurityHeaders
    from argosy.stores.metadata.runs import ensure_tenant

    local = settings.model_copy(
        update={"insecure_dev": True, "encryption": bool(settings.encryption)}
    )
    context = ServerContext.open(local)
    context.metadata.retrying(lambda s: ensure_tenant(s, local.tenant, local.user))
    app = create_app(context)
    app.state.ui_home = LocalHome(LocalBackend(settings))
    app.state.ui_local = True
    sock = bind(HOST, port)
    bound = sock.getsockname()[1]
    host = f"{HOST}:{bound}"
    token = secrets.token_urlsafe(32)
    url = f"http://{host}/?token={token}"
    guarded = SecurityHeaders(LocalGuard(app, host=host, token=token))  # headers on its answers too
    print(
        f"argosy ui: {settings.home} at http://{host}/\n"
        f"open this link once to sign this browser in (it works one time):\n  {url}",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(
        guarded, log_config=None, access_log=False, lifespan="on",
        http=protocol(local.request_header_timeout), proxy_headers=False,
    )  # fmt: skip
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        context.metadata.close()


def register(app: typer.Typer) -> None:
    """Add ``argosy ui`` to the CLI."""

    @app.command("ui")
    def ui(
        port: Annotated[
            int, typer.Option(help=f"port on 127.0.0.1 (0: any free; default {DEFAULT_PORT})")
        ] = DEFAULT_PORT,
        open_browser: Annotated[
            bool, typer.Option("--open/--no-open", help="open the sign-in link in a browser")
        ] = True,
    ) -> None:
        """Open the web UI on this machine's runs (the local state folder): 127.0.0.1 only,
        with a one-time sign-in link."""
        from argosy.config import load_settings

        serve_local(load_settings(), port=port, open_browser=open_browser)
