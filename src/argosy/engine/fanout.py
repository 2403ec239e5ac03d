"""Fan-out: a ``map()`` node becomes one iteration task per item, and collects their outputs.

A map starts once its items are known (its inputs resolved): its iterations are planned
(deterministically, so they can be planned again after a restart) and created as ``pending``
tasks in one transaction, and the map node itself is ``running``. When every iteration is
done the map either fails (naming the first bad iteration) or succeeds with, per output, a
``collection`` artifact: the JSON list of the iterations' artifacts, in item order.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from argosy.engine.plan import Bound, Item, PlanNode, Value
from argosy.engine.state import RunState, TaskView, artifact_ref, failed
from argosy.errors import ArgosyError, ExecutionError
from argosy.states import TASK_DONE, Reason, TaskState
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import tasks as task_rows


class Fanout:
    """Starts and finishes the run's map nodes."""

    def __init__(self, run: RunState) -> None:
        self.run = run

    def rebuild(self) -> None:
        """Plan again the iterations of maps that started (after loading the run)."""
        run = self.run
        for path in list(run.order):
            node, view = run.plan[path], run.tasks[path]
            if node.is_map and view.state != TaskState.PENDING and view.inputs is not None:
                self._add_iterations(node, self._items_of(node, view.inputs))

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
        manifest = json.loads(self.run.e.store.read_blob(art["sha256"]))
        if art["format"] == "collection":  # elements by content; their artifact ids beside
            ids = art.get("elements") or [None] * len(manifest)
            return [
                Item(element if element is None or i is None else {**element, "id": i})
                for element, i in zip(manifest, ids, strict=True)
            ]
        if not isinstance(manifest, list):
            raise ExecutionError(f"map() items must be a list, got {type(manifest).__name__}")
        return [Value(v) for v in manifest]

    def _add_iterations(self, node: PlanNode, items: list[Bound]) -> list[PlanNode]:
        run = self.run
        made = run.planner.iterations(node, items)
        at = run.order.index(node.path) + 1
        for n in made:
            run.plan[n.path] = n
        run.order[at:at] = [n.path for n in made if n.path not in run.order]
        return made

    def start(self, s: Session, node: PlanNode, view: TaskView) -> None:
        """Create the map's iteration tasks (durably, in one transaction) and mark it running."""
        run = self.run
        inputs = dict(view.inputs or {})
        try:
            items = self._items_of(node, inputs)
        except ArgosyError as exc:
            run.set_task(s, view, TaskState.FAILED, finished_at=q.now(),
                         reason=f"{Reason.INPUT_ERROR}: {exc}")  # fmt: skip
            return
        made = self._add_iterations(node, items)
        created = q.now()
        rows = task_rows.add_iterations(
            s, tenant=run.e.tenant, run_id=run.run_id, user=run.e.user, at=created,
            iterations=[(n.path, n.step or "", n.index, n.item) for n in made],
        )  # fmt: skip
        for t in rows:
            run.tasks[t.node_path] = TaskView(
                id=t.id, node_path=t.node_path, step_name=t.step_name, state=t.state,
                attempt_count=0, failures=0,
            )  # fmt: skip
        run.set_task(
            s, view, TaskState.RUNNING, inputs=inputs, queued_at=created, started_at=created
        )

    def maybe_finish(self, s: Session, node: PlanNode, view: TaskView) -> bool:
        """Finish the map if all its iterations are done; returns whether it did."""
        run = self.run
        children = [p for p in run.order if run.plan[p].parent == node.path]
        if any(run.tasks[p].state not in TASK_DONE for p in children):
            return False
        bad = next((p for p in children if failed(run.tasks[p])), None)
        if bad is not None:
            state = TaskState.CANCELLED if run.cancelling else TaskState.FAILED
            why = run.tasks[bad].reason or run.tasks[bad].state
            run.set_task(s, view, state, finished_at=q.now(),
                         reason=f"iteration {bad} {run.tasks[bad].state}: {why}")  # fmt: skip
            return True
        count = len({run.plan[p].index for p in children})
        names = (
            list(run.spec.steps[node.step].outputs)
            if node.step
            else list(run.spec.pipelines[node.pipeline or ""].root.outputs)
        )
        created = q.now()
        for name in names:
            elements = [
                run.produced(run.planner.outputs_of_iteration(node, i, name)) for i in range(count)
            ]
            # content-addressed by the elements' content and order (not by which run made
            # them), so an unchanged fan-out caches what comes after it
            content = [None if e is None else {k: v for k, v in e.items() if k != "id"}
                       for e in elements]  # fmt: skip
            info = run.e.store.put_bytes(json.dumps(content).encode())
            ids = [None if e is None else e.get("id") for e in elements]
            art = task_rows.add_artifact(
                s, tenant=run.e.tenant, run_id=run.run_id, task_id=view.id, attempt_id=None,
                node_path=node.path, output_name=name, type="list", format="collection",
                serializer=None, sha256=info.sha256, size=info.size, value={"elements": ids},
                created_at=created, created_by=run.e.user,
            )  # fmt: skip
            view.outputs[name] = artifact_ref(art)
        run.set_task(s, view, TaskState.SUCCEEDED, finished_at=created, reason=None)
        return True
