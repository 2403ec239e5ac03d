"""The full-text index of task logs, behind one interface: SQLite FTS5 locally, PostgreSQL
full-text search in production.

The index is derived data: every line in it comes from an attempt's log record (JSON lines in
the tenant's artifact store), so it can be dropped and rebuilt. It therefore lives beside the
metadata schema, not in it: on SQLite in its own file next to the database
(``argosy.db`` → ``argosy-logs.db``), on PostgreSQL in its own schema (``argosy_search``) of
the same database. Which attempts are indexed is recorded in the metadata database
(``log_index_marks``); an index created afresh forgets those marks, so it fills again.

Indexing is off the hot path: an attempt's log is indexed once the attempt has ended (by the
server's lifecycle job every few seconds, and by a search before it looks), never while the
task writes it; live lines are read through the log stream. Every row carries its tenant and
every query filters on it.

Queries are words: each whitespace-separated word must appear (``error 1234`` finds lines
holding both; ``code-1234`` is matched as that sequence of tokens).
"""

from __future__ import annotations

import abc
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from argosy.errors import UsageError

PG_SCHEMA = "argosy_search"
PG_LOCK = 0x41_72_67_6F_4C_67  # advisory lock while creating the index schema
MAX_QUERY_WORDS = 16


@dataclass(frozen=True)
class IndexedLine:
    """One line as the index holds it."""

    id: int
    tenant: str
    run_id: str
    pipeline: str
    node_path: str
    step_name: str
    attempt_id: str
    attempt: int
    n: int  # 1-based line number within the attempt's log
    t: str
    stream: str
    message: str


@dataclass(frozen=True)
class AttemptSource:
    """Where an attempt's lines come from (what each indexed line is labelled with)."""

    tenant: str
    run_id: str
    pipeline: str
    node_path: str
    step_name: str
    attempt_id: str
    attempt: int


@dataclass(frozen=True)
class Filters:
    """What a search may be narrowed to (all optional)."""

    run_ids: Sequence[str] | None = None
    pipeline: str | None = None
    step: str | None = None  # a node path (and its iterations) or a step name
    since: str | None = None  # ISO-8601, compared with each line's time
    until: str | None = None
    stream: str | None = None  # out | err


def query_words(query: str) -> list[str]:
    """The words of a query (``UsageError`` for an empty or overlong one)."""
    words = [w for w in query.split() if w.strip()]
    if not words:
        raise UsageError("an empty search: give at least one word to look for", code="bad_query")
    if len(words) > MAX_QUERY_WORDS:
        raise UsageError(
            f"a search of {len(words)} words; use at most {MAX_QUERY_WORDS}", code="bad_query"
        )
    return words


class LogIndex(abc.ABC):
    """Lines of ended attempts, searchable by words within one tenant."""

    created: bool = False  # made empty by this process: marks of an older index are stale

    @abc.abstractmethod
    def replace(self, source: AttemptSource, entries: Iterable[dict[str, Any]]) -> int:
        """Index the attempt's log entries (``{"t", "s", "m"}``), replacing any it had."""

    @abc.abstractmethod
    def search(
        self, tenant: str, query: str, filters: Filters, *, before: int | None, limit: int
    ) -> list[IndexedLine]:
        """Matching lines of ``tenant``, newest first, with ids below ``before``."""

    @abc.abstractmethod
    def delete_runs(self, tenant: str, run_ids: Sequence[str]) -> int:
        """Forget the lines of these runs (they were deleted); returns how many went."""

    @abc.abstractmethod
    def count(self, tenant: str | None = None) -> int:
        """How many lines are indexed (of one tenant, or in all)."""


def _rows(source: AttemptSource, entries: Iterable[dict[str, Any]]) -> Iterable[tuple[Any, ...]]:
    for n, e in enumerate(entries, 1):
        yield (
            source.tenant, source.run_id, source.pipeline, source.node_path, source.step_name,
            source.attempt_id, source.attempt, n, str(e.get("t", "")), str(e.get("s", "out")),
            str(e.get("m", "")),
        )  # fmt: skip


_COLUMNS = (
    "tenant, run_id, pipeline, node_path, step_name, attempt_id, attempt, n, t, stream, message"
)


