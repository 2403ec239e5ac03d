"""Named leases in the metadata DB: one holder at a time, with a fencing token.

The ``scheduler`` lease decides which server instance leads (fires schedules, reconciles the
runs of dead instances). A holder renews it by heartbeat; when it stops renewing, another
instance takes it after ``expires_at``. Every change of holder increments ``token``; the
leader's writes check, in their own transaction, that the lease still carries its token, so
a leader that was paused past its expiry (and replaced) cannot act on stale authority.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from argosy.server.clock import Clock
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Lease

log = logging.getLogger("argosy.server")

SCHEDULER = "scheduler"


class LeaseHolder:
    """This instance's side of one named lease."""

    def __init__(
        self, metadata: MetadataStore, name: str, owner: str, clock: Clock, seconds: float
    ) -> None:
        self.metadata = metadata
        self.name = name
        self.owner = owner
        self.clock = clock
        self.ttl = timedelta(seconds=seconds)
        self.token: int | None = None  # set while held
        self.held_until: datetime | None = None  # by our own clock, as last written

    @property
    def held(self) -> bool:
        """Held, by what this instance last wrote (and not yet expired by its clock)."""
        return (
            self.token is not None
            and self.held_until is not None
            and self.clock.now() < self.held_until
        )

    def acquire_or_renew(self) -> bool:
        """Renew the lease if held, take it if free or expired; returns whether it is held."""
        with self.metadata.session() as s:
            row = s.get(Lease, self.name, with_for_update=True)
            if row is None:
                try:
                    with s.begin_nested():
                        s.add(Lease(name=self.name, owner=None, token=0))
                except IntegrityError:
                    pass  # created at the same moment by another instance
                row = s.get_one(Lease, self.name, with_for_update=True)
            now = self.clock.now()
            expires = q.as_utc(row.expires_at)
            if row.owner == self.owner and row.token == self.token and expires and expires > now:
                row.expires_at = now + self.ttl
            elif row.owner is None or expires is None or expires <= now:
                previous = row.owner
                row.owner = self.owner
                row.token += 1
                row.acquired_at = now
                row.expires_at = now + self.ttl
                log.info(
                    "took the %s lease (token %d) from %s",
                    self.name,
                    row.token,
                    previous or "nobody",
                )
            else:
                if self.token is not None:
                    log.warning("lost the %s lease to %s", self.name, row.owner)
                self.token = None
                self.held_until = None
                return False
            self.token = row.token
            self.held_until = now + self.ttl
            return True

    def still_held(self, session: Session) -> bool:
        """In the caller's transaction: the lease still carries our token and has not expired
        (locks the row, so a takeover waits for the caller's transaction to end)."""
        if self.token is None:
            return False
        row = session.get(Lease, self.name, with_for_update=True)
        expires = q.as_utc(row.expires_at) if row is not None else None
        return (
            row is not None
            and row.owner == self.owner
            and row.token == self.token
            and expires is not None
            and expires > self.clock.now()
        )

    def release(self) -> None:
        """Hand the lease over now (another instance takes it at its next heartbeat)."""
        if self.token is None:
            return
        with self.metadata.session() as s:
            row = s.get(Lease, self.name, with_for_update=True)
            if row is not None and row.owner == self.owner and row.token == self.token:
                row.owner = None
                row.expires_at = self.clock.now()
        self.token = None
        self.held_until = None
