"""The rule for cancelling a run: the one place outside a running engine that writes states.

A cancel request only sets ``cancel_requested``; the engine driving the run sees it within a
poll and stops its attempts (whole process trees). A run that nothing drives yet — pending,
not claimed by a server instance, no live local engine — has no process to stop, so its run
and task states are ended here at once, in the same locked transaction. A running run whose
engine died stays flagged: whoever recovers it (``argosy runs resume``, the local backend's
cancel, or a server instance after the owner's lease expired) ends what is left.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from argosy.states import RUN_DONE, TASK_DONE, Reason, RunStatus, TaskState
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Run


class CancelOutcome(StrEnum):
    REQUESTED = "requested"  # a live engine (or the next recovery) stops it
    CANCELLED = "cancelled"  # nothing was running it: cancelled now
    ALREADY_CANCELLED = "already_cancelled"  # cancelled on an earlier request
    FINISHED = "finished"  # it had ended (succeeded, failed, or cancelled by fail-fast)


def request_cancel(session: Session, run_id: str) -> tuple[Run, CancelOutcome]:
    """Flag the run for cancellation (row-locked), ending it now if nothing drives it."""
    from argosy.engine.engine import engine_alive

    run = session.scalars(
        select(Run)
        .where(Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if run.status == RunStatus.CANCELLED and run.cancel_requested:
        return run, CancelOutcome.ALREADY_CANCELLED
    if run.status in RUN_DONE:
        return run, CancelOutcome.FINISHED
    run.cancel_requested = True
    undriven = run.owner is None and not engine_alive(run.engine)
    if run.status == RunStatus.PENDING and undriven:
        moment = q.now()
        run.status = RunStatus.CANCELLED
        run.finished_at = moment
        run.engine = None
        for task in q.tasks_of(session, run.id):
            if task.state not in TASK_DONE:
                task.state = TaskState.CANCELLED
                task.reason = Reason.CANCELLED
                task.finished_at = moment
        session.flush()
        return run, CancelOutcome.CANCELLED
    session.flush()
    return run, CancelOutcome.REQUESTED
