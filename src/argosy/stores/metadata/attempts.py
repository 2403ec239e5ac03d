"""Attempt rows as the engine writes them: created before the process starts, fenced by number.

An attempt is created ``running`` before its process exists, gets its process identity once
the executor started it (so a later engine can find and end it), and is finished exactly
once: :func:`finish_if_current` is the fence that keeps a stale attempt (an older number, or one
already settled) from committing anything.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Update, bindparam, delete, select, update
from sqlalchemy.orm import Session

from argosy.ids import new_id
from argosy.states import AttemptState
from argosy.stores.metadata import statements
from argosy.stores.metadata.tables import Attempt, Task


def create_attempt(
    session: Session,
    *,
    tenant: str,
    run_id: str,
    task_id: str,
    number: int,
    cause: str,
    resources: dict[str, Any],
    node_pool: str | None,
    log_key: str,
    user: str,
    at: datetime,
) -> str:
    """A new ``running`` attempt (its process is started next); returns its id."""
    attempt_id = new_id()
    statements.insert_rows(session, Attempt, [{
        "id": attempt_id, "tenant": tenant, "run_id": run_id, "task_id": task_id,
        "number": number, "state": AttemptState.RUNNING, "cause": cause,
        "resources": resources, "node_pool": node_pool, "log_key": log_key, "started_at": at,
        "created_at": at, "created_by": user,
    }])  # fmt: skip
    return attempt_id


def withdraw_attempt(session: Session, attempt_id: str) -> None:
    """Remove an attempt whose process never started (the executor had no room after all)."""
    session.execute(delete(Attempt).where(Attempt.id == attempt_id))


def record_process(
    session: Session,
    attempt_id: str,
    *,
    host: str,
    pid: int,
    pgid: int,
    started: float | None,
    resources: dict[str, Any],
) -> None:
    """Where the attempt's process runs: how a later engine finds it again (and its GPUs)."""
    statements.update_row(session, Attempt, attempt_id, {
        "host": host, "pid": pid, "pgid": pgid, "process_started": started,
        "resources": resources,
    })  # fmt: skip


def finish_if_current(session: Session, attempt_id: str, task_id: str, **values: Any) -> bool:
    """Write an attempt's outcome (as :func:`finish_attempt`) only if it is still its task's
    current, running attempt; whether it was (if not, nothing is written and the caller must
    commit nothing of it). The fence and the write are one statement."""
    done = session.connection().execute(
        _finish_if_current(), {"row_id": attempt_id, "fence_task_id": task_id, **values}
    )
    return bool(done.rowcount == 1)


@functools.cache
def _finish_if_current() -> Update:
    table = statements.table_of(Attempt)
    attempts, tasks = table.c, statements.table_of(Task).c
    current = (
        select(tasks.attempt_count).where(tasks.id == bindparam("fence_task_id")).scalar_subquery()
        == attempts.number
    )
    return update(table).where(
        attempts.id == bindparam("row_id"), attempts.state == AttemptState.RUNNING, current
    )


def finish_attempt(session: Session, attempt_id: str, **values: Any) -> None:
    """Write an attempt's outcome: ``state``, ``reason``, ``error``, ``finished_at`` and what
    the executor measured (exit code, signal, times, peak memory, log tail)."""
    statements.update_row(session, Attempt, attempt_id, values)


def running_attempts(session: Session, run_id: str) -> list[tuple[Attempt, str]]:
    """The run's attempts still marked ``running``, with their task's node path."""
    rows = session.execute(
        select(Attempt, Task.node_path)
        .join(Task, Task.id == Attempt.task_id)
        .where(Attempt.run_id == run_id, Attempt.state == AttemptState.RUNNING)
    ).all()
    return [(attempt, node) for attempt, node in rows]
