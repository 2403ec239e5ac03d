"""The engine: drives a run's tasks through their states, durably, with one executor.

Every transition is written to the metadata DB before the engine acts on it, so any engine
process can die at any moment and a later one (``argosy runs resume``) continues:

- a task whose attempt finished meanwhile is adopted from the attempt's result record (the
  launcher writes it to the artifact store, not the DB);
- an attempt still running without its engine is killed — found by its recorded host,
  process group and start time, or by the attempt id in its processes' environment — and
  the task gets a new attempt with cause ``engine_lost`` that does not use up a retry;
- succeeded tasks are never re-run, a task never has two live attempts (the old one is dead
  before a new one starts), and outputs commit only for the task's current attempt number.

Scheduling: a pending task is queued as soon as all its upstream tasks succeeded (or skipped
when one did not); queued tasks start in pipeline order while the executor has room.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from argosy.engine import cache, flow
from argosy.engine.plan import Bound, Item, OneOf, Planner, PlanNode, Ref, Value
from argosy.errors import ArgosyError, ExecutionError, NoRoomError, RunBusyError, StoreError
from argosy.executors.base import AttemptExit, AttemptLaunch, Executor, ProcessIdentity
from argosy.ids import new_id
from argosy.runtime import processes
from argosy.runtime.invocation import FAILED, CodeRef, Invocation, ResultRecord, StoreAccess
from argosy.spec.compile import CompiledPipeline
from argosy.spec.models import (
    ContainerImplementation,
    PipelineSpec,
    PythonImplementation,
    StepSpec,
)
from argosy.states import (
    TASK_DONE,
    TASK_OK,
    AttemptState,
    Reason,
    RunStatus,
    TaskState,
)
from argosy.stores.artifacts.blobs import ArtifactStore, attempt_prefix
from argosy.stores.metadata import db
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Artifact, Attempt, Run, Task, TaskInput

CANCEL_CHECK_INTERVAL = 0.5

log = logging.getLogger("argosy.engine")


@dataclass
class TaskView:
    """The engine's in-memory mirror of one task row (it is the only writer while it owns the run)."""

    id: str
    node_path: str
    step_name: str
    state: str
    attempt_count: int
    failures: int
    reason: str | None = None
    not_before: float = 0.0  # monotonic time before which a retry must not start
    attempt_id: str | None = None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


ProgressCallback = Callable[[str, list[TaskView]], None]


class Engine:
    """Submits runs and executes them to completion (or resumes them after a crash)."""

    def __init__(
        self,
        metadata: MetadataStore,
        store: ArtifactStore,
        executor: Executor,
        *,
        user: str,
        cache_dir: str,
        store_url: str,
        store_options: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        on_change: ProgressCallback | None = None,
        poll_interval: float = 0.5,
        cache: bool = True,
        cache_ttl: float | None = None,
        db_retry_seconds: float = 600.0,
        instance: str | None = None,
        owner_alive: Callable[[Mapping[str, Any]], bool] | None = None,
        task_store: Callable[[str, str, str, int, StepSpec, dict[str, Any]], dict[str, Any]]
        | None = None,
        import_local_files: bool = True,
    ) -> None:
        self.metadata = metadata
        self.store = store
        self.executor = executor
        self.tenant = store.tenant
        self.user = user
        self.cache_dir = cache_dir
        self.store_url = store_url
        self.store_options = dict(store_options or {})
        self.secrets: Mapping[str, str] = secrets if secrets is not None else {}
        self.on_change = on_change
        self.poll_interval = poll_interval
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.db_retry_seconds = db_retry_seconds  # how long a run waits out a database outage
        self.host = socket.gethostname()
        self.interrupted = False  # set from a signal handler: cancel the run being executed
        self.abandoned = False  # set by a server instance that stops driving the run (see below)
        self.draining = False  # set by a server instance shutting down: start no new attempts
        self._me: dict[str, Any] = {
            "host": self.host,
            "pid": os.getpid(),
            "started": processes.start_time(os.getpid()),
        }
        if instance is not None:
            self._me["instance"] = instance  # a server instance: alive while it heartbeats
        self._other_alive = owner_alive or engine_alive
        # (run, node, attempt id, number, step, inputs) -> the store a task process opens; default:
        # this engine's own store (local mode: the user's own credentials)
        self.task_store = task_store
        # Path inputs given as strings are imported from this machine's disk: locally the
        # user's own files; never on a server (a run must not read the server's files)
        self.import_local_files = import_local_files

    # -- submission ----------------------------------------------------------------------------
    def submit(
        self,
        compiled: CompiledPipeline,
        parameters: dict[str, Any],
        *,
        fail_fast: bool = False,
        no_cache: bool = False,
        reproduce_of: str | None = None,
    ) -> str:
        """Store the spec's blobs and create the run (``pending``) with its tasks; returns its id.

        ``reproduce_of`` names a run whose imported input files are reused as recorded.
        """
        for digest, data in compiled.blobs.items():
            info = self.store.put_bytes(data)
            if "sha256:" + info.sha256 != digest:
                raise ExecutionError(f"blob {digest} changed while being stored; compile again")
        with self.metadata.session() as s:
            options = {"fail_fast": fail_fast, "no_cache": no_cache, "cwd": os.getcwd(),
                       "reproduce_of": reproduce_of}  # fmt: skip
            static, _ = Planner(compiled.spec, parameters).static()
            nodes = [(n.path, n.step or n.pipeline or "") for n in static]
            run = q.create_run(s, self.tenant, compiled.spec, nodes, parameters, options, self.user)
            return run.id

    def recorded_inputs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Node path -> the resolved inputs its task got in run ``run_id``."""
        with self.metadata.session() as s:
            return {t.node_path: dict(t.inputs or {}) for t in q.tasks_of(s, run_id)}

    # -- ownership -----------------------------------------------------------------------------
    def _owner_alive(self, engine: Mapping[str, Any] | None) -> bool:
        if not engine:
            return False
        if engine == self._me:
            return False
        if engine.get("pid") == os.getpid() and engine.get("host") == self.host:
            return "instance" in engine and engine.get("instance") != self._me.get("instance")
        return self._other_alive(engine)

    def _claim(self, run_id: str) -> None:
        with self.metadata.session() as s:
            run = s.get_one(Run, run_id, with_for_update=True)  # one claimant at a time
            if self._owner_alive(run.engine):
                assert run.engine is not None
                raise RunBusyError(
                    f"run {run_id} is being executed by process {run.engine['pid']} on "
                    f"{run.engine['host']}; wait for it, or cancel it with 'argosy runs cancel {run_id}'"
                )
            run.engine = dict(self._me)
            if run.status == RunStatus.PENDING:
                run.status = RunStatus.RUNNING
                run.started_at = q.now()

    def _release(self, run_id: str) -> None:
        """Clear the run's owner, unless another engine has taken it over meanwhile."""
        with self.metadata.session() as s:
            run = s.get_one(Run, run_id, with_for_update=True)
            if run.engine == self._me:
                run.engine = None

    # -- execution -----------------------------------------------------------------------------
    def execute(self, run_id: str) -> RunStatus:
        """Drive the run until every task is done; safe to call again after a crash."""
        with self.metadata.session() as s:
            run = s.get_one(Run, run_id)
            if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
                return RunStatus(run.status)
            spec = q.get_spec(s, run)
            parameters = dict(run.parameters)
            options = dict(run.options)
        self._claim(run_id)
        try:
            return _RunLoop(self, run_id, spec, parameters, options).run()
        finally:
            # if the database is gone, a later claim replaces this dead owner anyway
            with contextlib.suppress(SQLAlchemyError):
                self._release(run_id)

    def request_cancel(self, run_id: str) -> str:
        """Ask the run's engine to cancel it; if no engine is alive, cancel it here and now.

        Returns ``requested`` (a live engine will stop it), ``cancelled`` or the final status
        of a run that had already finished.
        """
        with self.metadata.session() as s:
            run = s.get_one(Run, run_id)
            if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
                return f"finished:{run.status}"
            run.cancel_requested = True
            alive = self._owner_alive(run.engine)
        if alive:
            return "requested"
        self.execute(run_id)  # recovers (killing orphans), sees the flag, cancels the rest
        return "cancelled"

    def emit(self, run_id: str, tasks: list[TaskView]) -> None:
        """Tell the progress display; a display that fails (a closed pipe) is dropped, never fatal."""
        if self.on_change is not None:
            try:
                self.on_change(run_id, tasks)
            except Exception:
                self.on_change = None


