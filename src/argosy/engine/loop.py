"""The run loop: one engine's drive of one run, from claim to final status.

Each turn it cancels what must be (a cancel request, fail-fast, Ctrl-C), settles attempts
that ended, and advances the tasks: a pending task whose upstream is done gets its verdict
(see :mod:`.readiness`) — skipped, or its inputs resolved (:mod:`.inputs`) and then reused
or queued (:mod:`.reuse`), or, for a map, fanned out (:mod:`.fanout`); queued tasks start in
pipeline order while the executor has room (:mod:`.attempts`). When no task can move it
waits for the executor. It ends when every task is done, writing the run's status.

It survives its metadata database going away (see :meth:`RunLoop.run`) and its own engine's
predecessor dying (:mod:`.recovery`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from argosy.engine import readiness
from argosy.engine.attempts import Attempts, Prepared
from argosy.engine.fanout import Fanout
from argosy.engine.inputs import Inputs
from argosy.engine.recovery import Recovery
from argosy.engine.reuse import Reuse
from argosy.engine.state import RunAbandoned, RunState, TaskView, artifact_ref
from argosy.errors import ArgosyError, ExecutionError, StoreError
from argosy.executors.base import AttemptExit, Usage
from argosy.spec.models import PipelineSpec
from argosy.states import TASK_DONE, Reason, RunStatus, TaskState
from argosy.stores.metadata import db
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import tasks as task_rows

if TYPE_CHECKING:
    from argosy.engine.engine import Engine

CANCEL_CHECK_INTERVAL = 0.5

log = logging.getLogger("argosy.engine")


class RunLoop:
    """Drives one run to its end (state mirrored in memory, written through to the DB)."""

    def __init__(
        self,
        engine: Engine,
        run_id: str,
        spec: PipelineSpec,
        parameters: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.e = engine
        self.run_id = run_id
        self.state = RunState(engine, run_id, spec, parameters, options)
        self.attempts = Attempts(self.state)
        self.fanout = Fanout(self.state)
        self.inputs = Inputs(self.state)
        self.reuse = Reuse(self.state)
        self.recovery = Recovery(self.state, self.attempts)
        self.exits: list[tuple[AttemptExit, str | None]] = []  # ended, not yet settled in the DB

    def run(self) -> RunStatus:
        """Drive the run to its end, waiting out database outages of up to ``db_retry_seconds``.

        A lost connection to the metadata database does not stop the run: running attempts
        keep running, attempts that end meanwhile are kept (their result records are in the
        artifact store) and, once the database answers again, the in-memory mirror is rebuilt
        from it and those attempts are settled (fenced by their numbers, as always).
        """
        started = False  # the first load and the recovery of a dead engine's attempts are done
        down_since: float | None = None
        tries = 0
        while True:
            try:
                if not started:
                    self.state.reset()
                    self._load()
                    self.recovery.recover()
                    started = True
                elif down_since is not None:
                    self._resync()
                if down_since is not None:
                    log.warning(
                        "database reachable again after %.0f s; continuing run %s",
                        time.monotonic() - down_since,
                        self.run_id,
                    )
                    down_since, tries = None, 0
                return self._loop()
            except DBAPIError as exc:
                if not db.is_transient(exc):
                    raise
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    log.warning(
                        "database unreachable, retrying for up to %.0f s (%s: %s)",
                        self.e.db_retry_seconds,
                        self.e.metadata.where,
                        db.error_summary(exc),
                    )
                elif now - down_since >= self.e.db_retry_seconds:
                    self._stop_live(Reason.CANCELLED)
                    raise StoreError(
                        f"the metadata database at {self.e.metadata.where} was unreachable for "
                        f"{now - down_since:.0f} s ({db.error_summary(exc)}); run {self.run_id} "
                        f"was stopped and stays 'running': finish it with "
                        f"'argosy runs resume {self.run_id}' once the database is back"
                    ) from exc
                delay = db.backoff(tries, first=0.25, cap=2.0)
                tries += 1
                self._wait_out(min(delay, max(0.0, down_since + self.e.db_retry_seconds - now)))

    def _loop(self) -> RunStatus:
        st = self.state
        next_cancel_check = 0.0
        st.emit()
        while True:
            if self.e.abandoned:
                self._abandon()
            now = time.monotonic()
            if st.cancel_reason and not st.cancelling:
                st.cancel_why = st.cancel_reason
                self._cancel_all(st.cancel_reason)
            if now >= next_cancel_check:
                next_cancel_check = now + CANCEL_CHECK_INTERVAL
                if not st.cancelling and self._cancel_requested():
                    st.cancel_why = Reason.CANCELLED
                    self._cancel_all(Reason.CANCELLED)
            changed = self._turn()
            if changed:
                st.emit()
                continue  # what changed may let more tasks move at once (a map's iterations)
            if not st.live and all(t.state in TASK_DONE for t in st.tasks.values()):
                return self._finish()
            if self.e.draining and not st.live:
                self._abandon()  # nothing running: hand the run over to another instance
            waiting = [t.not_before for t in st.tasks.values() if t.state == TaskState.QUEUED]
            timeout = self.e.poll_interval
            if waiting:
                timeout = max(0.0, min(timeout, min(waiting) - time.monotonic()))
            if not st.live and not waiting:
                raise ExecutionError(  # pragma: no cover - a bug, not a user error
                    f"run {self.run_id} is stuck: no task can make progress"
                )
            self._keep_exits(self.e.executor.poll(timeout))

    def _load(self) -> None:
        """Fill the mirror from the database (the tasks, their outputs, the maps' iterations)."""
        st = self.state
        with self.e.metadata.session() as s:
            for t in q.tasks_of(s, self.run_id):
                st.tasks[t.node_path] = TaskView(
                    id=t.id, node_path=t.node_path, step_name=t.step_name, state=t.state,
                    attempt_count=t.attempt_count, failures=t.failures, reason=t.reason,
                    inputs=t.inputs,
                )  # fmt: skip
            for a in task_rows.run_artifacts(s, self.run_id):
                st.tasks[a.node_path].outputs[a.output_name] = artifact_ref(a)
        self.fanout.rebuild()

    # -- advancing -------------------------------------------------------------------------------
    def _turn(self) -> bool:
        """Settle the attempts that ended, settle pending tasks whose upstream is done, and
        write the attempts of the queued tasks that can start: one transaction, committed
        before those attempts' processes start (a chain pays one commit between a task ending
        and its dependant starting, not three; a fan-out one for all its branches, not two
        each); then start them, record where they run in one more, and start any other queued
        task that fits, each as before. Whether anything moved that may let more move."""
        st = self.state
        batch: list[Prepared] = []
        changed = False
        if self.e.task_store is not None or self.e.store.encrypted:
            # checking a server task's outputs, or reading an encrypted result record, uses
            # the database: never inside this transaction (on SQLite it would wait for itself)
            self._settle_exits()
        with self.e.metadata.session() as s:
            settled = self._settle_kept(s)
            fail_fast = bool(st.cancel_reason) and not st.cancelling
            if not fail_fast:  # (else the loop cancels first, as it does after any failure)
                changed = self._settle_pending(s)
                if not st.cancel_reason:
                    batch = self._prepare_startable(s)
        del self.exits[:settled]
        if settled:
            st.emit()
        if fail_fast:
            return True
        if batch:
            self.attempts.launch(batch)
            changed = True
        return self._start_queued() or changed

    def _settle_pending(self, s: Session) -> bool:
        st = self.state
        changed = False
        settling = any(
            v.state == TaskState.PENDING or (v.state == TaskState.RUNNING and st.plan[p].is_map)
            for p, v in st.tasks.items()
        )
        if not settling:
            return False
        for path in list(st.order):
            node, view = st.plan[path], st.tasks[path]
            if view.state == TaskState.RUNNING and node.is_map:
                changed |= self.fanout.maybe_finish(s, node, view)
            if view.state != TaskState.PENDING:
                continue
            if st.cancelling and node.exit_group is None:
                continue
            verdict = readiness.verdict(st, node)
            if verdict is None:
                continue
            changed = True
            if verdict:
                st.set_task(s, view, TaskState.SKIPPED, finished_at=q.now(), reason=verdict)
                continue
            try:
                view.inputs = self.inputs.resolve(node)
            except ArgosyError as exc:
                st.set_task(s, view, TaskState.FAILED, finished_at=q.now(),
                            reason=f"{Reason.INPUT_ERROR}: {exc}")  # fmt: skip
                continue
            if node.is_map:
                self.fanout.start(s, node, view)
                continue
            self.inputs.record(s, view)
            self.reuse.consult(s, view)
        return changed

    def _startable(self, now: float) -> Iterator[str]:
        """Queued tasks, in pipeline order, that may start now (room permitting), each judged
        when reached: a start before it counts towards a map's ``parallelism``."""
        st = self.state
        if self.e.draining:
            return
        for path in list(st.order):
            view = st.tasks[path]
            if view.state != TaskState.QUEUED or view.not_before > now:
                continue
            node = st.plan[path]
            if st.cancelling and node.exit_group is None:
                continue
            if readiness.within_parallelism(st, node):
                yield path

    def _fits(self, path: str, besides: Usage | None = None) -> bool:
        r = self.state.step_of(path).resources
        return self.e.executor.has_room(r.cpu, r.memory, r.gpu, besides)

    @staticmethod
    def _cause(view: TaskView) -> str:
        if view.reason == Reason.ENGINE_LOST:
            return Reason.ENGINE_LOST.value
        return "retry" if view.attempt_count else "first"

    def _prepare_startable(self, s: Session) -> list[Prepared]:
        """The attempts of the queued tasks that can start now, in pipeline order, written in
        ``s``, each admitted besides those before it. Only where writing them needs no other
        transaction: up to the first step with secrets (reading one may decrypt through the
        database), on an engine without a task store (granting one writes a credential)."""
        batch: list[Prepared] = []
        if self.e.task_store is not None:
            return batch
        held = Usage()
        for path in self._startable(time.monotonic()):
            if not self._fits(path, held):
                continue
            step = self.state.step_of(path)
            if step.secrets:
                break
            view = self.state.tasks[path]
            batch.append(self.attempts.prepare(s, view, cause=self._cause(view)))
            held.add(step.resources.cpu, step.resources.memory, step.resources.gpu)
        return batch

    def _start_queued(self) -> bool:
        changed = False
        for path in self._startable(time.monotonic()):
            if not self._fits(path):
                continue
            view = self.state.tasks[path]
            self.attempts.start(view, cause=self._cause(view))
            changed = True
        return changed

    # -- cancelling and finishing ------------------------------------------------------------------
    def _cancel_requested(self) -> bool:
        if self.e.interrupted:
            return True
        with self.e.metadata.session() as s:
            return task_rows.cancel_requested(s, self.run_id)

    def _cancel_all(self, why: str) -> None:
        st = self.state
        st.cancelling = True
        with self.e.metadata.session() as s:
            for path, view in st.tasks.items():
                if st.plan[path].exit_group is not None:
                    continue  # exit handlers still run, after their group is done
                if view.state in (TaskState.PENDING, TaskState.QUEUED):
                    st.set_task(s, view, TaskState.CANCELLED, finished_at=q.now(), reason=why)
        self._stop_live(Reason.CANCELLED)
        st.emit()

    def _finish(self) -> RunStatus:
        st = self.state
        states = {t.state for t in st.tasks.values()}
        if st.cancelling and not (st.fail_fast and TaskState.FAILED in states):
            status = RunStatus.CANCELLED
        elif TaskState.FAILED in states or TaskState.CANCELLED in states:
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        failed = [t for t in st.tasks.values() if t.state == TaskState.FAILED]
        error = "; ".join(f"{t.node_path}: {t.reason}" for t in failed) or None
        outputs = {}
        for name, bound in st.pipeline_outputs.items():
            art = st.produced(bound)
            if art is not None:
                outputs[name] = art["id"]
        with self.e.metadata.session() as s:
            task_rows.finish_run(
                s, self.run_id, status=status, error=error, outputs=outputs, at=q.now()
            )
        st.emit()
        return status

    # -- surviving a database outage, stopping -------------------------------------------------------
    def _keep_exits(self, exits: list[AttemptExit]) -> None:
        """Remember ended attempts (with their node) until their outcome is in the DB."""
        self.exits.extend((ended, self.state.live.get(ended.attempt_id)) for ended in exits)

    def _settle_kept(self, s: Session) -> int:
        """Settle the kept exits in order, in ``s``; how many (the caller drops them once ``s``
        is committed: if the database went away they stay kept, to be settled again)."""
        for ended, node in self.exits:
            if node is not None:
                self.state.live.setdefault(ended.attempt_id, node)  # popped by a try that failed
            self.attempts.complete(ended, s)
        return len(self.exits)

    def _settle_exits(self) -> None:
        """Settle the kept exits in order, each in a transaction of its own (settling may read
        the database in another: a server's output check); one that fails (the database went
        away) stays kept."""
        while self.exits:
            ended, node = self.exits[0]
            if node is not None:
                self.state.live.setdefault(ended.attempt_id, node)  # popped by a try that failed
            self.attempts.complete(ended)
            self.exits.pop(0)
            self.state.emit()

    def _abandon(self) -> None:
        """End the live attempts without settling them (the next owner does) and stop."""
        live = self.state.live
        for ended, _ in self.exits:  # ended already, not settled yet: the next owner does
            live.pop(ended.attempt_id, None)
        self._stop_live(Reason.ENGINE_LOST)
        deadline = time.monotonic() + 30.0
        while live and time.monotonic() < deadline:  # reap them, so their logs are stored
            for ended in self.e.executor.poll(0.2):
                live.pop(ended.attempt_id, None)
        raise RunAbandoned(self.run_id)

    def _stop_live(self, reason: str) -> None:
        for attempt_id in list(self.state.live):
            self.e.executor.stop(attempt_id, reason)

    def _wait_out(self, seconds: float) -> None:
        """Sleep while the DB is down, still collecting attempts that end (and enforcing
        timeouts, which the executor does while polled); Ctrl-C stops the live attempts."""
        deadline = time.monotonic() + seconds
        while True:
            if self.e.interrupted:
                self._stop_live(Reason.CANCELLED)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._keep_exits(self.e.executor.poll(min(left, self.e.poll_interval)))

    def _resync(self) -> None:
        """After an outage: rebuild the mirror from the DB, settle the attempts that ended
        meanwhile, and end attempts the DB has as running that were never launched."""
        st = self.state
        st.reset()
        self._load()
        with self.e.metadata.session() as s:
            backoffs = task_rows.retry_backoffs(s, self.run_id)
        now = q.now()
        for path, not_before in backoffs:  # retry backoffs still to wait out
            at = q.as_utc(not_before)
            wait = (at - now).total_seconds() if at is not None else 0.0
            st.tasks[path].not_before = time.monotonic() + max(0.0, wait)
        self._settle_exits()
        self.recovery.adopt_unlaunched()
        if st.cancelling:
            self._cancel_all(st.cancel_why or Reason.CANCELLED)
        st.emit()
