"""Attempts: start one for a queued task, then settle its outcome and move the task on.

Starting writes the attempt (``running``) and the task's new attempt number before the
process exists, so a crash in between leaves an attempt a later engine can find and end.
Settling reads the launcher's result record, writes the attempt's outcome — only if it is
still the task's current attempt (the number fences outputs) — and then either registers
the outputs (``succeeded``), queues a new attempt (a retry, or ``engine_lost`` without using
one up) or fails or cancels the task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from argosy.auth.uploads import refused_outputs
from argosy.engine.state import RunState, TaskView, artifact_ref
from argosy.errors import ExecutionError, NoRoomError
from argosy.executors.base import AttemptExit, AttemptLaunch, ProcessIdentity
from argosy.runtime.invocation import FAILED, CodeRef, Invocation, ResultRecord, StoreAccess
from argosy.spec.models import PythonImplementation
from argosy.states import AttemptState, Reason, TaskState
from argosy.stores.artifacts.blobs import attempt_prefix
from argosy.stores.metadata import attempts as attempt_rows
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import tasks as task_rows


@dataclasses.dataclass(frozen=True)
class Prepared:
    """An attempt written (not yet committed, or committed) whose process is not started."""

    view: TaskView
    launch: AttemptLaunch


class Attempts:
    """Starts and settles the run's attempts."""

    def __init__(self, run: RunState) -> None:
        self.run = run

    # -- starting ------------------------------------------------------------------------------
    def start(self, view: TaskView, *, cause: str) -> None:
        """Start an attempt of a queued task: its rows in a transaction of their own, then the
        process."""
        run, e = self.run, self.run.e
        step = run.step_of(view.node_path)
        # each declared secret read once (on a server, reading one decrypts it)
        secrets = {k: v for k in step.secrets if (v := e.secrets.get(k)) is not None}
        missing = [k for k in step.secrets if k not in secrets]
        if missing:
            with e.metadata.session() as s:
                run.set_task(s, view, TaskState.FAILED, finished_at=q.now(), reason=(
                    f"{Reason.INPUT_ERROR}: secret(s) {', '.join(missing)} not set for tenant "
                    f"{e.tenant!r}; set them with 'argosy secrets set NAME' and retry the run"))  # fmt: skip
            return
        with e.metadata.session() as s:
            prepared = self.prepare(s, view, cause=cause, secrets=secrets)
        self.launch([prepared])

    def prepare(
        self, s: Session, view: TaskView, *, cause: str, secrets: dict[str, str] | None = None
    ) -> Prepared:
        """Write the new attempt (``running``) and the task's attempt number in ``s``: the
        caller commits it before :meth:`launch` starts the process."""
        run, e = self.run, self.run.e
        step = run.step_of(view.node_path)
        number = view.attempt_count + 1
        prefix = attempt_prefix(run.run_id, view.node_path, number)
        started = q.now()
        attempt_id = attempt_rows.create_attempt(
            s, tenant=e.tenant, run_id=run.run_id, task_id=view.id, number=number,
            cause=cause, resources=step.resources.model_dump(),
            node_pool=step.resources.pool, log_key=f"{prefix}/log.jsonl", user=e.user,
            at=started,
        )  # fmt: skip
        values: dict[str, Any] = {"attempt_count": number}
        if number == 1:
            values["started_at"] = started
        run.set_task(s, view, TaskState.RUNNING, **values)
        view.attempt_count = number
        view.attempt_id = attempt_id
        launch = AttemptLaunch(
            attempt_id=attempt_id,
            run_id=run.run_id,
            node_path=view.node_path,
            number=number,
            invocation=self._invocation(view, attempt_id, number, prefix),
            cpu=step.resources.cpu,
            memory=step.resources.memory,
            gpu=step.resources.gpu,
            pool=step.resources.pool,
            timeout=step.timeout,
            env=dict(step.env),
            secrets=secrets or {},
            log_key=f"{prefix}/log.jsonl",
            pipeline=run.spec.name,
        )
        return Prepared(view, launch)

    def launch(self, batch: Sequence[Prepared]) -> None:
        """Start the processes of attempts :meth:`prepare` wrote (and its caller committed),
        then record where they run, in one transaction."""
        run, e = self.run, self.run.e
        started: list[tuple[Prepared, ProcessIdentity]] = []
        for prepared in batch:
            ident = self._spawn(prepared)
            if ident is not None:
                run.live[prepared.launch.attempt_id] = prepared.view.node_path
                started.append((prepared, ident))
        if not started:
            return
        with e.metadata.session() as s:
            for prepared, ident in started:
                resources = run.step_of(prepared.view.node_path).resources.model_dump()
                attempt_rows.record_process(
                    s, prepared.launch.attempt_id, host=ident.host, pid=ident.pid,
                    pgid=ident.pgid, started=ident.started,
                    resources=dict(resources, gpu_devices=list(ident.gpu_devices)),
                )  # fmt: skip

    def _spawn(self, prepared: Prepared) -> ProcessIdentity | None:
        """The attempt's process started; None if it could not be (the attempt is withdrawn,
        its task queued again, when the room went to another run; else failed)."""
        run, e = self.run, self.run.e
        view, launch = prepared.view, prepared.launch
        attempt_id, number = launch.attempt_id, launch.number
        try:
            return e.executor.start(launch)
        except NoRoomError:  # another run of this process took the room meanwhile: wait
            with e.metadata.session() as s:
                attempt_rows.withdraw_attempt(s, attempt_id)
                values: dict[str, Any] = {"attempt_count": number - 1}
                if number == 1:
                    values["started_at"] = None
                run.set_task(s, view, TaskState.QUEUED, **values)
            view.attempt_count = number - 1
            view.attempt_id = None
        except (OSError, ExecutionError) as exc:
            self._fail_to_start(view, attempt_id, f"could not start the attempt: {exc}")
        return None

    def _invocation(self, view: TaskView, attempt_id: str, number: int, prefix: str) -> Invocation:
        run, e = self.run, self.run.e
        step = run.step_of(view.node_path)
        impl = step.implementation
        code = None
        if isinstance(impl, PythonImplementation):
            code = CodeRef(impl.code, list(run.spec.code[impl.code].paths))
        if e.task_store is not None:
            grant = e.task_store(
                run.run_id, view.node_path, attempt_id, number, step, view.inputs or {}
            )
            store = StoreAccess.from_json(grant)
        else:
            store = StoreAccess(e.store_url, dict(e.store_options))
        return Invocation(
            tenant=e.tenant, run_id=run.run_id, node_path=view.node_path, attempt=number,
            attempt_id=attempt_id, store=store, cache_dir=e.cache_dir,
            step=step.model_dump(mode="json"), code=code, inputs=view.inputs or {},
            result_key=f"{prefix}/result.json",
        )  # fmt: skip

    def _fail_to_start(self, view: TaskView, attempt_id: str, message: str) -> None:
        with self.run.e.metadata.session() as s:
            attempt_rows.finish_attempt(s, attempt_id, state=AttemptState.FAILED,
                reason=Reason.EXCEPTION, error=message, finished_at=q.now())  # fmt: skip
            self._after_failure(s, view, Reason.EXCEPTION, message)

    # -- settling ------------------------------------------------------------------------------
    def complete(self, ended: AttemptExit, s: Session | None = None) -> None:
        """Settle an attempt the executor reported ended (one not live here is ignored), in
        ``s`` if given (the caller commits), else in a transaction of its own."""
        node = self.run.live.pop(ended.attempt_id, None)
        if node is None:
            return
        view = self.run.tasks[node]
        record = self.result(ended.attempt_id, node, view.attempt_count)
        if record is None:  # the store refused it (a full disk): the executor may carry it
            record = ended.record
        self.settle(view, ended.attempt_id, record, ended, s=s)

    def result(self, attempt_id: str, node: str, number: int) -> ResultRecord | None:
        """The attempt's result record, if its launcher wrote one (one it cannot read fails
        the attempt, saying why)."""
        key = f"{attempt_prefix(self.run.run_id, node, number)}/result.json"
        doc = self.run.e.store.get_record(key)
        if doc is None:
            return None
        try:
            return ResultRecord.from_json(doc)
        except (ExecutionError, KeyError, TypeError, ValueError) as exc:
            why = f"its result record cannot be read: {exc}"
            return ResultRecord(attempt_id, number, FAILED, reason=Reason.EXCEPTION, error=why)

    def settle(
        self,
        view: TaskView,
        attempt_id: str,
        record: ResultRecord | None,
        ended: AttemptExit | None,
        *,
        lost: bool = False,
        s: Session | None = None,
    ) -> None:
        """Commit an attempt's outcome (fenced by its number) and move its task on (in ``s``
        if given, which the caller commits)."""
        run = self.run
        stop_reason = ended.reason if ended else None
        succeeded = record is not None and record.succeeded and stop_reason != Reason.CANCELLED
        refused = None
        if succeeded and run.e.task_store is not None:  # a server task: only outputs it holds
            assert record is not None
            refused = refused_outputs(run.e.metadata, attempt_id, view.inputs or {},
                                      record.outputs, run.e.store.read_blob)  # fmt: skip
            succeeded = refused is None
        reason, error = self._outcome(view, record, ended, lost=lost, succeeded=succeeded)
        if refused is not None:
            reason, error = Reason.OUTPUT_ERROR, refused
        finished = (ended.ended_at if ended is not None else None) or q.now()
        values: dict[str, Any] = {
            "state": AttemptState.SUCCEEDED if succeeded else (
                AttemptState.CANCELLED if reason == Reason.CANCELLED else AttemptState.FAILED),
            "reason": reason, "error": error, "finished_at": finished,
        }  # fmt: skip
        if ended is not None:
            launcher_peak = record.peak_memory if record is not None else None
            peak = max(ended.peak_memory or 0, launcher_peak or 0) or None
            ended = dataclasses.replace(ended, peak_memory=peak)
            if ended.cpu_time is None and record is not None:  # a pod: the launcher's count
                ended = dataclasses.replace(ended, cpu_time=record.cpu_time)
            values.update(
                exit_code=ended.exit_code, signal=ended.signal, wall_time=ended.wall_time,
                cpu_time=ended.cpu_time, peak_memory=ended.peak_memory, log_tail=ended.log_tail,
            )  # fmt: skip
        with run.e.metadata.session() if s is None else contextlib.nullcontext(s) as tx:
            if not attempt_rows.finish_if_current(tx, attempt_id, view.id, **values):
                return  # fenced: a stale attempt never commits
            if succeeded:
                assert record is not None
                self.register_outputs(tx, view, attempt_id, record)
                run.set_task(tx, view, TaskState.SUCCEEDED, finished_at=finished, reason=None)
            elif reason == Reason.ENGINE_LOST:
                # a new attempt follows; it does not use up one of the step's retries
                run.set_task(tx, view, TaskState.QUEUED, reason=Reason.ENGINE_LOST.value)
                view.not_before = 0.0
            elif reason == Reason.CANCELLED:
                run.set_task(tx, view, TaskState.CANCELLED, finished_at=q.now(), reason=error)
            else:
                self._after_failure(tx, view, str(reason), error)

    def _outcome(
        self,
        view: TaskView,
        record: ResultRecord | None,
        ended: AttemptExit | None,
        *,
        lost: bool,
        succeeded: bool,
    ) -> tuple[str | None, str | None]:
        """The attempt's (reason, error): none if it succeeded, else the first that applies —
        the executor stopped it (and may say how), the launcher said why, its engine died, how
        the process ended."""
        stop_reason = ended.reason if ended else None
        if succeeded:
            return None, None
        if stop_reason is not None:
            assert ended is not None
            return stop_reason, ended.message or self._stop_message(view, stop_reason)
        if record is not None:
            return record.reason or Reason.EXCEPTION, record.error
        if lost:
            return (
                Reason.ENGINE_LOST,
                "the engine stopped while this attempt ran; it was ended and will be re-run",
            )
        if ended is not None and ended.signal is not None:
            error = f"the process was killed by {signal.Signals(ended.signal).name}"
            if ended.signal == signal.SIGKILL:
                error += " (out of memory, or killed from outside)"
            return Reason.SIGNAL, error
        code = ended.exit_code if ended else None
        return Reason.EXIT_CODE, f"the process exited with code {code} without a result"

    def _stop_message(self, view: TaskView, reason: str) -> str:
        if reason == Reason.TIMEOUT:
            return f"ran past its timeout of {self.run.step_of(view.node_path).timeout}s"
        if reason == Reason.MEMORY_LIMIT:
            return "used more memory than it requested (see the log)"
        if reason == Reason.CANCELLED:
            return "the run was cancelled"
        return reason

    def _after_failure(self, s: Session, view: TaskView, reason: str, error: str | None) -> None:
        run = self.run
        step = run.step_of(view.node_path)
        if view.failures < step.retries and not run.cancelling:
            view.failures += 1
            delay = step.retry_backoff * (2 ** (view.failures - 1))
            view.not_before = time.monotonic() + delay
            run.set_task(s, view, TaskState.QUEUED, failures=view.failures, reason=f"retrying after {reason}",
                         not_before=q.now() + timedelta(seconds=delay))  # fmt: skip
            return
        run.set_task(s, view, TaskState.FAILED, finished_at=q.now(), reason=f"{reason}: {error}")
        if run.fail_fast and not run.cancelling:
            # not here: this runs inside the caller's transaction (the loop cancels next tick)
            run.cancel_reason = f"fail-fast: {view.node_path} failed"

    def register_outputs(
        self, s: Session, view: TaskView, attempt_id: str, record: ResultRecord
    ) -> None:
        """Accept a succeeded attempt's outputs: one artifact row per declared output."""
        run, e = self.run, self.run.e
        step = run.step_of(view.node_path)
        outputs = record.outputs
        missing = [o for o in step.outputs if o not in outputs]
        if missing:
            raise ExecutionError(f"{view.node_path}: the result record lacks output {missing[0]!r}")
        created = q.now()
        for name in step.outputs:
            out = outputs[name]
            value: dict[str, Any] | None = None
            # small JSON values are kept inline for quick reads, unless the tenant's
            # artifacts are encrypted at rest (the database is not)
            if out.json_text is not None and not e.store.encrypted:
                value = {"json": json.loads(out.json_text)}
            if out.filename:
                value = dict(value or {}, filename=out.filename)
            art = task_rows.add_artifact(
                s, tenant=e.tenant, run_id=run.run_id, task_id=view.id, attempt_id=attempt_id,
                node_path=view.node_path, output_name=name, type=out.type, format=out.format,
                serializer=out.serializer, sha256=out.sha256, size=out.size, value=value,
                created_at=created, created_by=e.user,
            )  # fmt: skip
            view.outputs[name] = artifact_ref(art)
