"""Backup, restore, export and import of the metadata database, with a manifest of its blobs.

One portable, logical format serves all four, on SQLite and PostgreSQL alike::

    DEST/                          a folder, or the same inside DEST.tar / DEST.tar.gz
      backup.json                  the index: format, kind, Argosy version, Alembic revision,
                                   tenants, and the tables in foreign-key order with their
                                   columns, row counts and the sha256 of each file
      metadata/<table>.jsonl       one JSON object per row, in primary-key order
      manifest.json                per tenant, every blob the metadata references (artifacts,
                                   imported input files, code packages, environment manifests)
      blobs/<ab>/<sha256>          the blobs themselves, when asked for
      records/<tenant>/runs/...    run records (attempt logs, results), with the blobs

Values survive the trip exactly: times are written as UTC ISO 8601 (SQLite hands them back
naive, PostgreSQL in the session's zone), JSON columns as JSON, and a JSON ``null`` is kept
apart from SQL ``NULL`` (a row lists its JSON-null columns under ``"$json_null"``).

All rows are read in one read-only transaction: on SQLite a deferred ``BEGIN`` in WAL mode,
which takes no lock that blocks a writer (the running engine's ``BEGIN IMMEDIATE`` goes on);
on PostgreSQL ``REPEATABLE READ, READ ONLY``. So a backup taken during a run holds the run
exactly as it was at one instant. Tables and columns are read from the database itself
(reflection), so tables added by later migrations are carried without changes here.

- :func:`write_backup` — a snapshot of a database (all tenants, or one for an export);
- :func:`restore` — into an empty database: migrate it to the backup's revision, load the
  rows, migrate to head, all in one transaction; then check every blob in the manifest;
- :func:`import_backup` — merge into a database in use: rows already there are skipped,
  pipelines and versions that exist under the same name or digest are merged into them, and
  tenants can be renamed; blobs are copied under the new tenant's prefix.

This module prints nothing: progress goes to a :class:`Reporter` that the CLI draws.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    cast,
    column,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.expression import TableClause

from argosy.errors import StoreError, UsageError
from argosy.stores.artifacts.base import ByteStore
from argosy.stores.artifacts.blobs import CHUNK, ArtifactStore, BlobInfo, sha256_file

FORMAT = "argosy-backup"
FORMAT_VERSION = 1
INDEX = "backup.json"
MANIFEST = "manifest.json"
BATCH = 1000
VERIFY_WORKERS = 8
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Reporter:
    """Progress of a long operation, phase by phase; this one says nothing (the CLI draws)."""

    def start(self, what: str, total: float | None = None) -> None:
        """A new phase begins, with ``total`` units of work if known."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units of the current phase are done."""

    def done(self) -> None:
        """The current phase ended."""


# -- the format ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    """A column as written: its name and how its values are encoded (json, datetime, ...)."""

    name: str
    kind: str


@dataclass(frozen=True)
class TableInfo:
    """One table's file in a backup."""

    name: str
    columns: list[ColumnInfo]
    rows: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "sha256": self.sha256,
            "columns": [{"name": c.name, "kind": c.kind} for c in self.columns],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TableInfo:
        columns = [ColumnInfo(c["name"], c["kind"]) for c in doc["columns"]]
        return cls(doc["name"], columns, int(doc["rows"]), doc["sha256"])


