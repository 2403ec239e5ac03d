"""The backup format's building blocks: names, tables as written, rows as JSON, progress.

Values survive the trip exactly: times are written as UTC ISO 8601 (SQLite hands them back
naive, PostgreSQL in the session's zone), JSON columns as JSON, and a JSON ``null`` is kept
apart from SQL ``NULL`` (a row lists its JSON-null columns under ``"$json_null"``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Table, column, table
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.expression import TableClause

from argosy.stores.artifacts.blobs import sha256_file

FORMAT = "argosy-backup"
FORMAT_VERSION = 1
INDEX = "backup.json"
MANIFEST = "manifest.json"
BATCH = 1000


class Reporter:
    """Progress of a long operation, phase by phase; this one says nothing (the CLI draws)."""

    def start(self, what: str, total: float | None = None) -> None:
        """A new phase begins, with ``total`` units of work if known."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units of the current phase are done."""

    def done(self) -> None:
        """The current phase ended."""


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


def column_kind(type_: Any) -> str:
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


def encode_row(row: Iterable[Any], columns: list[ColumnInfo]) -> dict[str, Any]:
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


def decode_row(doc: dict[str, Any], columns: list[ColumnInfo]) -> dict[str, Any]:
    """The row's values as the database driver takes them (see :func:`insert_table`)."""
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


def insert_table(target: Table) -> TableClause:
    """``target`` for inserts: JSON columns write ``None`` as SQL NULL, ``JSON.NULL`` as null."""
    cols = [
        column(c.name, JSON(none_as_null=True) if column_kind(c.type) == "json" else c.type)
        for c in target.columns
    ]
    return table(target.name, *cols)


def chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def file_sha256(path: Path) -> str:
    return sha256_file(path).sha256


def write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
