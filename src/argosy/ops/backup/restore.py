"""Restore: a backup into an empty database, then its blobs checked in the artifact store.

The metadata goes in one transaction — migrate the empty database to the backup's revision,
load the rows, migrate to head — so a failure leaves the database as empty as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, text

from argosy.ops.backup.archive import Backup
from argosy.ops.backup.format import BATCH, Reporter, chunks, insert_table
from argosy.ops.backup.manifest import BlobProblem
from argosy.ops.backup.reading import reflect
from argosy.ops.backup.revisions import (
    check_columns,
    check_known,
    exclusive,
    migrate,
    refuse_nonempty,
    revision_chain,
)
from argosy.ops.backup.transfer import PlainReader, blob_sources, record_sources
from argosy.ops.backup.verify import verify_blobs, verify_mode
from argosy.stores.artifacts.base import ByteStore


@dataclass
class RestoreSummary:
    database: str
    revision: str  # the backup's
    head: str  # the database's, after restoring
    tables: dict[str, dict[str, int]]  # name -> {"inserted", "present", "merged"}
    tenants: dict[str, str]  # backup tenant -> tenant restored/imported as
    blobs: int
    blobs_copied: int
    records_copied: int
    verify: str
    problems: list[BlobProblem]
    seconds: float
    runs_released: int = 0

    @property
    def rows(self) -> int:
        return sum(t["inserted"] for t in self.tables.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database, "backup_revision": self.revision,
            "revision": self.head, "tables": self.tables, "rows_inserted": self.rows,
            "tenants": self.tenants, "blobs": self.blobs, "blobs_copied": self.blobs_copied,
            "records_copied": self.records_copied, "verify": self.verify,
            "problems": [p.to_json() for p in self.problems], "ok": not self.problems,
            "runs_released": self.runs_released, "seconds": round(self.seconds, 3),
        }  # fmt: skip


def _load(conn: Connection, backup: Backup, reporter: Reporter) -> dict[str, dict[str, int]]:
    """Insert every row of the backup (into an empty database at the backup's revision)."""
    targets = {t.name: t for t in reflect(conn)}
    stats: dict[str, dict[str, int]] = {}
    reporter.start("loading metadata (rows)", sum(t.rows for t in backup.tables))
    for info in backup.tables:
        target = check_columns(info, targets, backup.revision)
        statement = insert(insert_table(target))
        count = 0
        for batch in chunks(backup.rows(info), BATCH):
            conn.execute(statement, batch)
            count += len(batch)
            reporter.advance(len(batch))
        stats[info.name] = {"inserted": count, "present": 0, "merged": 0}
    reporter.done()
    return stats


def restore_metadata(
    backup: Backup,
    url: str,
    chain: list[str],
    reporter: Reporter,
    *,
    check_empty: bool = True,
    release_runs: bool = False,
) -> tuple[dict[str, dict[str, int]], int]:
    """Migrate the empty database to the backup's revision, load, migrate to head: one
    transaction, so a failure leaves the database as empty as it was. Returns the row counts
    and how many unfinished runs were released from the engines recorded on them."""
    from alembic import command

    from argosy.stores.metadata.db import alembic_config, open_engine

    engine = open_engine(url, migrate=False)
    try:
        with engine.begin() as conn:
            exclusive(conn)
            if check_empty:
                refuse_nonempty(conn, url)
            migrate(conn, url, chain, backup.revision)
            stats = _load(conn, backup, reporter)
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            released = 0
            if release_runs:  # those engines work on the old database, never on this one
                result = conn.execute(text(
                    "UPDATE runs SET engine = 'null' WHERE status IN ('pending', 'running')"))  # fmt: skip
                released = result.rowcount
    finally:
        engine.dispose()
    return stats, released


def restore(
    backup: Backup,
    url: str,
    *,
    store: ByteStore | None,
    verify: str = "hash",
    release_runs: bool = False,
    reporter: Reporter | None = None,
    plain: PlainReader | None = None,
) -> RestoreSummary:
    """Restore ``backup`` into the empty database at ``url``, then check the manifest's blobs
    in ``store`` (after copying in those the backup carries and the store lacks).

    ``release_runs`` forgets the engine processes recorded on unfinished runs (they belong to
    the backed-up database), so that ``argosy runs resume`` takes them over here."""
    from argosy.config import redact
    from argosy.stores.metadata.db import open_engine

    verify_mode(verify)
    reporter = reporter or Reporter()
    started = time.monotonic()
    chain = revision_chain(url)
    check_known(backup, chain)
    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as conn:  # fail before copying any blob
            refuse_nonempty(conn, url)
    finally:
        engine.dispose()
    blobs_copied = records_copied = 0
    if store is not None:
        blobs_copied = blob_sources(store, backup, {}, reporter, plain)
        records_copied = record_sources(store, backup, {}, reporter)
    stats, released = restore_metadata(backup, url, chain, reporter, release_runs=release_runs)
    problems = [] if store is None else verify_blobs(store, backup.manifest, mode=verify,
                                                     reporter=reporter, plain=plain)  # fmt: skip
    return RestoreSummary(
        database=redact("database_url", url), revision=backup.revision, head=chain[-1],
        tables=stats, tenants={t: t for t in backup.tenants}, blobs=backup.manifest.count(),
        blobs_copied=blobs_copied, records_copied=records_copied, verify=verify,
        problems=problems, seconds=time.monotonic() - started, runs_released=released,
    )  # fmt: skip
