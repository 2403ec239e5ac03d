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

This module holds the :class:`Engine` (submit, claim, execute); one run is driven by its
collaborators: :mod:`.loop` (the run loop: advance, cancel, finish, database outages),
:mod:`.readiness` (verdicts), :mod:`.inputs` (input resolution, local file import),
:mod:`.reuse` (cache and retry reuse), :mod:`.fanout` (map iterations), :mod:`.attempts`
(start, settle, register outputs) and :mod:`.recovery` (orphaned attempts), sharing the
run's in-memory mirror (:mod:`.state`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from argosy.engine.loop import RunLoop
from argosy.engine.plan import Planner
from argosy.engine.state import ProgressCallback, RunAbandoned, TaskView
from argosy.errors import ExecutionError, RunBusyError
from argosy.executors.base import Executor
from argosy.runtime import processes
from argosy.spec.compiled import CompiledPipeline
from argosy.spec.models import StepSpec
from argosy.states import RunStatus
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import tasks as task_rows
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Run

__all__ = ["Engine", "ProgressCallback", "RunAbandoned", "TaskView", "engine_alive"]

_RunLoop = RunLoop  # the name tests drive one run's loop by (tests/test_postgres.py)


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
        """Become the run's owner unless a live engine owns it.

        Whether the recorded owner lives may take a database read of its own (a server
        instance's heartbeat), so it is decided outside the locked transaction — on SQLite a
        second session would wait for the first's write lock until it timed out — and the
        owner is checked again, unchanged, under the lock before it is replaced.
        """
        for _ in range(3):
            with self.metadata.session() as s:
                seen = s.get_one(Run, run_id).engine
            alive = self._owner_alive(seen)
            with self.metadata.session() as s:
                run = task_rows.lock_run(s, run_id)  # one claimant at a time
                if run.engine != seen:
                    continue  # the owner changed meanwhile: look again
                if alive:
                    assert run.engine is not None
                    raise RunBusyError(
                        f"run {run_id} is being executed by process {run.engine['pid']} on "
                        f"{run.engine['host']}; wait for it, or cancel it with "
                        f"'argosy runs cancel {run_id}'"
                    )
                run.engine = dict(self._me)
                if run.status == RunStatus.PENDING:
                    run.status = RunStatus.RUNNING
                    run.started_at = q.now()
                return
        raise RunBusyError(
            f"run {run_id} changed owner three times while this engine tried to claim it; "
            "another engine is taking it over: wait, then check 'argosy runs show'"
        )

    def _release(self, run_id: str) -> None:
        """Clear the run's owner, unless another engine has taken it over meanwhile."""
        with self.metadata.session() as s:
            run = task_rows.lock_run(s, run_id)
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
            return RunLoop(self, run_id, spec, parameters, options).run()
        finally:
            # if the database is gone, a later claim replaces this dead owner anyway
            with contextlib.suppress(SQLAlchemyError):
                self._release(run_id)

    def emit(self, run_id: str, tasks: list[TaskView]) -> None:
        """Tell the progress display; a display that fails (a closed pipe) is dropped, never fatal."""
        if self.on_change is not None:
            try:
                self.on_change(run_id, tasks)
            except Exception:
                self.on_change = None


def engine_alive(engine: Mapping[str, Any] | None) -> bool:
    """Whether the engine process recorded on a run (``runs.engine``) still lives."""
    if not engine:
        return False
    if engine.get("host") != socket.gethostname():
        return True  # another machine's processes cannot be checked: assume it is alive
    return processes.is_same_process(int(engine["pid"]), engine.get("started"))
