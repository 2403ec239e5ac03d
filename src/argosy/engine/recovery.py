"""Recovery: settle the attempts the database has as ``running`` that no live engine watches.

Two cases. When an engine takes over a run whose engine died, each such attempt is either
finished (its result record is in the artifact store: adopted as it is, and what it left —
a pod's Job and Secret, stray processes — removed), still running where
the executor can watch it again (a pod: live again, not re-run), or still running without
its engine — then it is killed, found by its recorded host, process group and start
time or by the attempt id in its processes' environment, and settled as ``engine_lost`` (a
new attempt follows that does not use up a retry). After a database outage, attempts whose
start was committed but never seen by this engine are ended and settled the same way.
Either way the attempt's log is stored and its tail kept.
"""

from __future__ import annotations

from argosy.engine.attempts import Attempts
from argosy.engine.state import RunState
from argosy.executors.base import AttemptExit, ProcessIdentity
from argosy.runtime.invocation import ResultRecord
from argosy.stores.metadata import attempts as attempt_rows
from argosy.stores.metadata.tables import Attempt


class Recovery:
    """Adopts orphaned attempts of the run (see the module docstring)."""

    def __init__(self, run: RunState, attempts: Attempts) -> None:
        self.run = run
        self.attempts = attempts

    def _orphans(self) -> list[tuple[Attempt, str]]:
        with self.run.e.metadata.session() as s:
            return attempt_rows.running_attempts(s, self.run.run_id)

    def recover(self) -> None:
        """Reconcile the attempts a dead engine left ``running``."""
        executor = self.run.e.executor
        for attempt, node in self._orphans():
            view = self.run.tasks[node]
            record = self.attempts.result(attempt.id, node, attempt.number)
            if (
                record is None
                and attempt.number == view.attempt_count
                and executor.adopt(attempt.id, attempt.log_key or "")
            ):  # still running where the executor can watch it again (a pod): not re-run
                self.run.live[attempt.id] = node
                view.attempt_id = attempt.id
                continue
            identity = None
            if attempt.pid is not None and attempt.host is not None:
                identity = ProcessIdentity(attempt.host, attempt.pid, attempt.pgid or attempt.pid,
                                           attempt.process_started)  # fmt: skip
            if record is None:
                executor.end_orphan(attempt.id, identity)
                record = self.attempts.result(
                    attempt.id, node, attempt.number
                )  # it may have just ended
                self._adopt(attempt, node, record)
            else:  # finished while no engine watched: its log first, then what it left behind
                self._adopt(attempt, node, record)  # (a pod's Job and Secret, stray processes)
                executor.end_orphan(attempt.id, identity)

    def adopt_unlaunched(self) -> None:
        """After an outage: end and settle attempts the database has as running that this
        engine never launched (their start was committed, but the engine did not see it)."""
        for attempt, node in self._orphans():
            if attempt.id in self.run.live:
                continue
            self.run.e.executor.end_orphan(attempt.id, None)  # none expected: never started
            self._adopt(attempt, node, self.attempts.result(attempt.id, node, attempt.number))

    def _adopt(self, attempt: Attempt, node: str, record: ResultRecord | None) -> None:
        executor = self.run.e.executor
        tail = executor.adopt_log(attempt.id, attempt.log_key) if attempt.log_key else []
        ended = AttemptExit(attempt.id, None, None, None, None, None, None, tail)
        self.attempts.settle(self.run.tasks[node], attempt.id, record, ended, lost=record is None)
