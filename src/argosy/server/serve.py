"""Running the server: ``serve(settings, host=..., port=...)`` and ``python -m argosy.server.serve``.

The server fails closed: it refuses to start unless OIDC is configured (``oidc_issuer`` AND
``oidc_audience``) or it is started with ``--insecure-dev`` (``ARGOSY_INSECURE_DEV``), in
which case every request acts as the server's local user, the log says so loudly, every
response carries ``X-Argosy-Insecure: true``, and it listens on loopback only. With OIDC it
may listen on any address. The ``default`` tenant is created at start (platform admins own
it). Port 0 picks a free port; once the server accepts connections it prints one line to
stderr::

    argosy server listening on http://127.0.0.1:PORT (instance ID)

Tasks run as the unprivileged OS user ``task_user`` (``ARGOSY_TASK_USER``; the server then
needs root or CAP_SETUID/CAP_SETGID, and refuses to start if it cannot switch to that user,
if that user cannot run its Python, or if it is the server's own user). The state folder is
made private at start: mode 0700, or 0711 with a task user (enterable to reach
``attempts/ID/scratch``, never listable) with every entry but ``attempts`` and
``environments`` made owner-only; an SQLite database file is 0600. Without a task user a
server running as root warns loudly: its tasks run as root.

SIGTERM or SIGINT stop it gracefully: no new connections, open requests get
``HTTP_GRACE_S`` seconds, then the coordinator drains its runs (see ``coordinator``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from argosy.config import Settings, load_settings
from argosy.errors import ArgosyError, StoreError, UsageError
from argosy.server.context import ServerContext
from argosy.server.task_users import UID_SPAN

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HTTP_GRACE_S = 10  # open HTTP requests (log streams included) at shutdown

log = logging.getLogger("argosy.server")


def check_auth(settings: Settings) -> None:
    """Fail closed: no start without OIDC (issuer and audience) unless ``insecure_dev``."""
    if settings.insecure_dev:
        return
    if not settings.oidc_issuer or not settings.oidc_audience:
        missing = " and ".join(
            n for n, v in (("ARGOSY_OIDC_ISSUER", settings.oidc_issuer),
                           ("ARGOSY_OIDC_AUDIENCE", settings.oidc_audience)) if not v
        )  # fmt: skip
        raise UsageError(
            f"refusing to start without authentication: set {missing} (see docs/security.md), "
            "or pass --insecure-dev for a local development server"
        )


def check_host(host: str, settings: Settings | None = None) -> None:
    """Without authentication (``insecure_dev``) listen on loopback only."""
    if host not in LOOPBACK and (settings is None or settings.insecure_dev):
        raise UsageError(
            f"refusing to listen on {host!r} with --insecure-dev (no authentication): use "
            "127.0.0.1, localhost or ::1, or configure OIDC (ARGOSY_OIDC_ISSUER, "
            "ARGOSY_OIDC_AUDIENCE) to listen elsewhere"
        )


TASK_USER_SETUP = "useradd --system --no-create-home --shell /usr/sbin/nologin {name}"
SHARED_ENTRIES = ("attempts", "environments")  # what a task user reaches in the state folder


def check_task_user(settings: Settings) -> None:
    """With ``task_user``: it exists, is not the server's own user, and the server can start
    its Python as that user (which needs root or CAP_SETUID). Fails with one line."""
    name = settings.task_user
    if not name:
        if os.geteuid() == 0 and settings.executor == "local":  # pods run as their own uid
            log.warning(
                "TASKS RUN AS ROOT: this server runs as root and ARGOSY_TASK_USER is not set; "
                "set it to an unprivileged user (%s) so that tasks cannot read the server's "
                "state, database and keys", TASK_USER_SETUP.format(name="argosy-task"),
            )  # fmt: skip
        return
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(
            f"ARGOSY_TASK_USER names {name!r}, which does not exist: create it with "
            f"'{TASK_USER_SETUP.format(name=name)}'"
        ) from None
    if entry.pw_uid == os.geteuid() or entry.pw_uid == 0:
        raise UsageError(
            f"ARGOSY_TASK_USER must be an unprivileged user other than the server's own; "
            f"{name!r} has uid {entry.pw_uid}"
        )
    base = settings.task_uid_base
    if base is None:
        log.warning(
            "tasks of all tenants run as the one user %r: set ARGOSY_TASK_UID_BASE (e.g. "
            "700000) so that each tenant's tasks get their own uid", name,
        )  # fmt: skip
    else:  # per-tenant uids: none of them may be a real user's
        taken = sorted(e.pw_name for e in pwd.getpwall() if base <= e.pw_uid < base + UID_SPAN)
        if taken:
            raise UsageError(
                f"ARGOSY_TASK_UID_BASE={base}: uids {base}..{base + UID_SPAN - 1} must be unused, "
                f"but {', '.join(taken[:3])} use some; choose another base"
            )


def check_task_reach(settings: Settings) -> None:
    """With ``task_user``: the server can start its Python as that user (root or CAP_SETUID
    needed), and that user can import Argosy and enter the attempts folder."""
    name = settings.task_user
    if not name:
        return
    import argosy

    entry = pwd.getpwnam(name)
    src = str(Path(argosy.__file__).resolve().parent.parent)
    code = "import os,sys,argosy.runtime.launcher;os.stat(sys.argv[1])"
    try:
        probe = subprocess.run(
            [sys.executable, "-c", code, str(settings.attempts_dir)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src},
            cwd="/", user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except PermissionError as exc:
        if exc.errno != errno.EPERM:  # EACCES: the interpreter is out of the user's reach
            raise UsageError(
                f"ARGOSY_TASK_USER={name} cannot run the server's Python {sys.executable} "
                f"({exc.strerror}); make the interpreter, its packages and {src} readable by "
                "that user (e.g. install them outside /root)"
            ) from None
        raise UsageError(
            f"ARGOSY_TASK_USER={name} needs a server that can switch users: run it as root "
            "(or with CAP_SETUID and CAP_SETGID), or unset ARGOSY_TASK_USER"
        ) from None
    if probe.returncode != 0:
        last = (probe.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise UsageError(
            f"ARGOSY_TASK_USER={name} cannot run the server's Python {sys.executable} with "
            f"Argosy ({last}); make the interpreter, its packages and {src} readable by that "
            f"user (e.g. install them outside /root), and the folders above {settings.home} "
            "enterable (o+x)"
        )


def protect_state(settings: Settings) -> None:
    """The state folder private (see the module's docstring); the SQLite database 0600."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    if not settings.task_user:
        os.chmod(home, 0o700)
    else:
        os.chmod(home, 0o711)
        for entry in home.iterdir():
            if entry.name in SHARED_ENTRIES or entry.is_symlink():
                continue
            mode = entry.stat().st_mode & 0o7777
            if mode & 0o077:
                os.chmod(entry, mode & ~0o077)
        attempts = settings.attempts_dir
        attempts.mkdir(exist_ok=True)
        os.chmod(attempts, 0o711)
        for name in ("cache", "blobs"):  # created here private, not later with the umask's mode
            if name != "blobs" or settings.artifacts_url == str(home / "blobs"):
                (home / name).mkdir(mode=0o700, exist_ok=True)
    url = settings.metadata_url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            if path.exists():
                os.chmod(path, 0o600)


def ensure_default_tenant(context: ServerContext) -> None:
    """The ``default`` tenant exists (created at the first start; platform admins own it)."""
    from argosy.config import LOCAL_TENANT
    from argosy.stores.metadata.runs import ensure_tenant

    context.metadata.retrying(lambda s: ensure_tenant(s, LOCAL_TENANT, "argosy"))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = "127.0.0.1" if host == "localhost" else host
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then; without
    # it every keep-alive response waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another port "
            "(--port, ARGOSY_SERVER_PORT) or stop what uses it"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def open_context(settings: Settings) -> ServerContext:
    """The server context, waiting (up to ``db_retry_seconds``) for a database that is down."""
    deadline = time.monotonic() + settings.db_retry_seconds
    delay = 1.0
    while True:
        try:
            return ServerContext.open(settings)
        except StoreError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s; retrying in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    logging.getLogger("argosy").setLevel(logging.INFO)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    coordinator: bool = True,
) -> None:
    """Serve the API until SIGTERM/SIGINT. ``coordinator=False`` serves the API only (this
    instance claims no runs and never leads the scheduler)."""
    import uvicorn

    from argosy.server.app import create_app

    host = host or settings.server_host
    port = settings.server_port if port is None else port
    check_auth(settings)
    check_host(host, settings)
    _configure_logging()
    check_task_user(settings)
    if settings.executor == "kubernetes" and not settings.task_token_key:
        log.warning(
            "ARGOSY_EXECUTOR=kubernetes without ARGOSY_TASK_TOKEN_KEY: a pod's task token is "
            "valid only on this instance, so with several replicas behind the Service, or "
            "after a restart, its requests are refused; give every instance the same key "
            "(head -c 32 /dev/urandom | base64)"
        )
    if settings.insecure_dev:
        log.warning(
            "INSECURE DEVELOPMENT SERVER: no authentication, every request acts as %r with every "
            "permission; never expose it (--insecure-dev)", settings.user,
        )  # fmt: skip
    else:
        log.info("authentication: OIDC issuer %s, audience %s", settings.oidc_issuer,
                 settings.oidc_audience)  # fmt: skip
    sock = bind(host, port)
    try:
        context = open_context(settings)
    except BaseException:
        sock.close()
        raise
    try:
        protect_state(settings)
        check_task_reach(settings)
        ensure_default_tenant(context)
    except BaseException:
        sock.close()
        context.metadata.close()
        raise
    if coordinator:
        try:
            from argosy.server.coordinator import Coordinator
        except ImportError:  # not part of this build yet: serve the API only
            log.warning("no coordinator available: this instance serves the API only")
        else:
            context.coordinator = Coordinator(context)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    context.url = url

    class _Server(uvicorn.Server):
        drain: threading.Thread | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            """The first SIGTERM/SIGINT drains the coordinator while HTTP keeps serving (the
            running tasks reach the artifacts through this instance's task store, and
            ``/readyz`` says 503 so load balancers move away); then the server stops. A
            second signal stops at once."""
            coordinator = context.coordinator
            if coordinator is None or self.drain is not None or self.should_exit:
                super().handle_exit(sig, frame)
                return

            def drain() -> None:
                try:
                    coordinator.stop()
                finally:
                    self.should_exit = True

            self.drain = threading.Thread(target=drain, name="argosy-drain", daemon=True)
            self.drain.start()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown (so the process
            dies of the signal); a drained server exits with status 0 instead."""
            with super().capture_signals():
                yield
                self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(
                    f"argosy server listening on {url} (instance {context.instance_id})",
                    file=sys.stderr,
                    flush=True,
                )

    from argosy.server.connections import protocol

    config = uvicorn.Config(
        create_app(context),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=HTTP_GRACE_S,
        lifespan="on",
        # headers due within request_header_timeout (408); X-Forwarded-For is believed only
        # from ARGOSY_TRUSTED_PROXIES, by admission (never by uvicorn, which trusts loopback)
        http=protocol(settings.request_header_timeout),
        proxy_headers=False,
    )
    try:
        _Server(config).run(sockets=[sock])
    finally:
        sock.close()
        context.metadata.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m argosy.server.serve [--host H] [--port P] [--no-coordinator]``."""
    parser = argparse.ArgumentParser(prog="python -m argosy.server.serve", description=__doc__)
    parser.add_argument("--host", default=None, help="address (default: settings)")
    parser.add_argument("--port", type=int, default=None, help="port (0: a free one)")
    parser.add_argument(
        "--no-coordinator", action="store_true", help="serve the API only: claim no runs"
    )
    parser.add_argument(
        "--insecure-dev", action="store_true",
        help="serve WITHOUT authentication (development only; loopback only; announced)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = load_settings(insecure_dev=True if args.insecure_dev else None)
        serve(settings, host=args.host, port=args.port, coordinator=not args.no_coordinator)
    except ArgosyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
