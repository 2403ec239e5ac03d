"""Writing a backup (a folder, or a .tar[.gz] of one) and opening one, every file checked."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from argosy.errors import StoreError, UsageError
from argosy.ops.backup.format import (
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    Reporter,
    TableInfo,
    decode_row,
    file_sha256,
    write_json,
)
from argosy.ops.backup.manifest import BlobProblem, Manifest
from argosy.ops.backup.reading import dump, snapshot
from argosy.ops.backup.transfer import PlainReader, copy_out
from argosy.stores.artifacts.base import ByteStore


@dataclass
class BackupSummary:
    path: Path
    kind: str
    revision: str
    tables: dict[str, int]
    tenants: list[str]
    blobs: int  # in the manifest
    blobs_copied: int
    problems: list[BlobProblem]
    seconds: float
    snapshot_seconds: float  # how long the read transaction was open

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "kind": self.kind, "revision": self.revision,
            "tables": self.tables, "rows": sum(self.tables.values()), "tenants": self.tenants,
            "blobs": self.blobs, "blobs_copied": self.blobs_copied,
            "problems": [p.to_json() for p in self.problems],
            "seconds": round(self.seconds, 3), "snapshot_seconds": round(self.snapshot_seconds, 3),
        }  # fmt: skip


def _archive_mode(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "w:gz"
    if name.endswith(".tar"):
        return "w"
    return None


def write_backup(
    url: str,
    dest: Path,
    *,
    kind: str = "backup",
    tenant: str | None = None,
    blobs_from: ByteStore | None = None,
    reporter: Reporter | None = None,
    on_snapshot: Callable[[Connection], None] | None = None,
    plain: PlainReader | None = None,
) -> BackupSummary:
    """Write a consistent snapshot of the database at ``url`` to ``dest`` (folder or .tar[.gz]).

    ``tenant`` limits it to one tenant's rows (an export); ``blobs_from`` also copies the
    referenced blobs and run records from that store. ``on_snapshot`` is called with the
    connection while the read transaction is still open (tests read the same snapshot).
    """
    from argosy import __version__
    from argosy.config import redact

    reporter = reporter or Reporter()
    dest = Path(dest)
    mode = _archive_mode(dest)
    if dest.exists():
        raise UsageError(f"{dest} already exists; a backup never overwrites: choose a new name")
    if not dest.parent.is_dir():
        raise UsageError(f"folder {dest.parent} does not exist; create it first")
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        with snapshot(url) as conn:
            opened = time.monotonic()
            result = dump(conn, staging, tenant=tenant, reporter=reporter)
            if on_snapshot is not None:
                on_snapshot(conn)
            dialect = conn.dialect.name
        held = time.monotonic() - opened
        copied, problems = 0, list[BlobProblem]()
        if blobs_from is not None:
            copied, problems = copy_out(blobs_from, result, staging, reporter, plain)
        write_json(staging / MANIFEST, result.manifest.to_json())
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "argosy_version": __version__,
            "alembic_revision": result.revision,
            "created_at": datetime.now(UTC).isoformat(),
            "source": {"dialect": dialect, "database": redact("database_url", url)},
            "tenant": tenant,
            "tenants": result.tenants,
            "tables": [t.to_json() for t in result.tables],
            "manifest_sha256": file_sha256(staging / MANIFEST),
            "blobs_included": blobs_from is not None,
            "missing_blobs": [p.to_json() for p in problems],
        }
        write_json(staging / INDEX, index)
        if mode is None:
            staging.rename(dest)
        else:
            reporter.start("writing the archive")
            partial = dest.with_name(f".{dest.name}.partial")
            with tarfile.open(partial, "w:gz" if mode == "w:gz" else "w") as tar:
                for entry in sorted(staging.iterdir()):
                    tar.add(entry, arcname=entry.name)
            partial.replace(dest)
            reporter.done()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupSummary(
        path=dest, kind=kind, revision=result.revision,
        tables={t.name: t.rows for t in result.tables}, tenants=result.tenants,
        blobs=result.manifest.count(), blobs_copied=copied, problems=problems,
        seconds=time.monotonic() - started, snapshot_seconds=held,
    )  # fmt: skip


@dataclass
class Backup:
    """An opened backup: its index, tables and manifest, rows read on demand."""

    folder: Path  # blobs/ and records/ live here
    index: dict[str, Any]
    tables: list[TableInfo]
    manifest: Manifest
    metadata_dir: Path

    @property
    def revision(self) -> str:
        return str(self.index["alembic_revision"])

    @property
    def tenants(self) -> list[str]:
        return list(self.index.get("tenants") or sorted(self.manifest.blobs))

    def rows(self, info: TableInfo) -> Iterator[dict[str, Any]]:
        with (self.metadata_dir / f"{info.name}.jsonl").open("rb") as f:
            for line in f:
                yield decode_row(json.loads(line), info.columns)

    def blob_file(self, sha256: str) -> Path | None:
        path = self.folder / "blobs" / sha256[:2] / sha256
        return path if path.is_file() else None

    def record_files(self, tenant: str) -> Iterator[tuple[str, Path]]:
        """(key relative to the tenant's prefix, file) of each run record in the backup."""
        base = self.folder / "records" / tenant
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    yield path.relative_to(base).as_posix(), path


@contextmanager
def open_backup(src: Path) -> Iterator[Backup]:
    """Open a backup folder or archive, checking its format and the hash of every file."""
    src = Path(src)
    extracted: Path | None = None
    try:
        if src.is_dir():
            folder = src
        elif src.is_file() and tarfile.is_tarfile(src):
            extracted = Path(tempfile.mkdtemp(prefix="argosy-backup-"))
            with tarfile.open(src) as tar:
                tar.extractall(extracted, filter="data")
            folder = extracted
        elif src.exists():
            raise UsageError(f"{src} is neither a backup folder nor a .tar archive of one")
        else:
            raise UsageError(f"{src} does not exist")
        index_path = folder / INDEX
        if not index_path.is_file():
            raise UsageError(f"{src} is not an Argosy backup: it has no {INDEX}")
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT or int(index.get("format_version", 0)) > FORMAT_VERSION:
            raise UsageError(
                f"{src} is format {index.get('format')!r} version {index.get('format_version')}; "
                f"this Argosy reads {FORMAT!r} up to version {FORMAT_VERSION}: use a newer Argosy"
            )
        if file_sha256(folder / MANIFEST) != index["manifest_sha256"]:
            raise StoreError(f"{src}: {MANIFEST} does not match its recorded sha256; it is damaged")
        tables = [TableInfo.from_json(t) for t in index["tables"]]
        for info in tables:
            path = folder / "metadata" / f"{info.name}.jsonl"
            if not path.is_file() or file_sha256(path) != info.sha256:
                raise StoreError(
                    f"{src}: metadata/{info.name}.jsonl is missing or does not match its "
                    "recorded sha256; the backup is damaged"
                )
        manifest = Manifest.from_json(json.loads((folder / MANIFEST).read_text()))
        yield Backup(folder, index, tables, manifest, folder / "metadata")
    finally:
        if extracted is not None:
            shutil.rmtree(extracted, ignore_errors=True)
