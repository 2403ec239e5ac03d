"""Schema revisions: which Alembic revisions this Argosy knows, and moving an empty target
database to the one a backup was taken at (one migrator at a time)."""

from __future__ import annotations

from sqlalchemy import Connection, Table, inspect, select, text

from argosy.errors import StoreError, UsageError
from argosy.ops.backup.archive import Backup
from argosy.ops.backup.format import TableInfo
from argosy.ops.backup.reading import reflect


def revision_chain(url: str) -> list[str]:
    """The Alembic revisions this Argosy knows, from the first to head."""
    from alembic.script import ScriptDirectory

    from argosy.stores.metadata.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def check_known(backup: Backup, chain: list[str]) -> None:
    if backup.revision not in chain:
        raise UsageError(
            f"the backup's schema revision {backup.revision} (Argosy "
            f"{backup.index.get('argosy_version')}) is newer than this Argosy knows (up to "
            f"{chain[-1]}); restore it with that Argosy version or a newer one"
        )


def migrate(conn: Connection, url: str, chain: list[str], target: str) -> None:
    """Move an (empty) database to revision ``target``, up or down."""
    from alembic import command

    from argosy.stores.metadata.db import alembic_config

    current = _current(conn)
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    if current is not None and current not in chain:
        raise UsageError(
            f"the target database is at schema revision {current}, newer than this Argosy "
            f"knows (up to {chain[-1]}); use a newer Argosy"
        )
    if current is None or chain.index(current) <= chain.index(target):
        command.upgrade(cfg, target)
    else:
        command.downgrade(cfg, target)  # only ever on an empty database


def exclusive(conn: Connection) -> None:
    """On PostgreSQL: one migrator at a time (the lock ``open_engine`` takes), and no statement
    timeout for the migrations and bulk loads of this transaction."""
    if conn.dialect.name == "postgresql":
        from argosy.stores.metadata import db

        key = getattr(db, "MIGRATION_LOCK", 0x41_72_67_6F_73_79)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        conn.exec_driver_sql("SET LOCAL lock_timeout = 0")


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _nonempty_table(conn: Connection) -> str | None:
    """The first table holding rows, if any (the Alembic version table aside)."""
    for t in reflect(conn):
        if conn.execute(select(1).select_from(t).limit(1)).first() is not None:
            return t.name
    return None


def refuse_nonempty(conn: Connection, url: str) -> None:
    from argosy.config import redact

    name = _nonempty_table(conn)
    if name is not None:
        raise UsageError(
            f"the target database {redact('database_url', url)} is not empty (table {name} "
            "has rows); restore only into an empty database (point ARGOSY_DATABASE_URL at a "
            "new one), or merge with 'argosy admin import'"
        )


def check_columns(info: TableInfo, targets: dict[str, Table], revision: str) -> Table:
    target = targets.get(info.name)
    if target is None:
        raise StoreError(f"table {info.name} of the backup does not exist at revision {revision}")
    missing = [c.name for c in info.columns if c.name not in target.c]
    if missing:
        raise StoreError(
            f"columns {missing} of table {info.name} do not exist at revision {revision}"
        )
    return target
