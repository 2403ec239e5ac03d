"""The in-memory mirror of one run, shared by the collaborators that drive it.

While an engine owns a run it is the only writer of the run's task states, so it keeps them
in memory (:class:`TaskView`) and writes every transition through to the database in the
same step (:meth:`RunState.set_task`). After a database outage the mirror is rebuilt from
the database (:meth:`RunState.reset`, then the loop loads it again).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from argosy.engine.plan import Bound, OneOf, Planner, PlanNode, Ref
from argosy.spec.models import PipelineSpec, StepSpec
from argosy.states import Reason, TaskState
from argosy.stores.metadata import tasks as task_rows
from argosy.stores.metadata.tables import Artifact

if TYPE_CHECKING:
    from argosy.engine.engine import Engine


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


class RunAbandoned(Exception):
    """The engine stopped driving a run without finishing it (a server instance shutting down
    or no longer owning the run): its live attempts were ended, the run stays ``running``, and
    the next owner recovers it (``engine_lost``: a new attempt that uses no retry)."""


def artifact_ref(a: Artifact) -> dict[str, Any]:
    """How a task's inputs and outputs name an artifact (the invocation's ``artifact``)."""
    ref: dict[str, Any] = {
        "id": a.id, "sha256": a.sha256, "format": a.format, "type": a.type, "tenant": a.tenant,
    }  # fmt: skip
    if a.value and a.value.get("filename"):
        ref["filename"] = a.value["filename"]
    if a.value and a.value.get("elements") is not None:  # a collection's element artifact ids
        ref["elements"] = a.value["elements"]
    return ref


def failed(view: TaskView) -> bool:
    """Did the task fail (or was skipped or cancelled because something failed)?"""
    if view.state in (TaskState.FAILED, TaskState.CANCELLED):
        return True
    reason = view.reason or ""
    return view.state == TaskState.SKIPPED and reason.startswith(
        (Reason.UPSTREAM_FAILED, "fail-fast")
    )


class RunState:
    """One run as its engine sees it: the plan, the tasks, the live attempts, and the run's
    options (fail-fast, caching, where relative paths resolve, what it reproduces)."""

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
        self.live: dict[str, str] = {}  # attempt id -> node path
        self.cancelling = False
        self.cancel_reason: str | None = None  # fail-fast: cancel the rest at the next tick
        self.cancel_why: str | None = None  # why it is being cancelled (redone after an outage)
        self.reset()

    def reset(self) -> None:
        """Forget what the database rebuilds: tasks, plan (map iterations included), values."""
        self.planner = Planner(self.spec, self.parameters)
        static, self.pipeline_outputs = self.planner.static()
        self.plan: dict[str, PlanNode] = {n.path: n for n in static}
        self.order = list(self.plan)
        self.tasks: dict[str, TaskView] = {}
        self.values: dict[tuple[str, str], Any] = {}  # JSON output values read for conditions

    def step_of(self, path: str) -> StepSpec:
        step = self.plan[path].step
        assert step is not None
        return self.spec.steps[step]

    def set_task(self, s: Session, view: TaskView, state: str, **values: Any) -> None:
        """Move a task on, in memory and (in the caller's transaction) in the database."""
        view.state = state
        if "reason" in values:
            view.reason = values["reason"]
        task_rows.set_task(s, view.id, state, **values)

    def produced(self, b: Bound) -> dict[str, Any] | None:
        """The artifact a bound output resolved to (the branch that ran, for one_of)."""
        refs = b.refs if isinstance(b, OneOf) else (b,) if isinstance(b, Ref) else ()
        for r in refs:
            art = self.tasks[r.path].outputs.get(r.output)
            if art is not None:
                return art
        return None

    def emit(self) -> None:
        self.e.emit(self.run_id, [self.tasks[n] for n in self.order])