@dataclass
class Manifest:
    """Every blob the metadata references, per tenant, and the runs (whose records travel)."""

    blobs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)

    def add(self, tenant: str, sha256: Any, size: Any, ref: str) -> None:
        if not isinstance(sha256, str):
            return
        sha = sha256.removeprefix("sha256:")
        if not _SHA256.match(sha):
            return
        entry = self.blobs.setdefault(tenant, {}).setdefault(sha, {"size": None, "ref": ref})
        if entry["size"] is None and isinstance(size, int):
            entry["size"] = size

    def entries(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for tenant, blobs in self.blobs.items():
            for sha, entry in blobs.items():
                yield tenant, sha, entry

    def count(self) -> int:
        return sum(len(b) for b in self.blobs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "tenants": {
                t: {"blobs": dict(sorted(self.blobs.get(t, {}).items())),
                    "runs": sorted(self.runs.get(t, []))}
                for t in sorted(set(self.blobs) | set(self.runs))
            }
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        manifest = cls()
        for tenant, part in doc.get("tenants", {}).items():
            manifest.blobs[tenant] = dict(part.get("blobs", {}))
            manifest.runs[tenant] = list(part.get("runs", []))
        return manifest


@dataclass(frozen=True)
class BlobProblem:
    """A blob the manifest lists that the artifact store lacks, or holds with other bytes."""

    tenant: str
    sha256: str
    problem: str  # "missing" | "corrupt"
    ref: str | None = None

    def __str__(self) -> str:
        where = f" ({self.ref})" if self.ref else ""
        return f"blob sha256:{self.sha256} of tenant {self.tenant!r} is {self.problem}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "sha256": self.sha256, "problem": self.problem,
                "ref": self.ref}  # fmt: skip


def _kind(type_: Any) -> str:
    if isinstance(type_, sqltypes.JSON):
        return "json"
    if isinstance(type_, sqltypes.DateTime):
        return "datetime"
    if isinstance(type_, sqltypes.Date):
        return "date"
    if isinstance(type_, sqltypes._Binary):
        return "binary"
    return "value"


def _utc(value: datetime) -> datetime:
    """Every stored time is UTC; SQLite returns them naive."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _encode(row: Iterable[Any], columns: list[ColumnInfo]) -> dict[str, Any]:
    """A row as a JSON object (JSON columns arrive as their text, to tell JSON null apart)."""
    doc: dict[str, Any] = {}
    json_null: list[str] = []
    for col, value in zip(columns, row, strict=True):
        if value is None:
            doc[col.name] = None
        elif col.kind == "json":
            parsed = json.loads(value) if isinstance(value, str | bytes) else value
            if parsed is None:
                json_null.append(col.name)
            doc[col.name] = parsed
        elif col.kind == "datetime":
            doc[col.name] = _utc(value).isoformat()
        elif col.kind == "date":
            doc[col.name] = value.isoformat()
        elif col.kind == "binary":
            doc[col.name] = base64.b64encode(value).decode("ascii")
        else:
            doc[col.name] = value
    if json_null:
        doc["$json_null"] = json_null
    return doc


def _decode(doc: dict[str, Any], columns: list[ColumnInfo]) -> dict[str, Any]:
    """The row's values as the database driver takes them (see :func:`_insert_table`)."""
    json_null = set(doc.get("$json_null", ()))
    row: dict[str, Any] = {}
    for col in columns:
        value = doc.get(col.name)
        if col.name in json_null:
            row[col.name] = JSON.NULL
        elif value is None:
            row[col.name] = None
        elif col.kind == "datetime":
            row[col.name] = _utc(datetime.fromisoformat(value))
        elif col.kind == "date":
            row[col.name] = date.fromisoformat(value)
        elif col.kind == "binary":
            row[col.name] = base64.b64decode(value)
        else:
            row[col.name] = value
    return row


def _insert_table(target: Table) -> TableClause:
    """``target`` for inserts: JSON columns write ``None`` as SQL NULL, ``JSON.NULL`` as null."""
    cols = [
        column(c.name, JSON(none_as_null=True) if _kind(c.type) == "json" else c.type)
        for c in target.columns
    ]
    return table(target.name, *cols)


# -- reading a database in one snapshot ------------------------------------------------------------


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


def _reflect(conn: Connection) -> list[Table]:
    """The database's data tables in foreign-key order (parents first)."""
    metadata = MetaData()
    metadata.reflect(conn)
    return [t for t in metadata.sorted_tables if t.name not in NOT_BACKED_UP]


def _note_blobs(manifest: Manifest, tenants: set[str], name: str, doc: dict[str, Any]) -> None:
    """Record the blobs and runs a row references."""
    tenant = doc.get("tenant")
    if not isinstance(tenant, str):
        return
    tenants.add(tenant)
    if name == "artifacts":
        ref = f"artifact {doc.get('run_id')}/{doc.get('node_path')}/{doc.get('output_name')}"
        manifest.add(tenant, doc.get("sha256"), doc.get("size"), ref)
    elif name == "task_inputs":
        ref = f"input {doc.get('name')!r} of task {doc.get('task_id')}"
        manifest.add(tenant, doc.get("sha256"), None, ref)
    elif name == "runs":
        manifest.runs.setdefault(tenant, []).append(str(doc["id"]))
    elif name == "pipeline_versions" and isinstance(doc.get("spec"), dict):
        spec = doc["spec"]
        version = f"pipeline version {str(doc.get('digest'))[:19]}"
        for key, package in (spec.get("code") or {}).items():
            size = package.get("size") if isinstance(package, dict) else None
            manifest.add(tenant, key, size, f"code package of {version}")
        for step_name, step in (spec.get("steps") or {}).items():
            impl = step.get("implementation") if isinstance(step, dict) else None
            if isinstance(impl, dict):
                manifest.add(
                    tenant, impl.get("code"), None, f"code of step {step_name!r} ({version})"
                )
                manifest.add(tenant, impl.get("environment"), None,
                             f"environment of step {step_name!r} ({version})")  # fmt: skip


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
    tables = _reflect(conn)

    def scoped(stmt: Any, t: Table) -> Any:
        return stmt.where(t.c.tenant == tenant) if tenant is not None and "tenant" in t.c else stmt

    total = sum(int(conn.execute(scoped(select(func.count()).select_from(t), t)).scalar_one())
                for t in tables)  # fmt: skip
    reporter.start("reading metadata (rows)", total)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    manifest, tenants, infos = Manifest(), set[str](), []
    for t in tables:
        columns = [ColumnInfo(c.name, _kind(c.type)) for c in t.columns]
        exprs = [cast(c, Text) if _kind(c.type) == "json" else c for c in t.columns]
        stmt = scoped(select(*exprs).order_by(*t.primary_key.columns), t)
        digest, rows = hashlib.sha256(), 0
        with (folder / "metadata" / f"{t.name}.jsonl").open("wb") as f:
            for row in conn.execution_options(yield_per=BATCH).execute(stmt):
                doc = _encode(row, columns)
                _note_blobs(manifest, tenants, t.name, doc)
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


# -- writing a backup ---------------------------------------------------------------------------------


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


def _file_sha256(path: Path) -> str:
    return sha256_file(path).sha256


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


PlainReader = Callable[[str, BinaryIO], BinaryIO]
"""(tenant, stored bytes) -> their plaintext: decrypts objects encrypted at rest (whose name
is the sha256 of the plaintext); backups keep them encrypted and verify them through this."""


def _is_encrypted_file(path: Path) -> bool:
    from argosy.stores.encryption import MAGIC, is_encrypted

    with path.open("rb") as f:
        return is_encrypted(f.read(len(MAGIC)))


def _plain_sha256(path: Path, tenant: str, plain: PlainReader | None) -> str | None:
    """The sha256 of the plaintext of an encrypted object in ``path`` (None: not encrypted,
    or no keys to open it)."""
    if plain is None or not _is_encrypted_file(path):
        return None
    with path.open("rb") as f:
        digest = hashlib.sha256()
        try:
            reader = plain(tenant, f)
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
        except StoreError:
            return "undecryptable"
        return digest.hexdigest()


def _copy_verified(
    source: Any, dest: Path, sha256: str, *, tenant: str = "", plain: PlainReader | None = None
) -> bool:
    """Stream ``source`` to ``dest`` while hashing; keep it only if it hashes to ``sha256``
    (its plaintext's hash, for an object encrypted at rest: it stays encrypted)."""
    digest = hashlib.sha256()
    partial = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256 and _plain_sha256(partial, tenant, plain) != sha256:
        partial.unlink()
        return False
    partial.replace(dest)
    return True


def _copy_out(
    backend: ByteStore, dump_: Dump, folder: Path, reporter: Reporter, plain: PlainReader | None
) -> tuple[int, list[BlobProblem]]:
    """Copy the manifest's blobs (hash-checked) and the runs' records into the backup."""
    problems: list[BlobProblem] = []
    copied = 0
    reporter.start("copying blobs", dump_.manifest.count())
    for tenant, sha, entry in dump_.manifest.entries():
        dest = folder / "blobs" / sha[:2] / sha
        if not dest.exists():
            key = ArtifactStore(backend, tenant).blob_key(sha)
            try:
                with backend.open(key) as src:
                    ok = _copy_verified(src, dest, sha, tenant=tenant, plain=plain)
            except FileNotFoundError:
                problems.append(BlobProblem(tenant, sha, "missing", entry.get("ref")))
            else:
                if ok:
                    copied += 1
                else:
                    problems.append(BlobProblem(tenant, sha, "corrupt", entry.get("ref")))
        reporter.advance()
    reporter.done()
    for tenant, runs in dump_.manifest.runs.items():
        wanted = set(runs)
        prefix = f"tenants/{tenant}/runs/"
        keys = [k for k in backend.list(prefix) if k[len(prefix) :].split("/", 1)[0] in wanted]
        reporter.start(f"copying run records of tenant {tenant}", len(keys))
        for key in keys:
            dest = folder / "records" / tenant / key[len(f"tenants/{tenant}/") :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with backend.open(key) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except FileNotFoundError:  # pragma: no cover - removed while listing
                dest.unlink(missing_ok=True)
            reporter.advance()
        reporter.done()
    return copied, problems


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
            copied, problems = _copy_out(blobs_from, result, staging, reporter, plain)
        _write_json(staging / MANIFEST, result.manifest.to_json())
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
            "manifest_sha256": _file_sha256(staging / MANIFEST),
            "blobs_included": blobs_from is not None,
            "missing_blobs": [p.to_json() for p in problems],
        }
        _write_json(staging / INDEX, index)
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


# -- reading a backup -----------------------------------------------------------------------------


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
                yield _decode(json.loads(line), info.columns)

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
        if _file_sha256(folder / MANIFEST) != index["manifest_sha256"]:
            raise StoreError(f"{src}: {MANIFEST} does not match its recorded sha256; it is damaged")
        tables = [TableInfo.from_json(t) for t in index["tables"]]
        for info in tables:
            path = folder / "metadata" / f"{info.name}.jsonl"
            if not path.is_file() or _file_sha256(path) != info.sha256:
                raise StoreError(
                    f"{src}: metadata/{info.name}.jsonl is missing or does not match its "
                    "recorded sha256; the backup is damaged"
                )
        manifest = Manifest.from_json(json.loads((folder / MANIFEST).read_text()))
        yield Backup(folder, index, tables, manifest, folder / "metadata")
    finally:
        if extracted is not None:
            shutil.rmtree(extracted, ignore_errors=True)


# -- schema revisions -------------------------------------------------------------------------------


def revision_chain(url: str) -> list[str]:
    """The Alembic revisions this Argosy knows, from the first to head."""
    from alembic.script import ScriptDirectory

    from argosy.stores.metadata.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _known(backup: Backup, chain: list[str]) -> None:
    if backup.revision not in chain:
        raise UsageError(
            f"the backup's schema revision {backup.revision} (Argosy "
            f"{backup.index.get('argosy_version')}) is newer than this Argosy knows (up to "
            f"{chain[-1]}); restore it with that Argosy version or a newer one"
        )


def _migrate(conn: Connection, url: str, chain: list[str], target: str) -> None:
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


def _exclusive(conn: Connection) -> None:
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
    for t in _reflect(conn):
        if conn.execute(select(1).select_from(t).limit(1)).first() is not None:
            return t.name
    return None


# -- restore ------------------------------------------------------------------------------------------


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


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_columns(info: TableInfo, targets: dict[str, Table], revision: str) -> Table:
    target = targets.get(info.name)
    if target is None:
        raise StoreError(f"table {info.name} of the backup does not exist at revision {revision}")
    missing = [c.name for c in info.columns if c.name not in target.c]
    if missing:
        raise StoreError(
            f"columns {missing} of table {info.name} do not exist at revision {revision}"
        )
    return target


def _load(conn: Connection, backup: Backup, reporter: Reporter) -> dict[str, dict[str, int]]:
    """Insert every row of the backup (into an empty database at the backup's revision)."""
    targets = {t.name: t for t in _reflect(conn)}
    stats: dict[str, dict[str, int]] = {}
    reporter.start("loading metadata (rows)", sum(t.rows for t in backup.tables))
    for info in backup.tables:
        target = _check_columns(info, targets, backup.revision)
        statement = insert(_insert_table(target))
        count = 0
        for batch in _chunks(backup.rows(info), BATCH):
            conn.execute(statement, batch)
            count += len(batch)
            reporter.advance(len(batch))
        stats[info.name] = {"inserted": count, "present": 0, "merged": 0}
    reporter.done()
    return stats


def _restore_metadata(
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
            _exclusive(conn)
            if check_empty:
                _refuse_nonempty(conn, url)
            _migrate(conn, url, chain, backup.revision)
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


def _refuse_nonempty(conn: Connection, url: str) -> None:
    from argosy.config import redact

    name = _nonempty_table(conn)
    if name is not None:
        raise UsageError(
            f"the target database {redact('database_url', url)} is not empty (table {name} "
            "has rows); restore only into an empty database (point ARGOSY_DATABASE_URL at a "
            "new one), or merge with 'argosy admin import'"
        )


def _blob_sources(
    backend: ByteStore,
    backup: Backup,
    tenant_map: dict[str, str],
    reporter: Reporter,
    plain: PlainReader | None = None,
) -> int:
    """Put each manifest blob the store lacks under its (new) tenant: from the backup, or,
    for a renamed tenant, from the old tenant's prefix in the same store. Returns the count."""
    copied = 0
    reporter.start("copying blobs into the artifact store", backup.manifest.count())
    for tenant, sha, _entry in backup.manifest.entries():
        reporter.advance()
        store = ArtifactStore(backend, tenant_map.get(tenant, tenant))
        if store.has_blob(sha):
            continue
        path = backup.blob_file(sha)
        if path is not None:
            info = sha256_file(path)
            if info.sha256 != sha and _is_encrypted_file(path):
                # encrypted at rest: stored as it is, checked by the verification afterwards
                # (its tenant's data keys arrive with the metadata)
                info = BlobInfo(sha, info.size)
            if info.sha256 == sha:
                store.put_file(path, info)
                copied += 1
                continue
        if store.tenant != tenant:
            old = ArtifactStore(backend, tenant)
            tmp = Path(tempfile.mkdtemp(prefix=".argosy-blob-")) / sha
            try:
                with backend.open(old.blob_key(sha)) as src:
                    if _copy_verified(src, tmp, sha, tenant=tenant, plain=plain):
                        store.put_file(tmp, move=True)
                        copied += 1
            except FileNotFoundError:
                pass
            finally:
                shutil.rmtree(tmp.parent, ignore_errors=True)
    reporter.done()
    return copied


def _record_sources(
    backend: ByteStore, backup: Backup, tenant_map: dict[str, str], reporter: Reporter
) -> int:
    """Put the backup's run records (logs, results) the store lacks under their tenant."""
    copied = 0
    for tenant in backup.manifest.runs:
        store = ArtifactStore(backend, tenant_map.get(tenant, tenant))
        files = list(backup.record_files(tenant))
        if not files:
            continue
        reporter.start(f"copying run records of tenant {store.tenant}", len(files))
        for relative, path in files:
            if not backend.exists(store.record_key(relative)):
                store.put_record_file(relative, path)
                copied += 1
            reporter.advance()
        reporter.done()
    return copied


def _check_blob(
    backend: ByteStore, tenant: str, sha: str, mode: str, plain: PlainReader | None = None
) -> str | None:
    """None if the blob is there (and hashes right, for mode "hash"), else the problem."""
    from argosy.stores.encryption import is_encrypted

    key = ArtifactStore(backend, tenant).blob_key(sha)
    if mode == "exists":
        return None if backend.exists(key) else "missing"
    digest = hashlib.sha256()
    try:
        with backend.open(key) as f:
            head = f.read(CHUNK)
            if plain is not None and is_encrypted(head):
                f.seek(0)
                try:
                    reader = plain(tenant, f)
                    while chunk := reader.read(CHUNK):
                        digest.update(chunk)
                except StoreError:
                    return "corrupt"
            else:
                digest.update(head)
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
    except FileNotFoundError:
        return "missing"
    return None if digest.hexdigest() == sha else "corrupt"


def _verify_mode(mode: str) -> None:
    if mode not in ("hash", "exists"):
        raise UsageError(f"unknown verify mode {mode!r}: use hash or exists")


def verify_blobs(
    backend: ByteStore,
    manifest: Manifest,
    *,
    tenant_map: dict[str, str] | None = None,
    mode: str = "hash",
    reporter: Reporter | None = None,
    plain: PlainReader | None = None,
) -> list[BlobProblem]:
    """Every manifest blob that is missing from the store (or, mode "hash", hashes wrong)."""
    _verify_mode(mode)
    reporter = reporter or Reporter()
    tenant_map = tenant_map or {}
    entries = [(tenant_map.get(t, t), sha, e) for t, sha, e in manifest.entries()]
    reporter.start(f"verifying blobs ({mode})", len(entries))
    problems: list[BlobProblem] = []
    with ThreadPoolExecutor(max_workers=VERIFY_WORKERS) as pool:
        results = pool.map(lambda e: _check_blob(backend, e[0], e[1], mode, plain), entries)
        for (tenant, sha, entry), problem in zip(entries, results, strict=True):
            if problem is not None:
                problems.append(BlobProblem(tenant, sha, problem, entry.get("ref")))
            reporter.advance()
    reporter.done()
    return problems


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

    _verify_mode(verify)
    reporter = reporter or Reporter()
    started = time.monotonic()
    chain = revision_chain(url)
    _known(backup, chain)
    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as conn:  # fail before copying any blob
            _refuse_nonempty(conn, url)
    finally:
        engine.dispose()
    blobs_copied = records_copied = 0
    if store is not None:
        blobs_copied = _blob_sources(store, backup, {}, reporter, plain)
        records_copied = _record_sources(store, backup, {}, reporter)
    stats, released = _restore_metadata(backup, url, chain, reporter, release_runs=release_runs)
    problems = [] if store is None else verify_blobs(store, backup.manifest, mode=verify,
                                                     reporter=reporter, plain=plain)  # fmt: skip
    return RestoreSummary(
        database=redact("database_url", url), revision=backup.revision, head=chain[-1],
        tables=stats, tenants={t: t for t in backup.tenants}, blobs=backup.manifest.count(),
        blobs_copied=blobs_copied, records_copied=records_copied, verify=verify,
        problems=problems, seconds=time.monotonic() - started, runs_released=released,
    )  # fmt: skip


# -- import (merge) -------------------------------------------------------------------------------------


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
    statement = insert(_insert_table(target))
    mapped = idmap.setdefault(target.name, {})
    stats = {"inserted": 0, "present": 0, "merged": 0}
    for batch in _chunks(rows, BATCH):
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
    _restore_metadata(backup, url, chain, reporter, check_empty=False)  # engines kept as-is
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

    _verify_mode(verify)
    reporter = reporter or Reporter()
    tenant_map = dict(tenant_map or {})
    started = time.monotonic()
    chain = revision_chain(url)
    _known(backup, chain)
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
                blobs_copied = _blob_sources(store, backup, tenant_map, reporter)
                records_copied = _record_sources(store, backup, tenant_map, reporter)
            stats: dict[str, dict[str, int]] = {}
            idmap: dict[str, dict[Any, Any]] = {}
            reporter.start("merging metadata (tables)", len(source.tables))
            with engine.begin() as conn:
                _exclusive(conn)
                targets_by_name = {t.name: t for t in _reflect(conn)}
                for info in source.tables:
                    target = _check_columns(info, targets_by_name, source.revision)
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


__all__ = [
    "Backup",
    "BackupSummary",
    "BlobProblem",
    "Manifest",
    "Reporter",
    "RestoreSummary",
    "dump",
    "import_backup",
    "open_backup",
    "restore",
    "revision_chain",
    "snapshot",
    "verify_blobs",
    "write_backup",
]
