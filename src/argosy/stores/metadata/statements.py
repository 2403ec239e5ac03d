"""The engine's per-task statements, built once and run on the session's connection.

Every task of a run costs the engine about eight writes (its inputs, its queueing, its
attempt, the attempt's process, outcome and outputs, the task's end). Built per call through
the ORM, each spends ~0.15 ms of Python constructing the statement, computing its cache key
and doing the ORM's bulk-update bookkeeping, for a statement SQLite runs in ~0.01 ms; built
once, the same write costs ~0.015 ms. The rows these write are never loaded as ORM objects in
the engine's transactions, so nothing in a session goes stale; the writes run at once, in the
caller's transaction, in the order they are made.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, Table, Update, bindparam, insert, update
from sqlalchemy.orm import Session

from argosy.stores.metadata.tables import Base


def table_of(model: type[Base]) -> Table:
    """The model's table (a mapped class's ``__table__`` is typed as any ``FromClause``)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


@functools.cache
def _update_by_id(model: type[Base]) -> Update:
    table = table_of(model)
    # no .values(): the columns set are the parameters' keys (one compiled form per key set)
    return update(table).where(table.c.id == bindparam("row_id"))


@functools.cache
def _insert(model: type[Base]) -> Insert:
    return insert(table_of(model))


def update_row(session: Session, model: type[Base], row_id: str, values: Mapping[str, Any]) -> int:
    """``UPDATE <model's table> SET values WHERE id = row_id``; how many rows it changed."""
    result = session.connection().execute(_update_by_id(model), {"row_id": row_id, **values})
    return int(result.rowcount)


def insert_rows(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT`` ``rows`` (each every column it sets, ``id`` included) into the table."""
    if rows:
        session.connection().execute(_insert(model), list(rows))
