"""Opening the metadata database (SQLite or PostgreSQL), durability checks, migrations to head,
and retries of idempotent work over transient disconnects.

SQLite runs in WAL mode with ``synchronous=FULL``; every write transaction starts with
``BEGIN IMMEDIATE`` so two engine processes never interleave writes or deadlock upgrading a
read lock.

PostgreSQL is reached through psycopg 3 (``postgres://`` and ``postgresql://`` URLs are read as
``postgresql+psycopg://``), with a bounded connection pool whose connections are pinged before
use, bounded connect/statement/lock waits, and TCP keepalives, so a dead server or a cut
connection surfaces as an error within seconds instead of a hang. At start-up the server's
``fsync`` and ``synchronous_commit`` are checked: with either off, a crash of the server can
lose committed run state, so one warning line says so. Migrations take an advisory lock, so
several processes opening a new database at once migrate it once.

The schema is brought to the newest Alembic revision on open.

What is retried: :func:`retry` re-runs a callable on a transient error (a refused or cut
connection, a server shutting down, a deadlock or serialization failure: the transaction was
rolled back). Only work that is safe to run twice may be retried — reads, and writes that are
idempotent; a commit cut off mid-way may or may not have happened.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from argosy.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0013"  # newest revision in migrations/versions; checked cheaply before running Alembic

log = logging.getLogger("argosy.metadata")
T = TypeVar("T")

# PostgreSQL bounds (the connection settings can be overridden in the URL's query, see below)
CONNECT_TIMEOUT_S = 10  # a server that does not answer fails the connect after this long
POOL_SIZE = 5  # connections kept open per process
POOL_OVERFLOW = 10  # extra connections under load, closed when returned
POOL_TIMEOUT_S = 30  # waiting for a free pooled connection
POOL_RECYCLE_S = 1800  # replace connections older than this (idle-killing proxies, failovers)
STATEMENT_TIMEOUT_MS = 60_000  # a runaway query is cancelled (migrations lift this)
LOCK_TIMEOUT_MS = 30_000  # waiting for a row lock held by another process (as SQLite's busy wait)
IDLE_IN_TRANSACTION_MS = 600_000  # a process that hangs inside a transaction loses its locks
STARTUP_WAIT_S = 5.0  # how long opening the database retries a transient failure

MIGRATION_LOCK = 0x41_72_67_6F_73_79  # pg_advisory_xact_lock key ("Argosy") held while migrating

# SQLSTATEs after which the whole transaction may be run again
_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "53300",  # too_many_connections
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, shutting down, in recovery)
}

# connection-time FATAL messages (they carry no SQLSTATE) of a server that may accept us soon
_TRANSIENT_FATAL = (
    "starting up",
    "shutting down",
    "in recovery mode",
    "not yet accepting connections",
    "too many clients",
    "remaining connection slots",
    "terminating connection",
)

_AUTH_FAILED = ("authentication failed", "role ", "pg_hba.conf", "password")


# -- URLs --------------------------------------------------------------------------------------
def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` URLs mean psycopg 3; anything else is unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_postgres(url: str | URL) -> bool:
    return make_url(normalize_url(str(url))).get_backend_name() == "postgresql"


def describe(url: URL) -> str:
    """Where a database is, for messages: ``host:port/database`` (never the password)."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    host = url.host or url.query.get("host") or "localhost"
    port = url.port or 5432
    return f"{host}:{port}/{url.database or ''}"


# -- transient errors and retries --------------------------------------------------------------
def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost or refused connection (or a rolled-back conflict): the database
    may work again if the same work is retried later."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    from sqlalchemy.exc import InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    orig = exc.orig
    module = type(orig).__module__
    if module.startswith("sqlite3"):
        return "database is locked" in str(orig)
    if module.startswith("psycopg"):
        state = _sqlstate(exc)
        if state is None:
            # the client lost or could not open the connection; a server that answered with
            # FATAL is up and refused us (unknown database or role, authentication), unless it
            # is starting, stopping or full
            message = str(orig)
            return "FATAL:" not in message or any(m in message for m in _TRANSIENT_FATAL)
        return state.startswith("08") or state in _TRANSIENT_SQLSTATES
    return True  # another driver's OperationalError/InterfaceError: assume a connection problem


