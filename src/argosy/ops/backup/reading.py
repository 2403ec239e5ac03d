"""Reading a database in one snapshot: every row, of all tenants or one, at one instant.

All rows are read in one read-only transaction: on SQLite a deferred ``BEGIN`` in WAL mode,
which takes no lock that blocks a writer (the running engine's ``BEGIN IMMEDIATE`` goes on);
on PostgreSQL ``REPEATABLE READ, READ ONLY``. So a backup taken during a run holds the run
exactly as it was at one instant. Tables and columns are read from the database itself
(reflection), so tables added by later migrations are carried without changes here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    Text,
    cast,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)

from argosy.errors import StoreError, UsageError
from argosy.ops.backup.format import BATCH, ColumnInfo, Reporter, TableInfo, column_kind, encode_row
from argosy.ops.backup.manifest import Manifest, note_blobs


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _reader_engine(url: str) -> Engine:
    """An engine whose transactions only read, and on SQLite start with a deferred BEGIN."""
    if not _is_sqlite(url):
        from argosy.stores.metadata.db import open_engine

        return open_engine(url, migrate=False)  # its pool, timeouts and URL forms
    path = url.split(":///", 1)[-1]
    if path and not path.startswith(":memory:") and not Path(path).is_file():
        raise UsageError(f"there is no metadata database at {path}; check ARGOSY_DATABASE_URL")
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=1")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN DEFERRED")  # a WAL read snapshot; blocks no writer

    return engine


@contextmanager
def snapshot(url: str) -> Iterator[Connection]:
    """A connection inside one read-only transaction: every read sees the same instant."""
    engine = _reader_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                yield conn
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def _revision(conn: Connection) -> str:
    found: Sequence[Any] = ()
    if inspect(conn).has_table("alembic_version"):
        found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(found) != 1:
        raise StoreError(
            "the source database has no Alembic revision: it is empty or not an Argosy "
            "database; check ARGOSY_DATABASE_URL"
        )
    return str(found[0])


# Not data but the live state of running servers: a restored copy must not inherit them
# (a restored run left with an owner is released by the next leader like any orphan).
NOT_BACKED_UP = {"alembic_version", "server_instances", "leases"}


def reflect(conn: Connection) -> list[Table]:
    """The database's data tables in foreign-key order (parents first)."""
    metadata = MetaData()
    metadata.reflect(conn)
    return [t for t in metadata.sorted_tables if t.name not in NOT_BACKED_UP]


@dataclass
class Dump:
    """What :func:`dump` wrote: the tables, and what their rows reference."""

    revision: str
    tables: list[TableInfo]
    manifest: Manifest
    tenants: list[str]


def dump(
    conn: Connection, folder: Path, *, tenant: str | None = None, reporter: Reporter | None = None
) -> Dump:
    """Write every table's rows (of one tenant, if given) to ``folder/metadata/*.jsonl``."""
    reporter = reporter or Reporter()
    revision = _revision(conn)
    tables = reflect(conn)

    def scoped(stmt: Any, t: Table) -> Any:
        return stmt.where(t.c.tenant == tenant) if tenant is not None and "tenant" in t.c else stmt

    total = sum(int(conn.execute(scoped(select(func.count()).select_from(t), t)).scalar_one())
                for t in tables)  # fmt: skip
    reporter.start("reading metadata (rows)", total)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    manifest, tenants, infos = Manifest(), set[str](), []
    for t in tables:
        columns = [ColumnInfo(c.name, column_kind(c.type)) for c in t.columns]
        exprs = [cast(c, Text) if column_kind(c.type) == "json" else c for c in t.columns]
        stmt = scoped(select(*exprs).order_by(*t.primary_key.columns), t)
        digest, rows = hashlib.sha256(), 0
        with (folder / "metadata" / f"{t.name}.jsonl").open("wb") as f:
            for row in conn.execution_options(yield_per=BATCH).execute(stmt):
                doc = encode_row(row, columns)
                note_blobs(manifest, tenants, t.name, doc)
                line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                f.write(line)
                digest.update(line)
                rows += 1
                if rows % BATCH == 0:
                    reporter.advance(BATCH)
        reporter.advance(rows % BATCH)
        infos.append(TableInfo(t.name, columns, rows, digest.hexdigest()))
    reporter.done()
    return Dump(revision, infos, manifest, sorted(tenants))