def _where(filters: Filters, params: dict[str, Any], alias: str = "") -> str:
    a = f"{alias}." if alias else ""
    clauses = [f"{a}tenant = :tenant"]
    if filters.run_ids is not None:
        keys = []
        for i, run_id in enumerate(filters.run_ids):
            params[f"run{i}"] = run_id
            keys.append(f":run{i}")
        clauses.append(f"{a}run_id IN ({', '.join(keys) or 'NULL'})")
    if filters.pipeline:
        params["pipeline"] = filters.pipeline
        clauses.append(f"{a}pipeline = :pipeline")
    if filters.step:
        params["step"] = filters.step
        params["step_items"] = filters.step + "[%"
        params["step_inner"] = filters.step + "/%"
        clauses.append(
            f"({a}node_path = :step OR {a}step_name = :step OR {a}node_path LIKE :step_items "
            f"OR {a}node_path LIKE :step_inner)"
        )
    if filters.since:
        params["since"] = filters.since
        clauses.append(f"{a}t >= :since")
    if filters.until:
        params["until"] = filters.until
        clauses.append(f"{a}t < :until")
    if filters.stream:
        params["stream"] = filters.stream
        clauses.append(f"{a}stream = :stream")
    return " AND ".join(clauses)


def _line(row: Sequence[Any]) -> IndexedLine:
    return IndexedLine(
        int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]), int(row[8]),
        row[9], row[10], row[11],
    )  # fmt: skip


# -- SQLite: FTS5 in a file of its own ----------------------------------------------------------
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, run_id TEXT NOT NULL, pipeline TEXT NOT NULL,
    node_path TEXT NOT NULL, step_name TEXT NOT NULL, attempt_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, n INTEGER NOT NULL, t TEXT NOT NULL, stream TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_attempt ON lines (attempt_id);
CREATE INDEX IF NOT EXISTS lines_tenant_run ON lines (tenant, run_id);
CREATE INDEX IF NOT EXISTS lines_tenant_id ON lines (tenant, id);
CREATE VIRTUAL TABLE IF NOT EXISTS lines_fts USING fts5(
    message, content='lines', content_rowid='id', tokenize='unicode61'
);
CREATE TRIGGER IF NOT EXISTS lines_ai AFTER INSERT ON lines BEGIN
    INSERT INTO lines_fts(rowid, message) VALUES (new.id, new.message);
END;
CREATE TRIGGER IF NOT EXISTS lines_ad AFTER DELETE ON lines BEGIN
    INSERT INTO lines_fts(lines_fts, rowid, message) VALUES ('delete', old.id, old.message);
