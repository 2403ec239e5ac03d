"""Wake-ups for the server's run queue: a queued run is claimed at once, not at the next look.

- **PostgreSQL**: the transaction that queues a run also runs ``pg_notify('argosy_run_queued',
  tenant)``; PostgreSQL delivers it when (and only if) that transaction commits, so a listener
  never wakes for a run it cannot see yet, nor for a rolled-back one. Every server instance
  holds one extra connection that ``LISTEN``\\s (:class:`RunQueueListener`) and wakes its
  claim loop.
- **In this process** (any database, SQLite included): the same commit also wakes the
  listeners of this process, without a round trip.

Notifications are a latency optimisation, never the source of truth: they are lost when the
listening connection drops, when the database restarts, or for a run committed before an
instance started listening. So the claim loop still looks at the queue on its own (every
:data:`FALLBACK_INTERVAL` seconds while listening, every ``fast`` seconds otherwise), and looks
at once after every (re)connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

log = logging.getLogger("argosy.server")

CHANNEL = "argosy_run_queued"
FALLBACK_INTERVAL = 2.0  # seconds between looks at the queue while notifications arrive
KEEPALIVE_CHECK = 30.0  # seconds between checks that the listening connection still answers

_local: set[threading.Event] = set()  # this process's listeners
_local_lock = threading.Lock()
_PENDING = "argosy_run_queued_wake"  # session.info: this transaction wakes local listeners


def _wake_local(session: Session) -> None:
    session.info.pop(_PENDING, None)
    with _local_lock:
        for ev in _local:
            ev.set()


def notify_run_queued(session: Session, tenant: str) -> None:
    """Call in the transaction that queues a run for the server: listeners wake at its commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :tenant)"),
                        {"channel": CHANNEL, "tenant": tenant})  # fmt: skip
    if not session.info.get(_PENDING):  # once per transaction
        session.info[_PENDING] = True
        event.listen(session, "after_commit", _wake_local, once=True)


class RunQueueListener:
    """Waits for queued runs: ``wait()`` returns when one was queued, or after the interval.

    ``url`` is the metadata database's (SQLAlchemy) URL; on PostgreSQL a thread keeps a
    ``LISTEN`` connection of its own (reconnecting with back-off). Elsewhere only this
    process's own submissions wake it and ``fast`` is the interval.
    """

    def __init__(self, url: URL | None, *, fast: float, fallback: float = FALLBACK_INTERVAL):
        self.fast = fast
        self.fallback = fallback
        self._dsn = _libpq_dsn(url) if url is not None else None
        self._event = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = False  # a LISTEN connection is open and answering now
        self.connects = 0  # how many times it (re)connected (tests and metrics read it)

    def start(self) -> None:
        with _local_lock:
            _local.add(self._event)
        if self._dsn is not None:
            self._thread = threading.Thread(
                target=self._listen, name="argosy-run-queue-listener", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._closed.set()
        self._event.set()
        with _local_lock:
            _local.discard(self._event)
        if self._thread is not None:
            self._thread.join(5.0)

    @property
    def interval(self) -> float:
        """How long :meth:`wait` waits without a wake-up: long only while listening."""
        return self.fallback if self.listening else self.fast

    def wait(self, most: float | None = None) -> bool:
        """Until a run is queued (True) or the interval (at most ``most`` seconds) passes
        (False); then re-arms."""
        woken = self._event.wait(self.interval if most is None else min(most, self.interval))
        self._event.clear()
        return woken

    def wake(self) -> None:
        """Wake the waiter now (stopping, or a look at the queue is wanted)."""
        self._event.set()

    # -- the LISTEN connection -------------------------------------------------------------------
    def _listen(self) -> None:
        import psycopg

        delay = 0.5
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._dsn or "", autocommit=True, connect_timeout=10,
                                     keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                     keepalives_count=3) as conn:  # fmt: skip
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connects += 1
                    self.listening = True
                    self._event.set()  # what was queued while nobody listened: look now
                    delay = 0.5
                    self._serve(conn)
            except (psycopg.Error, OSError) as exc:
                if not self._closed.is_set():
                    log.warning("run queue notifications unavailable (%s); looking every %.1f s",
                                exc.__class__.__name__, self.fast)  # fmt: skip
            finally:
                self.listening = False
            self._closed.wait(delay)
            delay = min(delay * 2, 10.0)

    def _serve(self, conn: Any) -> None:
        idle = 0.0
        while not self._closed.is_set():
            got = False
            for _ in conn.notifies(timeout=1.0, stop_after=1):
                got = True
                self._event.set()
            idle = 0.0 if got else idle + 1.0
            if idle >= KEEPALIVE_CHECK:  # a silent, dead connection would never wake us
                conn.execute("SELECT 1")
                idle = 0.0


def _libpq_dsn(url: URL) -> str | None:
    """A libpq connection string for a PostgreSQL SQLAlchemy URL; None for other databases."""
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