class RunAbandoned(Exception):
    """The engine stopped driving a run without finishing it (a server instance shutting down
    or no longer owning the run): its live attempts were ended, the run stays ``running``, and
    the next owner recovers it (``engine_lost``: a new attempt that uses no retry)."""


def engine_alive(engine: Mapping[str, Any] | None) -> bool:
    """Whether the engine process recorded on a run (``runs.engine``) still lives."""
    if not engine:
        return False
    if engine.get("host") != socket.gethostname():
        return True  # another machine's processes cannot be checked: assume it is alive
    return processes.is_same_process(int(engine["pid"]), engine.get("started"))


class _RunLoop:
    """One engine's drive of one run (state mirrored in memory, written through to the DB)."""

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
        self.spec = spec
        self.parameters = parameters
        self.fail_fast = bool(options.get("fail_fast"))
        self.cache_enabled = engine.cache and not options.get("no_cache")
        self.cwd = options.get("cwd") or os.getcwd()
        self.retry_of: str | None = options.get("retry_of")
        self.reproduced_inputs = (
            engine.recorded_inputs(options["reproduce_of"]) if options.get("reproduce_of") else {}
        )
        # path value -> the blob uploaded for it (a server run's local files)
        self.uploaded: dict[str, dict[str, Any]] = dict(options.get("files") or {})
        self.planner = Planner(spec, parameters)
        static, self.pipeline_outputs = self.planner.static()
        self.plan: dict[str, PlanNode] = {n.path: n for n in static}
        self.order = list(self.plan)
        self.values: dict[tuple[str, str], Any] = {}  # JSON output values read for conditions
        self.tasks: dict[str, TaskView] = {}
        self.live: dict[str, str] = {}  # attempt id -> node path
        self.cancelling = False
        self.cancel_reason: str | None = None  # fail-fast: cancel the rest at the next tick
        self.image_ids: dict[str, str | None] = {}
        self.exits: list[tuple[AttemptExit, str | None]] = []  # ended, not yet settled in the DB
        self.cancel_why: str | None = None  # why it is being cancelled (redone after an outage)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _load(self) -> None:
        with self.e.metadata.session() as s:
            for t in q.tasks_of(s, self.run_id):
                self.tasks[t.node_path] = TaskView(
                    id=t.id, node_path=t.node_path, step_name=t.step_name, state=t.state,
                    attempt_count=t.attempt_count, failures=t.failures, reason=t.reason,
                    inputs=t.inputs,
                )  # fmt: skip
            for a in s.scalars(select(Artifact).where(Artifact.run_id == self.run_id)):
                self.tasks[a.node_path].outputs[a.output_name] = _artifact_ref(a)
        for path in list(self.order):  # maps whose iterations exist: rebuild them (deterministic)
            node = self.plan[path]
            view = self.tasks[path]
            if node.is_map and view.state != TaskState.PENDING and view.inputs is not None:
                self._add_iterations(node, self._items_of(node, view.inputs))

    def _emit(self) -> None:
        self.e.emit(self.run_id, [self.tasks[n] for n in self.order])

    def _set_task(self, s: Any, view: TaskView, state: str, **values: Any) -> None:
        view.state = state
        if "reason" in values:
            view.reason = values["reason"]
        s.execute(update(Task).where(Task.id == view.id).values(state=state, **values))

    # -- the loop ------------------------------------------------------------------------------
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
                    self._reset_mirror()
                    self._load()
                    self._recover()
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
        next_cancel_check = 0.0
        self._emit()
        while True:
            if self.e.abandoned:
                self._abandon()
            now = time.monotonic()
            if self.cancel_reason and not self.cancelling:
                self.cancel_why = self.cancel_reason
                self._cancel_all(self.cancel_reason)
            if now >= next_cancel_check:
                next_cancel_check = now + CANCEL_CHECK_INTERVAL
                if not self.cancelling and self._cancel_requested():
                    self.cancel_why = Reason.CANCELLED
                    self._cancel_all(Reason.CANCELLED)
            self._settle_exits()
            changed = self._advance()
            if changed:
                self._emit()
                continue  # what changed may let more tasks move at once (a map's iterations)
            if not self.live and all(t.state in TASK_DONE for t in self.tasks.values()):
                return self._finish()
            if self.e.draining and not self.live:
                self._abandon()  # nothing running: hand the run over to another instance
            waiting = [t.not_before for t in self.tasks.values() if t.state == TaskState.QUEUED]
            timeout = self.e.poll_interval
            if waiting:
                timeout = max(0.0, min(timeout, min(waiting) - time.monotonic()))
            if not self.live and not waiting:
                raise ExecutionError(  # pragma: no cover - a bug, not a user error
                    f"run {self.run_id} is stuck: no task can make progress"
                )
            self._keep_exits(self.e.executor.poll(timeout))
            self._settle_exits()

    # -- surviving a database outage -------------------------------------------------------------
    def _keep_exits(self, exits: list[AttemptExit]) -> None:
        """Remember ended attempts (with their node) until their outcome is in the DB."""
        self.exits.extend((ended, self.live.get(ended.attempt_id)) for ended in exits)

    def _settle_exits(self) -> None:
        """Settle the kept exits in order; one that fails (the DB went away) stays kept."""
        while self.exits:
            ended, node = self.exits[0]
            if node is not None:
                self.live.setdefault(ended.attempt_id, node)  # popped by a try that failed
            self._complete(ended)
            self.exits.pop(0)
            self._emit()

    def _abandon(self) -> None:
        """End the live attempts without settling them (the next owner does) and stop."""
        for attempt_id in list(self.live):
            self.e.executor.stop(attempt_id, Reason.ENGINE_LOST)
        deadline = time.monotonic() + 30.0
        while self.live and time.monotonic() < deadline:  # reap them, so their logs are stored
            for ended in self.e.executor.poll(0.2):
                self.live.pop(ended.attempt_id, None)
        raise RunAbandoned(self.run_id)

    def _stop_live(self, reason: str) -> None:
        for attempt_id in list(self.live):
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

    def _reset_mirror(self) -> None:
        """Forget the in-memory state that the DB rebuilds (map iterations included)."""
        self.planner = Planner(self.spec, self.parameters)
        static, self.pipeline_outputs = self.planner.static()
        self.plan = {n.path: n for n in static}
        self.order = list(self.plan)
        self.tasks = {}
        self.values = {}

    def _resync(self) -> None:
        """After an outage: rebuild the mirror from the DB, settle the attempts that ended
        meanwhile, and end attempts the DB has as running that were never launched (their
        start was committed but the engine did not see it)."""
        self._reset_mirror()
        self._load()
        with self.e.metadata.session() as s:
            rows = s.execute(
                select(Task.node_path, Task.not_before)
                .where(Task.run_id == self.run_id, Task.state == TaskState.QUEUED)
                .where(Task.not_before.is_not(None))
            ).all()
        now = q.now()
        for path, not_before in rows:  # retry backoffs still to wait out
            at = q.as_utc(not_before)
            wait = (at - now).total_seconds() if at is not None else 0.0
            self.tasks[path].not_before = time.monotonic() + max(0.0, wait)
        self._settle_exits()
        with self.e.metadata.session() as s:
            running = s.execute(
                select(Attempt.id, Attempt.number, Attempt.log_key, Task.node_path)
                .join(Task, Task.id == Attempt.task_id)
                .where(Attempt.run_id == self.run_id, Attempt.state == AttemptState.RUNNING)
            ).all()
        for attempt_id, number, log_key, node in running:
            if attempt_id in self.live:
                continue
            self.e.executor.end_orphan(attempt_id, None)  # none expected: it was never started
            record = self._result(attempt_id, node, number)
            tail = self.e.executor.adopt_log(attempt_id, log_key) if log_key else []
            ended = AttemptExit(attempt_id, None, None, None, None, None, None, tail)
            self._settle(self.tasks[node], attempt_id, record, ended, lost=record is None)
        if self.cancelling:
            self._cancel_all(self.cancel_why or Reason.CANCELLED)
        self._emit()

    def _cancel_requested(self) -> bool:
        if self.e.interrupted:
            return True
        with self.e.metadata.session() as s:
            return bool(s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)))

    def step_of(self, path: str) -> StepSpec:
        step = self.plan[path].step
        assert step is not None
        return self.spec.steps[step]

    def _advance(self) -> bool:
        """Settle pending tasks whose upstream is done; finish maps; start queued tasks that fit."""
        changed = False
        settling = any(
            v.state == TaskState.PENDING or (v.state == TaskState.RUNNING and self.plan[p].is_map)
            for p, v in self.tasks.items()
        )
        # only open a (write) transaction when something may change: on SQLite every
        # transaction takes the write lock, which readers and backups would wait for
        with self.e.metadata.session() if settling else contextlib.nullcontext() as s:
            for path in list(self.order) if settling else []:
                node, view = self.plan[path], self.tasks[path]
                if view.state == TaskState.RUNNING and node.is_map:
                    changed |= self._maybe_finish_map(s, node, view)
                if view.state != TaskState.PENDING:
                    continue
                if self.cancelling and node.exit_group is None:
                    continue
                verdict = self._verdict(node)
                if verdict is None:
                    continue
                changed = True
                if verdict:
                    self._set_task(s, view, TaskState.SKIPPED, finished_at=q.now(), reason=verdict)
                    continue
                try:
                    view.inputs = self._resolve_inputs(node)
                except ArgosyError as exc:
                    self._set_task(s, view, TaskState.FAILED, finished_at=q.now(),
                                   reason=f"{Reason.INPUT_ERROR}: {exc}")  # fmt: skip
                    continue
                if node.is_map:
                    self._start_map(s, node, view)
                    continue
                self._record_inputs(s, view)
                self._consult_cache(s, view)
        now = time.monotonic()
        for path in list(self.order) if not self.e.draining else []:
            view = self.tasks[path]
            if view.state != TaskState.QUEUED or view.not_before > now:
                continue
            node = self.plan[path]
            if self.cancelling and node.exit_group is None:
                continue
            if not self._within_parallelism(node):
                continue
            r = self.step_of(path).resources
            if not self.e.executor.has_room(r.cpu, r.memory, r.gpu):
                continue
            cause = "retry" if view.attempt_count else "first"
            if view.reason == Reason.ENGINE_LOST:
                cause = Reason.ENGINE_LOST.value
            self._start(view, cause=cause)
            changed = True
        return changed

    def _verdict(self, node: PlanNode) -> str | None:
        """None: wait; "": run it; otherwise the reason it is skipped."""
        if any(self.tasks[d].state not in TASK_DONE for d in node.deps()):
            return None
        group = set(node.exit_group or [])
        direct = [r.path for b in node.inputs.values() if isinstance(b, Ref) for r in [b]]
        if node.for_each is not None and isinstance(node.for_each[1], Ref):
            direct.append(node.for_each[1].path)
        for path in dict.fromkeys([*direct, *node.after]):
            if path in group:
                continue
            up = self.tasks[path]
            if up.state in TASK_OK:
                continue
            if _failed(up):
                return f"{Reason.UPSTREAM_FAILED}: {path} {up.state}"
            if path in direct:
                return f"{Reason.UPSTREAM_SKIPPED}: {path} was skipped"
        for b in node.inputs.values():
            if isinstance(b, OneOf) and not any(
                self.tasks[r.path].state in TASK_OK for r in b.refs
            ):
                bad = [r.path for r in b.refs if _failed(self.tasks[r.path])]
                if bad:
                    return f"{Reason.UPSTREAM_FAILED}: {bad[0]} {self.tasks[bad[0]].state}"
                return f"{Reason.UPSTREAM_SKIPPED}: none of {', '.join(r.path for r in b.refs)} ran"
        for cond in node.when:
            for ref in cond.refs():
                up = self.tasks[ref.path]
                if up.state not in TASK_OK:
                    if _failed(up):
                        return f"{Reason.UPSTREAM_FAILED}: {ref.path} {up.state}"
                    return f"{Reason.UPSTREAM_SKIPPED}: {ref.path} was skipped"
            holds, text = flow.evaluate(cond, self._value)
            if not holds:
                return f"{Reason.CONDITION_FALSE}: {text}"
        return ""

    def _value(self, ref: Ref) -> Any:
        """The JSON value of an upstream output (read once)."""
        key = (ref.path, ref.output)
        if key not in self.values:
            art = self.tasks[ref.path].outputs[ref.output]
            self.values[key] = json.loads(self.e.store.read_blob(art["sha256"]))
        return self.values[key]

    def _within_parallelism(self, node: PlanNode) -> bool:
        if node.parent is None:
            return True
        limit = self.plan[node.parent].for_each[2]  # type: ignore[index]
        if limit is None:
            return True
        active = {
            self.plan[p].index
            for p, v in self.tasks.items()
            if self.plan[p].parent == node.parent and v.state == TaskState.RUNNING
        }
        return node.index in active or len(active) < limit

    # -- fan-out ---------------------------------------------------------------------------------
    def _items_of(self, node: PlanNode, inputs: dict[str, Any]) -> list[Bound]:
        assert node.for_each is not None
        got = inputs[node.for_each[0]]
        if "value" in got:
            if not isinstance(got["value"], list):
                raise ExecutionError(
                    f"map() items must be a list, got {type(got['value']).__name__}"
                )
            return [Value(v) for v in got["value"]]
        art = got["artifact"]
        manifest = json.loads(self.e.store.read_blob(art["sha256"]))
        if art["format"] == "collection":
            return [Item(element) for element in manifest]
        if not isinstance(manifest, list):
            raise ExecutionError(f"map() items must be a list, got {type(manifest).__name__}")
        return [Value(v) for v in manifest]

    def _add_iterations(self, node: PlanNode, items: list[Bound]) -> list[PlanNode]:
        made = self.planner.iterations(node, items)
        at = self.order.index(node.path) + 1
        for n in made:
            self.plan[n.path] = n
        self.order[at:at] = [n.path for n in made if n.path not in self.order]
        return made

    def _start_map(self, s: Any, node: PlanNode, view: TaskView) -> None:
        """Create the map's iteration tasks (durably, in one transaction) and mark it running."""
        assert node.for_each is not None
        inputs = dict(view.inputs or {})
        try:
            items = self._items_of(node, inputs)
        except ArgosyError as exc:
            self._set_task(
                s,
                view,
                TaskState.FAILED,
                finished_at=q.now(),
                reason=f"{Reason.INPUT_ERROR}: {exc}",
            )
            return
        made = self._add_iterations(node, items)
        created = q.now()
        for n in made:
            s.add(
                Task(
                    id=new_id(),
                    tenant=self.e.tenant,
                    run_id=self.run_id,
                    node_path=n.path,
                    step_name=n.step or "",
                    state=TaskState.PENDING,
                    attempt_count=0,
                    failures=0,
                    item={"index": n.index, "value": n.item},
                    created_at=created,
                    created_by=self.e.user,
                )
            )
        s.flush()
        for t in s.scalars(
            select(Task).where(
                Task.run_id == self.run_id, Task.node_path.in_([n.path for n in made])
            )
        ):
            self.tasks[t.node_path] = TaskView(
                id=t.id, node_path=t.node_path, step_name=t.step_name, state=t.state,
                attempt_count=0, failures=0,
            )  # fmt: skip
        self._set_task(
            s, view, TaskState.RUNNING, inputs=inputs, queued_at=created, started_at=created
        )

    def _maybe_finish_map(self, s: Any, node: PlanNode, view: TaskView) -> bool:
        children = [p for p in self.order if self.plan[p].parent == node.path]
        if any(self.tasks[p].state not in TASK_DONE for p in children):
            return False
        bad = next((p for p in children if _failed(self.tasks[p])), None)
        if bad is not None:
            state = TaskState.CANCELLED if self.cancelling else TaskState.FAILED
            why = self.tasks[bad].reason or self.tasks[bad].state
            self._set_task(
                s,
                view,
                state,
                finished_at=q.now(),
                reason=f"iteration {bad} {self.tasks[bad].state}: {why}",
            )
            return True
        count = len({self.plan[p].index for p in children})
        names = (
            list(self.spec.steps[node.step].outputs)
            if node.step
            else list(self.spec.pipelines[node.pipeline or ""].root.outputs)
        )
        created = q.now()
        for name in names:
            elements = [
                self._produced(self.planner.outputs_of_iteration(node, i, name))
                for i in range(count)
            ]
            info = self.e.store.put_bytes(json.dumps(elements).encode())
            art = Artifact(
                id=new_id(), tenant=self.e.tenant, run_id=self.run_id, task_id=view.id,
                attempt_id=None, node_path=node.path, output_name=name, type="list",
                format="collection", serializer=None, sha256=info.sha256, size=info.size,
                value=None, created_at=created, created_by=self.e.user,
            )  # fmt: skip
            s.add(art)
            view.outputs[name] = _artifact_ref(art)
        self._set_task(s, view, TaskState.SUCCEEDED, finished_at=created, reason=None)
        return True

    def _produced(self, b: Bound) -> dict[str, Any] | None:
        """The artifact a bound output resolved to (the branch that ran, for one_of)."""
        refs = b.refs if isinstance(b, OneOf) else (b,) if isinstance(b, Ref) else ()
        for r in refs:
            art = self.tasks[r.path].outputs.get(r.output)
            if art is not None:
                return art
        return None

    def _resolve_inputs(self, node: PlanNode) -> dict[str, Any]:
        """Each input as ``{"value": json}`` or ``{"artifact": {...}}`` (files are imported)."""
        defs = (
            self.spec.steps[node.step].inputs if node.step is not None
            else self.spec.pipelines[node.pipeline or ""].parameters
        )  # fmt: skip
        resolved: dict[str, Any] = {}
        for key, inp in defs.items():
            if node.for_each is not None and key == node.for_each[0]:
                b = node.for_each[1]
            elif node.exit_group is not None and key == node.status_input:
                states = {p: (self.tasks[p].state, self.tasks[p].reason) for p in node.exit_group}
                resolved[key] = {"value": flow.group_status(states)}
                continue
            else:
                b = node.inputs.get(key, Value(inp.default))
            if isinstance(b, Ref | OneOf):
                art = self._produced(b)
                if art is None:
                    raise ExecutionError(f"input {key!r}: no upstream output was produced")
                resolved[key] = {"artifact": art}
            elif isinstance(b, Item):
                resolved[key] = {"artifact": b.artifact}
            elif inp.type == "path" and b.value is not None and node.for_each is None:
                resolved[key] = self._import_path(node.path, key, b.value)
            else:
                resolved[key] = {"value": b.value}
        return resolved

    def _import_path(self, node: str, key: str, value: Any) -> dict[str, Any]:
        """A ``Path`` input given as a path string: the file or folder becomes a blob.

        Its sha256 is then part of the cache key and the lineage. ``runs reproduce`` reuses
        the blob the original run imported, not the file as it is now.
        """
        recorded = self.reproduced_inputs.get(node, {}).get(key)
        if recorded is not None and "artifact" in recorded:
            return dict(recorded)
        uploaded = self.uploaded.get(str(value))
        if uploaded is not None:
            return {"artifact": {**uploaded, "type": "path"}, "source": str(value)}
        if not self.e.import_local_files:
            raise ExecutionError(
                f"input {key!r} names the path {str(value)!r}: a server does not read files "
                "from its own disk for a run; pass the data as an output of an upstream step "
                "(or run the pipeline locally, where paths are imported)"
            )
        path = Path(str(value)).expanduser()
        if not path.is_absolute():
            path = Path(self.cwd) / path
        if path.is_file():
            info = self.e.store.put_file(path)
            artifact = {
                "sha256": info.sha256,
                "format": "file",
                "type": "path",
                "filename": path.name,
            }
        elif path.is_dir():
            from argosy.runtime.formats import write_value

            tmp = Path(self.e.cache_dir) / f"import-{new_id()}.tar"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            write_value(path, "path", None, tmp, what=f"input {key!r}")
            info = self.e.store.put_file(tmp, move=True)
            artifact = {"sha256": info.sha256, "format": "dir", "type": "path"}
        else:
            raise ExecutionError(f"input {key!r} names {str(path)!r}, which does not exist")
        return {"artifact": artifact, "source": str(path)}

    def _record_inputs(self, s: Any, view: TaskView) -> None:
        """Lineage edges: which artifact, imported file or value each input of the task got."""
        created = q.now()
        for name, got in (view.inputs or {}).items():
            art = got.get("artifact")
            s.add(
                TaskInput(
                    id=new_id(),
                    tenant=self.e.tenant,
                    run_id=self.run_id,
                    task_id=view.id,
                    name=name,
                    artifact_id=art.get("id") if art else None,
                    sha256=art["sha256"] if art else None,
                    source=got.get("source"),
                    value=None if art else {"json": got.get("value")},
                    created_at=created,
                    created_by=self.e.user,
                )
            )

    def _consult_cache(self, s: Any, view: TaskView) -> None:
        """Reuse an identical earlier task's outputs (``cached``), or queue the task, saying why."""
        step = self.step_of(view.node_path)
        image = None
        if isinstance(step.implementation, ContainerImplementation):
            from argosy.runtime.container import image_id

            name = step.implementation.image
            if name not in self.image_ids:
                self.image_ids[name] = image_id(name)
            image = self.image_ids[name]
        parts = cache.components(step, view.inputs or {}, self.e.tenant, image_id=image)
        key = cache.key_of(parts)
        row = s.get_one(Task, view.id)
        info: dict[str, Any] = {"components": parts}
        if self.retry_of is not None:
            earlier = s.scalar(select(Task).where(
                Task.tenant == self.e.tenant, Task.run_id == self.retry_of,
                Task.node_path == view.node_path))  # fmt: skip
            if earlier is not None and earlier.state in TASK_OK and earlier.cache_key == key:
                why = f"retry of run {self.retry_of}: reuses its succeeded task {view.node_path}"
                self._reuse(s, view, earlier, key, info, reason=why)
                return
        if not (self.cache_enabled and step.cache):
            info["status"] = "off"
            info["reason"] = ("caching is off for this step (cache=False)" if not step.cache
                              else "caching is off for this run (--no-cache or ARGOSY_CACHE=false)")  # fmt: skip
        else:
            ttl = step.cache_ttl if step.cache_ttl is not None else self.e.cache_ttl
            hit = cache.find_hit(s, self.e.store, self.e.tenant, key, ttl, list(step.outputs))
            if hit is not None:
                self._reuse(s, view, hit, key, info)
                return
            info["status"] = "miss"
            info["reason"] = self._miss_reason(s, row, key, parts)
        self._set_task(s, view, TaskState.QUEUED, inputs=view.inputs, queued_at=q.now(),
                       cache_key=key, cache=info)  # fmt: skip

    def _miss_reason(self, s: Any, row: Task, key: str, parts: dict[str, Any]) -> str:
        earlier = cache.nearest_earlier(s, self.e.tenant, row)
        if earlier is None:
            return "no earlier task of this step"
        where = f"task {earlier.node_path} of run {earlier.run_id}"
        if earlier.cache_key == key:
            if earlier.state not in TASK_OK:
                return f"nothing changed since {where}, but it did not succeed ({earlier.state})"
            return f"nothing changed since {where}, but its outputs are expired or gone"
        changes = cache.explain(parts, (earlier.cache or {}).get("components", {}))
        return f"since {where}: " + ("; ".join(changes) or "the key format changed")

    def _reuse(
        self, s: Any, view: TaskView, hit: Task, key: str, info: dict[str, Any],
        *, reason: str | None = None,
    ) -> None:  # fmt: skip
        source = hit.cached_from_task_id or hit.id
        info["status"] = "hit"
        info["reason"] = reason or f"reuses task {hit.node_path} of run {hit.run_id}"
        created = q.now()
        for old in s.scalars(select(Artifact).where(Artifact.task_id == hit.id)):
            art = Artifact(
                id=new_id(), tenant=self.e.tenant, run_id=self.run_id, task_id=view.id,
                attempt_id=None, node_path=view.node_path, output_name=old.output_name,
                type=old.type, format=old.format, serializer=old.serializer, sha256=old.sha256,
                size=old.size, value=old.value, created_at=created, created_by=self.e.user,
            )  # fmt: skip
            s.add(art)
            view.outputs[art.output_name] = _artifact_ref(art)
        self._set_task(s, view, TaskState.CACHED, inputs=view.inputs, queued_at=created,
                       started_at=created, finished_at=created, cache_key=key, cache=info,
                       cached_from_task_id=source, reason=None)  # fmt: skip

    # -- starting ------------------------------------------------------------------------------
    def _start(self, view: TaskView, *, cause: str) -> None:
        step = self.step_of(view.node_path)
        # each declared secret read once (on a server, reading one decrypts it)
        secrets = {k: v for k in step.secrets if (v := self.e.secrets.get(k)) is not None}
        missing = [k for k in step.secrets if k not in secrets]
        if missing:
            with self.e.metadata.session() as s:
                self._set_task(s, view, TaskState.FAILED, finished_at=q.now(), reason=(
                    f"{Reason.INPUT_ERROR}: secret(s) {', '.join(missing)} not set for tenant "
                    f"{self.e.tenant!r}; set them with 'argosy secrets set NAME' and retry the run"))  # fmt: skip
            return
        number = view.attempt_count + 1
        attempt_id = new_id()
        prefix = attempt_prefix(self.run_id, view.node_path, number)
        started = q.now()
        with self.e.metadata.session() as s:
            s.add(
                Attempt(
                    id=attempt_id,
                    tenant=self.e.tenant,
                    run_id=self.run_id,
                    task_id=view.id,
                    number=number,
                    state=AttemptState.RUNNING,
                    cause=cause,
                    resources=step.resources.model_dump(),
                    node_pool=step.resources.pool,
                    log_key=f"{prefix}/log.jsonl",
                    started_at=started,
                    created_at=started,
                    created_by=self.e.user,
                )
            )
            values: dict[str, Any] = {"attempt_count": number}
            if number == 1:
                values["started_at"] = started
            self._set_task(s, view, TaskState.RUNNING, **values)
        view.attempt_count = number
        view.attempt_id = attempt_id
        launch = AttemptLaunch(
            attempt_id=attempt_id,
            run_id=self.run_id,
            node_path=view.node_path,
            number=number,
            invocation=self._invocation(view, attempt_id, number, prefix),
            cpu=step.resources.cpu,
            memory=step.resources.memory,
            gpu=step.resources.gpu,
            pool=step.resources.pool,
            timeout=step.timeout,
            env=dict(step.env),
            secrets=secrets,
            log_key=f"{prefix}/log.jsonl",
        )
        try:
            ident = self.e.executor.start(launch)
        except NoRoomError:  # another run of this process took the room meanwhile: wait
            with self.e.metadata.session() as s:
                s.execute(delete(Attempt).where(Attempt.id == attempt_id))
                values = {"attempt_count": number - 1}
                if number == 1:
                    values["started_at"] = None
                self._set_task(s, view, TaskState.QUEUED, **values)
            view.attempt_count = number - 1
            view.attempt_id = None
            return
        except (OSError, ExecutionError) as exc:
            self._fail_to_start(view, attempt_id, f"could not start the attempt: {exc}")
            return
        self.live[attempt_id] = view.node_path
        with self.e.metadata.session() as s:
            s.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(
                    host=ident.host,
                    pid=ident.pid,
                    pgid=ident.pgid,
                    process_started=ident.started,
                    resources=dict(
                        step.resources.model_dump(), gpu_devices=list(ident.gpu_devices)
                    ),
                )
            )

    def _invocation(self, view: TaskView, attempt_id: str, number: int, prefix: str) -> Invocation:
        step = self.step_of(view.node_path)
        impl = step.implementation
        code = None
        if isinstance(impl, PythonImplementation):
            code = CodeRef(impl.code, list(self.spec.code[impl.code].paths))
        if self.e.task_store is not None:
            grant = self.e.task_store(
                self.run_id, view.node_path, attempt_id, number, step, view.inputs or {}
            )
            store = StoreAccess.from_json(grant)
        else:
            store = StoreAccess(self.e.store_url, dict(self.e.store_options))
        return Invocation(
            tenant=self.e.tenant, run_id=self.run_id, node_path=view.node_path, attempt=number,
            attempt_id=attempt_id, store=store, cache_dir=self.e.cache_dir,
            step=step.model_dump(mode="json"), code=code, inputs=view.inputs or {},
            result_key=f"{prefix}/result.json",
        )  # fmt: skip

    def _fail_to_start(self, view: TaskView, attempt_id: str, message: str) -> None:
        with self.e.metadata.session() as s:
            s.execute(update(Attempt).where(Attempt.id == attempt_id).values(
                state=AttemptState.FAILED, reason=Reason.EXCEPTION, error=message, finished_at=q.now()))  # fmt: skip
            self._after_failure(s, view, Reason.EXCEPTION, message)

    # -- completion ----------------------------------------------------------------------------
    def _complete(self, ended: AttemptExit) -> None:
        node = self.live.pop(ended.attempt_id, None)
        if node is None:
            return
        view = self.tasks[node]
        record = self._result(ended.attempt_id, node, view.attempt_count)
        self._settle(view, ended.attempt_id, record, ended)

    def _result(self, attempt_id: str, node: str, number: int) -> ResultRecord | None:
        """The attempt's result record, if its launcher wrote one (one it cannot read fails
        the attempt, saying why)."""
        doc = self.e.store.get_record(f"{attempt_prefix(self.run_id, node, number)}/result.json")
        if doc is None:
            return None
        try:
            return ResultRecord.from_json(doc)
        except (ExecutionError, KeyError, TypeError, ValueError) as exc:
            why = f"its result record cannot be read: {exc}"
            return ResultRecord(attempt_id, number, FAILED, reason=Reason.EXCEPTION, error=why)

    def _settle(
        self,
        view: TaskView,
        attempt_id: str,
        record: ResultRecord | None,
        ended: AttemptExit | None,
        *,
        lost: bool = False,
    ) -> None:
        """Commit an attempt's outcome (fenced by its number) and move its task on."""
        stop_reason = ended.reason if ended else None
        succeeded = record is not None and record.succeeded and stop_reason != Reason.CANCELLED
        if succeeded:
            reason, error = None, None
        elif stop_reason is not None:
            reason, error = stop_reason, (ended.message if ended is not None and ended.message
                                          else self._stop_message(view, stop_reason))  # fmt: skip
        elif record is not None:
            reason, error = record.reason or Reason.EXCEPTION, record.error
        elif lost:
            reason, error = (
                Reason.ENGINE_LOST,
                "the engine stopped while this attempt ran; it was ended and will be re-run",
            )
        elif ended is not None and ended.signal is not None:
            name = signal.Signals(ended.signal).name
            reason, error = Reason.SIGNAL, f"the process was killed by {name}"
            if ended.signal == signal.SIGKILL:
                error += " (out of memory, or killed from outside)"
        else:
            code = ended.exit_code if ended else None
            reason, error = (
                Reason.EXIT_CODE,
                f"the process exited with code {code} without a result",
            )
        with self.e.metadata.session() as s:
            attempt = s.get_one(Attempt, attempt_id)
            task = s.get_one(Task, view.id)
            if task.attempt_count != attempt.number or attempt.state != AttemptState.RUNNING:
                return  # fenced: a stale attempt never commits
            values: dict[str, Any] = {
                "state": AttemptState.SUCCEEDED if succeeded else (
                    AttemptState.CANCELLED if reason == Reason.CANCELLED else AttemptState.FAILED),
                "reason": reason, "error": error, "finished_at": q.now(),
            }  # fmt: skip
            if ended is not None:
                launcher_peak = record.peak_memory if record is not None else None
                peak = max(ended.peak_memory or 0, launcher_peak or 0) or None
                ended = dataclasses.replace(ended, peak_memory=peak)
                values.update(
                    exit_code=ended.exit_code, signal=ended.signal, wall_time=ended.wall_time,
                    cpu_time=ended.cpu_time, peak_memory=ended.peak_memory, log_tail=ended.log_tail,
                )  # fmt: skip
            s.execute(update(Attempt).where(Attempt.id == attempt_id).values(**values))
            if succeeded:
                assert record is not None
                self._register_outputs(s, view, attempt_id, record)
                self._set_task(s, view, TaskState.SUCCEEDED, finished_at=q.now(), reason=None)
            elif reason == Reason.ENGINE_LOST:
                # a new attempt follows; it does not use up one of the step's retries
                self._set_task(s, view, TaskState.QUEUED, reason=Reason.ENGINE_LOST.value)
                view.not_before = 0.0
            elif reason == Reason.CANCELLED:
                self._set_task(s, view, TaskState.CANCELLED, finished_at=q.now(), reason=error)
            else:
                self._after_failure(s, view, str(reason), error)

    def _stop_message(self, view: TaskView, reason: str) -> str:
        if reason == Reason.TIMEOUT:
            return f"ran past its timeout of {self.step_of(view.node_path).timeout}s"
        if reason == Reason.MEMORY_LIMIT:
            return "used more memory than it requested (see the log)"
        if reason == Reason.CANCELLED:
            return "the run was cancelled"
        return reason

    def _after_failure(self, s: Any, view: TaskView, reason: str, error: str | None) -> None:
        step = self.step_of(view.node_path)
        if view.failures < step.retries and not self.cancelling:
            view.failures += 1
            delay = step.retry_backoff * (2 ** (view.failures - 1))
            view.not_before = time.monotonic() + delay
            self._set_task(s, view, TaskState.QUEUED, failures=view.failures, reason=f"retrying after {reason}",
                           not_before=q.now() + timedelta(seconds=delay))  # fmt: skip
            return
        self._set_task(s, view, TaskState.FAILED, finished_at=q.now(), reason=f"{reason}: {error}")
        if self.fail_fast and not self.cancelling:
            # not here: this runs inside the caller's transaction (the loop cancels next tick)
            self.cancel_reason = f"fail-fast: {view.node_path} failed"

    def _register_outputs(
        self, s: Any, view: TaskView, attempt_id: str, record: ResultRecord
    ) -> None:
        step = self.step_of(view.node_path)
        outputs = record.outputs
        missing = [o for o in step.outputs if o not in outputs]
        if missing:
            raise ExecutionError(f"{view.node_path}: the result record lacks output {missing[0]!r}")
        created = q.now()
        for name in step.outputs:
            out = outputs[name]
            art = Artifact(
                id=new_id(), tenant=self.e.tenant, run_id=self.run_id, task_id=view.id,
                attempt_id=attempt_id, node_path=view.node_path, output_name=name,
                type=out.type, format=out.format, serializer=out.serializer,
                sha256=out.sha256, size=out.size,
                # small JSON values are kept inline for quick reads, unless the tenant's
                # artifacts are encrypted at rest (the database is not)
                value={"json": json.loads(out.json_text)}
                if out.json_text is not None and not self.e.store.encrypted else None,
                created_at=created, created_by=self.e.user,
            )  # fmt: skip
            if out.filename:
                art.value = dict(art.value or {}, filename=out.filename)
            s.add(art)
            view.outputs[name] = _artifact_ref(art)

    # -- cancel, recovery, finish ----------------------------------------------------------------
    def _cancel_all(self, why: str) -> None:
        self.cancelling = True
        with self.e.metadata.session() as s:
            for path, view in self.tasks.items():
                if self.plan[path].exit_group is not None:
                    continue  # exit handlers still run, after their group is done
                if view.state in (TaskState.PENDING, TaskState.QUEUED):
                    self._set_task(s, view, TaskState.CANCELLED, finished_at=q.now(), reason=why)
        for attempt_id in list(self.live):
            self.e.executor.stop(attempt_id, Reason.CANCELLED)
        self._emit()

    def _recover(self) -> None:
        """Reconcile attempts left ``running`` by a dead engine (see the module docstring)."""
        with self.e.metadata.session() as s:
            stale = s.execute(
                select(Attempt, Task.node_path)
                .join(Task, Task.id == Attempt.task_id)
                .where(Attempt.run_id == self.run_id, Attempt.state == AttemptState.RUNNING)
            ).all()
        for attempt, node in stale:
            view = self.tasks[node]
            record = self._result(attempt.id, node, attempt.number)
            if (
                record is None
                and attempt.number == view.attempt_count
                and self.e.executor.adopt(attempt.id, attempt.log_key or "")
            ):  # still running where the executor can watch it again (a pod): not re-run
                self.live[attempt.id] = node
                view.attempt_id = attempt.id
                continue
            if record is None:
                identity = None
                if attempt.pid is not None and attempt.host is not None:
                    identity = ProcessIdentity(attempt.host, attempt.pid, attempt.pgid or attempt.pid,
                                               attempt.process_started)  # fmt: skip
                self.e.executor.end_orphan(attempt.id, identity)
                record = self._result(attempt.id, node, attempt.number)  # it may have just ended
            tail = self.e.executor.adopt_log(attempt.id, attempt.log_key) if attempt.log_key else []
            ended = AttemptExit(attempt.id, None, None, None, None, None, None, tail)
            self._settle(view, attempt.id, record, ended, lost=record is None)

    def _finish(self) -> RunStatus:
        states = {t.state for t in self.tasks.values()}
        if self.cancelling and not (self.fail_fast and TaskState.FAILED in states):
            status = RunStatus.CANCELLED
        elif TaskState.FAILED in states or TaskState.CANCELLED in states:
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        failed = [t for t in self.tasks.values() if t.state == TaskState.FAILED]
        error = "; ".join(f"{t.node_path}: {t.reason}" for t in failed) or None
        outputs = {}
        for name, bound in self.pipeline_outputs.items():
            art = self._produced(bound)
            if art is not None:
                outputs[name] = art["id"]
        with self.e.metadata.session() as s:
            s.execute(update(Run).where(Run.id == self.run_id).values(
                status=status, finished_at=q.now(), error=error, outputs=outputs))  # fmt: skip
        self._emit()
        return status


def _failed(view: TaskView) -> bool:
    """Did the task fail (or was skipped or cancelled because something failed)?"""
    if view.state in (TaskState.FAILED, TaskState.CANCELLED):
        return True
    reason = view.reason or ""
    return view.state == TaskState.SKIPPED and reason.startswith(
        (Reason.UPSTREAM_FAILED, "fail-fast")
    )


def _artifact_ref(a: Artifact) -> dict[str, Any]:
    ref = {"id": a.id, "sha256": a.sha256, "format": a.format, "type": a.type, "tenant": a.tenant}
    if a.value and a.value.get("filename"):
        ref["filename"] = a.value["filename"]
    return ref