END;
"""


def fts5_query(words: Sequence[str]) -> str:
    """Each word as a quoted FTS5 phrase (no operator a user types means anything), ANDed."""
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


class SqliteLogIndex(LogIndex):
    """FTS5 (external content) over a table of lines, in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(_SQLITE_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # derived data: a lost tail is re-indexed
            self._local.conn = conn
        return conn

    def replace(self, source: AttemptSource, entries: Iterable[dict[str, Any]]) -> int:
        conn = self._connect()
        rows = list(_rows(source, entries))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM lines WHERE attempt_id = ?", (source.attempt_id,))
            conn.executemany(
                f"INSERT INTO lines ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def search(
        self, tenant: str, query: str, filters: Filters, *, before: int | None, limit: int
    ) -> list[IndexedLine]:
        params: dict[str, Any] = {"tenant": tenant, "match": fts5_query(query_words(query))}
        where = _where(filters, params, "l")
        if before is not None:
            params["before"] = before
            where += " AND l.id < :before"
        params["limit"] = limit
        sql = (
            f"SELECT l.id, {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} "
            "FROM lines_fts JOIN lines l ON l.id = lines_fts.rowid "
            f"WHERE lines_fts MATCH :match AND {where} ORDER BY l.id DESC LIMIT :limit"
        )
        try:
            found = self._connect().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # a query FTS5 cannot parse
            raise UsageError(f"cannot search for {query!r}: {exc}", code="bad_query") from None
        return [_line(r) for r in found]

    def delete_runs(self, tenant: str, run_ids: Sequence[str]) -> int:
        conn = self._connect()
        gone = 0
        for run_id in run_ids:
            cur = conn.execute(
                "DELETE FROM lines WHERE tenant = ? AND run_id = ?", (tenant, run_id)
            )
            gone += cur.rowcount
        return gone

    def count(self, tenant: str | None = None) -> int:
        conn = self._connect()
        if tenant is None:
            return int(conn.execute("SELECT count(*) FROM lines").fetchone()[0])
        sql = "SELECT count(*) FROM lines WHERE tenant = ?"
        return int(conn.execute(sql, (tenant,)).fetchone()[0])


# -- PostgreSQL: a tsvector column with a GIN index, in a schema of its own ----------------------
_PG_SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA};
CREATE TABLE IF NOT EXISTS {PG_SCHEMA}.log_lines (
    id bigserial PRIMARY KEY, tenant text NOT NULL, run_id text NOT NULL, pipeline text NOT NULL,
    node_path text NOT NULL, step_name text NOT NULL, attempt_id text NOT NULL,
    attempt integer NOT NULL, n integer NOT NULL, t text NOT NULL, stream text NOT NULL,
    message text NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', message)) STORED
);
CREATE INDEX IF NOT EXISTS log_lines_tsv ON {PG_SCHEMA}.log_lines USING gin (tsv);
CREATE INDEX IF NOT EXISTS log_lines_attempt ON {PG_SCHEMA}.log_lines (attempt_id);
CREATE INDEX IF NOT EXISTS log_lines_tenant_run ON {PG_SCHEMA}.log_lines (tenant, run_id);
-- the newest lines of a tenant first: a common word's page is read walking this backwards
CREATE INDEX IF NOT EXISTS log_lines_tenant_id ON {PG_SCHEMA}.log_lines (tenant, id);
"""


class PostgresLogIndex(LogIndex):
    """``to_tsvector('simple', message)`` (no stemming: log words are identifiers) under GIN."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK})
            exists = conn.execute(
                text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{PG_SCHEMA}.log_lines"}
            ).scalar_one()
            self.created = not exists
            if not exists:
                for statement in _PG_SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(text(statement))

    def replace(self, source: AttemptSource, entries: Iterable[dict[str, Any]]) -> int:
        names = [c.strip() for c in _COLUMNS.split(",")]
        rows = [dict(zip(names, r, strict=True)) for r in _rows(source, entries)]
        with self.engine.begin() as conn:
            conn.execute(
                text(f"DELETE FROM {PG_SCHEMA}.log_lines WHERE attempt_id = :a"),
                {"a": source.attempt_id},
            )
            if rows:
                values = ", ".join(":" + n for n in names)
                conn.execute(
                    text(f"INSERT INTO {PG_SCHEMA}.log_lines ({_COLUMNS}) VALUES ({values})"),
                    rows,
                )
        return len(rows)

    def search(
        self, tenant: str, query: str, filters: Filters, *, before: int | None, limit: int
    ) -> list[IndexedLine]:
        words = query_words(query)
        params: dict[str, Any] = {"tenant": tenant, "limit": limit}
        # each word a phrase (its tokens in order), all words required
        terms = []
        for i, word in enumerate(words):
            params[f"w{i}"] = word
            terms.append(f"phraseto_tsquery('simple', :w{i})")
        where = _where(filters, params)
        if before is not None:
            params["before"] = before
            where += " AND id < :before"
        sql = (
            f"SELECT id, {_COLUMNS} FROM {PG_SCHEMA}.log_lines "
            f"WHERE tsv @@ ({' && '.join(terms)}) AND {where} ORDER BY id DESC LIMIT :limit"
        )
        with self.engine.connect() as conn:
            return [_line(r) for r in conn.execute(text(sql), params).all()]

    def delete_runs(self, tenant: str, run_ids: Sequence[str]) -> int:
        if not run_ids:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                text(f"DELETE FROM {PG_SCHEMA}.log_lines WHERE tenant = :t AND run_id = ANY(:ids)"),
                {"t": tenant, "ids": list(run_ids)},
            )
            return int(result.rowcount or 0)

    def count(self, tenant: str | None = None) -> int:
        with self.engine.connect() as conn:
            if tenant is None:
                sql = f"SELECT count(*) FROM {PG_SCHEMA}.log_lines"
                return int(conn.execute(text(sql)).scalar_one())
            sql = f"SELECT count(*) FROM {PG_SCHEMA}.log_lines WHERE tenant = :t"
            return int(conn.execute(text(sql), {"t": tenant}).scalar_one())


_indexes: dict[int, tuple[Engine, LogIndex]] = {}
_indexes_lock = threading.Lock()


def log_index_for(engine: Engine) -> LogIndex:
    """The log index beside the metadata database of ``engine`` (one per engine and process)."""
    with _indexes_lock:
        known = _indexes.get(id(engine))
        found = known[1] if known is not None and known[0] is engine else None
        if found is None:
            if engine.dialect.name == "postgresql":
                found = PostgresLogIndex(engine)
            else:
                database = engine.url.database
                if not database or database == ":memory:":
                    raise UsageError("the log index needs a file database (not :memory:)")
                db_path = Path(database)
                found = SqliteLogIndex(db_path.with_name(db_path.stem + "-logs.db"))
            _indexes[id(engine)] = (engine, found)
        return found
