"""Import: merge a backup (an export) into a database in use.

Rows already there are skipped, pipelines and versions that exist under the same name or
digest are merged into them, and tenants can be renamed; blobs are copied under the new
tenant's prefix. A backup of an older schema revision is first migrated in a scratch SQLite
database.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, UniqueConstraint, insert, select, tuple_

from argosy.errors import StoreError, UsageError
from argosy.ops.backup.archive import Backup
from argosy.ops.backup.format import BATCH, Reporter, chunks, insert_table
from argosy.ops.backup.reading import dump, reflect, snapshot
from argosy.ops.backup.restore import RestoreSummary, restore_metadata
from argosy.ops.backup.revisions import check_columns, check_known, exclusive, revision_chain
from argosy.ops.backup.transfer import blob_sources, record_sources
from argosy.ops.backup.verify import verify_blobs, verify_mode
from argosy.stores.artifacts.base import ByteStore


def _merge_table(
    conn: Connection,
    target: Table,
    rows: Iterable[dict[str, Any]],
    tenant_map: dict[str, str],
    idmap: dict[str, dict[Any, Any]],
) -> dict[str, int]:
    """Insert the rows that are new; skip those already there (same id, same tenant); map
    those whose unique key (a tenant's name, a pipeline's name, a version's digest) already
    exists onto the existing row, and rewrite foreign keys that point at mapped rows."""
    pk_columns = list(target.primary_key.columns)
    if len(pk_columns) != 1:
        raise StoreError(f"table {target.name} has no single-column primary key to merge by")
    pk = pk_columns[0].name
    has_tenant = "tenant" in target.c
    fks = {c.name: next(iter(c.foreign_keys)).column.table.name for c in target.columns
           if c.foreign_keys}  # fmt: skip
    uniques = [[c.name for c in con.columns] for con in target.constraints
               if isinstance(con, UniqueConstraint)]  # fmt: skip
    statement = insert(insert_table(target))
    mapped = idmap.setdefault(target.name, {})
    stats = {"inserted": 0, "present": 0, "merged": 0}
    for batch in chunks(rows, BATCH):
        for row in batch:
            if has_tenant and row["tenant"] in tenant_map:
                row["tenant"] = tenant_map[row["tenant"]]
            if target.name == "tenants" and row.get("name") in tenant_map:
                row["name"] = tenant_map[row["name"]]
            for name, referred in fks.items():
                if row.get(name) in idmap.get(referred, {}):
                    row[name] = idmap[referred][row[name]]
        wanted = [target.c[pk]] + ([target.c.tenant] if has_tenant else [])
        present = {r[0]: (r[1] if has_tenant else None) for r in conn.execute(
            select(*wanted).where(target.c[pk].in_([row[pk] for row in batch])))}  # fmt: skip
        pending = []
        for row in batch:
            if row[pk] not in present:
                pending.append(row)
            elif has_tenant and present[row[pk]] != row["tenant"]:
                raise UsageError(
                    f"{target.name} row {row[pk]} already exists here in tenant "
                    f"{present[row[pk]]!r}, not {row['tenant']!r}: this history was imported "
                    "before under another tenant; import it under that tenant again, or into "
                    "another database"
                )
            else:
                stats["present"] += 1
        for columns in uniques:
            keyed = {tuple(r[c] for c in columns): r for r in pending
                     if all(r.get(c) is not None for c in columns)}  # fmt: skip
            if not keyed:
                continue
            cols = [target.c[c] for c in columns]
            condition = (cols[0].in_([k[0] for k in keyed]) if len(cols) == 1
                         else tuple_(*cols).in_(list(keyed)))  # fmt: skip
            merged: set[Any] = set()
            for found in conn.execute(select(target.c[pk], *cols).where(condition)):
                match = keyed.get(tuple(found[1:]))
                if match is not None:
                    mapped[match[pk]] = found[0]
                    merged.add(match[pk])
            pending = [r for r in pending if r[pk] not in merged]
            stats["merged"] += len(merged)
        if pending:
            conn.execute(statement, pending)
            stats["inserted"] += len(pending)
    return stats


def _staged(backup: Backup, head: str, chain: list[str], work: Path, reporter: Reporter) -> Backup:
    """The backup's rows migrated to ``head``: restored into a scratch SQLite database at its
    own revision, migrated (data migrations included), and dumped again."""
    url = f"sqlite:///{work / 'staging.db'}"
    restore_metadata(backup, url, chain, reporter, check_empty=False)  # engines kept as-is
    with snapshot(url) as conn:
        again = dump(conn, work, reporter=reporter)
    index = dict(backup.index, alembic_revision=head)
    return Backup(backup.folder, index, again.tables, backup.manifest, work / "metadata")


def import_backup(
    backup: Backup,
    url: str,
    *,
    store: ByteStore | None,
    tenant_map: dict[str, str] | None = None,
    verify: str = "hash",
    reporter: Reporter | None = None,
) -> RestoreSummary:
    """Merge ``backup`` into the database at ``url`` (migrated to head first), renaming
    tenants by ``tenant_map`` (old -> new); blobs go under the new tenant's prefix."""
    from argosy.config import redact
    from argosy.stores.metadata.db import open_engine

    verify_mode(verify)
    reporter = reporter or Reporter()
    tenant_map = dict(tenant_map or {})
    started = time.monotonic()
    chain = revision_chain(url)
    check_known(backup, chain)
    unknown = sorted(set(tenant_map) - set(backup.tenants))
    if unknown:
        raise UsageError(f"tenant {unknown[0]!r} is not in this export; it holds {backup.tenants}")
    targets = [tenant_map.get(t, t) for t in backup.tenants]
    if len(set(targets)) != len(targets):
        raise UsageError("two tenants of the export would become one; map each to its own tenant")
    engine = open_engine(url)  # at head, like every command
    try:
        with tempfile.TemporaryDirectory(prefix=".argosy-import-") as work:
            source = backup
            if backup.revision != chain[-1]:
                source = _staged(backup, chain[-1], chain, Path(work), reporter)
            blobs_copied = records_copied = 0
            if store is not None:
                blobs_copied = blob_sources(store, backup, tenant_map, reporter)
                records_copied = record_sources(store, backup, tenant_map, reporter)
            stats: dict[str, dict[str, int]] = {}
            idmap: dict[str, dict[Any, Any]] = {}
            reporter.start("merging metadata (tables)", len(source.tables))
            with engine.begin() as conn:
                exclusive(conn)
                targets_by_name = {t.name: t for t in reflect(conn)}
                for info in source.tables:
                    target = check_columns(info, targets_by_name, source.revision)
                    stats[info.name] = _merge_table(
                        conn, target, source.rows(info), tenant_map, idmap
                    )
                    reporter.advance()
            reporter.done()
    finally:
        engine.dispose()
    problems = [] if store is None else verify_blobs(
        store, backup.manifest, tenant_map=tenant_map, mode=verify, reporter=reporter)  # fmt: skip
    return RestoreSummary(
        database=redact("database_url", url), revision=backup.revision, head=chain[-1],
        tables=stats, tenants={t: tenant_map.get(t, t) for t in backup.tenants},
        blobs=backup.manifest.count(), blobs_copied=blobs_copied,
        records_copied=records_copied, verify=verify, problems=problems,
        seconds=time.monotonic() - started,
    )  # fmt: skip