def backoff(attempt: int, *, first: float = 0.2, cap: float = 5.0) -> float:
    """Seconds to wait before try ``attempt + 1`` (exponential, capped, with jitter)."""
    delay: float = min(cap, first * 2.0**attempt)
    return delay * (0.75 + random.random() / 2)  # jitter: processes do not retry in step


def retry(
    fn: Callable[[], T],
    *,
    seconds: float,
    what: str = "the metadata database",
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``fn()``, run again with backoff while it fails transiently, for up to ``seconds``.

    ``fn`` must be idempotent (a read, or a write that is safe to repeat): after a cut
    connection its transaction may or may not have committed. The last error is re-raised
    when the time is up or the error is not transient.
    """
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return fn()
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            delay = backoff(attempt)
            if time.monotonic() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            else:
                log.debug("%s: transient error, retrying in %.1fs: %s", what, delay, exc)
            time.sleep(delay)
            attempt += 1


def lost_message(exc: BaseException) -> str | None:
    """What to tell a user whose command lost the metadata database midway (a transient
    error), or None for any other error."""
    if not is_transient(exc):
        return None
    return (
        f"the metadata database stopped answering ({error_summary(exc)}); what was committed "
        "is kept: run the command again once it is back (a run it started continues with "
        "'argosy runs resume RUN')"
    )


def error_summary(exc: BaseException) -> str:
    """The driver's message on one line, without SQLAlchemy's SQL and background links, nor
    libpq's "connection to server at ... failed:" preamble (messages name the host anyway)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Is the server running")]
    text = "; ".join(lines)
    if text.startswith("connection failed:") and " failed: " in text:
        text = text.rpartition(" failed: ")[2]
    text = text.removeprefix("FATAL:").strip()
    return text[:300] or type(orig).__name__


def unreachable_message(url: URL, exc: BaseException) -> str:
    """One line: which database could not be opened, why, and what to check."""
    where = describe(url)
    state = _sqlstate(exc)
    why = error_summary(exc)
    if state in ("28P01", "28000") or any(m in why for m in _AUTH_FAILED):
        hint = "check the user and password in ARGOSY_DATABASE_URL and the server's pg_hba.conf"
    elif state == "3D000" or (why.startswith("database ") and why.endswith("does not exist")):
        hint = f"create the database first (createdb {url.database}) or fix its name in the URL"
    else:
        hint = (
            "check that PostgreSQL runs there and accepts TCP connections from this machine, "
            "and the host and port in ARGOSY_DATABASE_URL or the config file "
            "('argosy config show')"
        )
    return f"cannot reach the metadata database at {where} (user {url.username}): {why}; {hint}"


# -- SQLite --------------------------------------------------------------------------------------
def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# -- PostgreSQL ----------------------------------------------------------------------------------
def postgres_engine(url: str | URL) -> Engine:
    """An engine for a PostgreSQL URL with a bounded, pre-pinged pool and bounded waits.

    Keys already in the URL's query (``connect_timeout``, ``keepalives_idle``...) win over
    these defaults; server settings in its ``options`` (``-c lock_timeout=5s``) override ours.
    """
    parsed = make_url(normalize_url(url)) if isinstance(url, str) else url
    given = set(parsed.query)
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "argosy",
        "keepalives": 1,  # notice a dead server or network within about a minute
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 60_000,  # unacknowledged writes to a vanished peer fail too
        "options": (
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} "
            "-c TimeZone=UTC"  # times come back in UTC, as from SQLite, whatever the server's zone
        ),
    }
    connect_args = {k: v for k, v in defaults.items() if k not in given}
    if "options" in given:  # server settings: the URL's come after ours, so they win
        theirs = parsed.query["options"]
        theirs = " ".join(theirs) if isinstance(theirs, tuple) else theirs
        connect_args["options"] = f"{defaults['options']} {theirs}"
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
        pool_recycle=POOL_RECYCLE_S,
        connect_args=connect_args,
    )


