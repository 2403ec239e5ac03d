"""Task rows and what hangs off them, as the engine writes them while it drives a run.

The engine is the only writer of task states; these functions are its statements, each
taking the session of the transaction the engine opened (so a transition and what goes with
it — inputs recorded, outputs registered — commit together).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from argosy.ids import new_id
from argosy.states import TaskState
from argosy.stores.metadata import statements
from argosy.stores.metadata.tables import Artifact, Run, Task, TaskInput


def lock_run(session: Session, run_id: str) -> Run:
    """The run, locked for this transaction (one engine claims or releases it at a time)."""
    return session.get_one(Run, run_id, with_for_update=True)


def cancel_requested(session: Session, run_id: str) -> bool:
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def finish_run(
    session: Session,
    run_id: str,
    *,
    status: str,
    error: str | None,
    outputs: dict[str, str],
    at: datetime,
) -> None:
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(status=status, finished_at=at, error=error, outputs=outputs)
    )


def set_task(session: Session, task_id: str, state: str, **values: Any) -> None:
    """Move a task to ``state``, with the columns that change with it."""
    statements.update_row(session, Task, task_id, {"state": state, **values})


def task_at(session: Session, tenant: str, run_id: str, node_path: str) -> Task | None:
    return session.scalar(
        select(Task).where(
            Task.tenant == tenant, Task.run_id == run_id, Task.node_path == node_path
        )
    )


def retry_backoffs(session: Session, run_id: str) -> list[tuple[str, datetime]]:
    """Node path -> not-before time of the run's queued tasks still waiting out a backoff."""
    rows = session.execute(
        select(Task.node_path, Task.not_before)
        .where(Task.run_id == run_id, Task.state == TaskState.QUEUED)
        .where(Task.not_before.is_not(None))
    ).all()
    return [(path, at) for path, at in rows if at is not None]


def add_iterations(
    session: Session,
    *,
    tenant: str,
    run_id: str,
    iterations: list[tuple[str, str, int | None, Any]],
    user: str,
    at: datetime,
) -> list[Task]:
    """Create a map's iteration tasks, ``pending``: (node path, step, index, item) each."""
    for path, step, index, item in iterations:
        session.add(
            Task(
                id=new_id(), tenant=tenant, run_id=run_id, node_path=path, step_name=step,
                state=TaskState.PENDING, attempt_count=0, failures=0,
                item={"index": index, "value": item}, created_at=at, created_by=user,
            )
        )  # fmt: skip
    session.flush()
    paths = [path for path, _, _, _ in iterations]
    return list(
        session.scalars(select(Task).where(Task.run_id == run_id, Task.node_path.in_(paths)))
    )


def record_inputs(
    session: Session,
    *,
    tenant: str,
    run_id: str,
    task_id: str,
    inputs: Mapping[str, Mapping[str, Any]],
    user: str,
    at: datetime,
) -> None:
    """Lineage edges: which artifact, imported file or value each input of the task got."""
    rows = []
    for name, got in inputs.items():
        art = got.get("artifact")
        rows.append({
            "id": new_id(), "tenant": tenant, "run_id": run_id, "task_id": task_id, "name": name,
            "artifact_id": art.get("id") if art else None,
            "sha256": art["sha256"] if art else None, "source": got.get("source"),
            "value": None if art else {"json": got.get("value")}, "created_at": at,
            "created_by": user,
        })  # fmt: skip
    statements.insert_rows(session, TaskInput, rows)


def run_artifacts(session: Session, run_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.run_id == run_id)))


def task_artifacts(session: Session, task_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.task_id == task_id)))


def add_artifact(session: Session, **columns: Any) -> Artifact:
    """A new artifact row (an output of a task), written at once; ``id`` is made here. The
    object returned is not the session's (nothing loads it in the engine's transactions)."""
    row = {"id": new_id(), **columns}
    statements.insert_rows(session, Artifact, [row])
    return Artifact(**row)