DURABILITY_SETTINGS = ("fsync", "synchronous_commit")


def check_durability(engine: Engine) -> list[str]:
    """``name=value`` of the server settings that make commits less than durable (warned)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        values = {n: str(conn.exec_driver_sql(f"SHOW {n}").scalar()) for n in DURABILITY_SETTINGS}
    off = [f"{n}={v}" for n, v in values.items() if v == "off"]
    if off:
        log.warning(
            "warning: the metadata database at %s runs with %s: committed run state can be lost "
            "if the server crashes; turn it on in postgresql.conf (or ALTER SYSTEM/DATABASE ... SET)",
            describe(engine.url),
            " and ".join(off),
        )
    return off


# -- migrations ----------------------------------------------------------------------------------
def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision (one transaction on PostgreSQL)."""
    from alembic import command

    cfg = alembic_config(str(engine.url))  # not used to connect: the password stays hidden
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # one migrator at a time; the others then find the schema at head and do nothing
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None: an empty database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return row[0] if row else None


# -- opening -----------------------------------------------------------------------------------
def open_engine(url: str, *, migrate: bool = True, wait: float = STARTUP_WAIT_S) -> Engine:
    """A SQLAlchemy engine for ``url``, with its schema at head (unless ``migrate=False``).

    A PostgreSQL server that cannot be reached within ``wait`` seconds (retrying transient
    failures) raises a one-line :class:`StoreError` naming the host and what to check.
    """
    url = normalize_url(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine)
        retry_s = 0.0
    elif is_postgres(url):
        engine = postgres_engine(url)
        retry_s = wait
        try:
            retry(lambda: check_durability(engine), seconds=wait)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(unreachable_message(engine.url, exc)) from None
    else:
        engine = create_engine(url, pool_pre_ping=True)
        retry_s = wait
    if migrate:
        try:
            found = retry(lambda: current_revision(engine), seconds=retry_s)
            if found is not None and found != HEAD and found not in known_revisions():
                # blue/green: a newer Argosy migrated this database (expand-only, so this
                # version still works with it); never downgrade or fail here
                logging.getLogger("argosy").warning(
                    "the metadata database is at revision %s, newer than this Argosy (%s); "
                    "continuing (migrations are expand/contract)",
                    found,
                    HEAD,
                )
            elif found != HEAD:
                # transactional DDL on PostgreSQL: a failed try left nothing behind
                retry(lambda: upgrade(engine), seconds=retry_s)
        except Exception as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the metadata database {describe(engine.url)}: {error_summary(exc)}"
            ) from exc
    return engine


def known_revisions() -> set[str]:
    """Revisions this Argosy ships (file names start with the revision id)."""
    return {p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("*.py")}


class MetadataStore:
    """Sessions on one metadata database; query functions take a session and a tenant."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, wait: float = STARTUP_WAIT_S) -> MetadataStore:
        return cls(open_engine(url, wait=wait))

    @property
    def where(self) -> str:
        """``host:port/database`` (or the SQLite file), for messages."""
        return describe(self.engine.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def retrying(self, fn: Callable[[Session], T], *, seconds: float = STARTUP_WAIT_S) -> T:
        """``fn(session)`` in its own transaction, run again on a transient error for up to
        ``seconds``. Only for idempotent work: reads, or writes that are safe to repeat."""

        def once() -> T:
            with self.session() as s:
                return fn(s)

        return retry(once, seconds=seconds, what=self.where)

    def close(self) -> None:
        self.engine.dispose()
