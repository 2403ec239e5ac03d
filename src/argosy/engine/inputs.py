"""Input resolution: what each input of a task gets, once its upstream is done.

Each input becomes ``{"value": json}`` or ``{"artifact": {...}}``: an upstream output (the
branch that ran, for ``one_of``), a map's item, an exit handler's view of its group, or a
``Path`` parameter naming a local file or folder — imported as a blob, so its sha256 is part
of the cache key and the lineage. What a task got is recorded as its lineage edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from argosy.engine import flow
from argosy.engine.plan import Item, OneOf, PlanNode, Ref, Value
from argosy.engine.state import RunState, TaskView
from argosy.errors import ExecutionError
from argosy.ids import new_id
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import tasks as task_rows


class Inputs:
    """Resolves and records the inputs of the run's tasks."""

    def __init__(self, run: RunState) -> None:
        self.run = run

    def resolve(self, node: PlanNode) -> dict[str, Any]:
        """Each input as ``{"value": json}`` or ``{"artifact": {...}}`` (files are imported)."""
        run = self.run
        defs = (
            run.spec.steps[node.step].inputs if node.step is not None
            else run.spec.pipelines[node.pipeline or ""].parameters
        )  # fmt: skip
        resolved: dict[str, Any] = {}
        for key, inp in defs.items():
            if node.for_each is not None and key == node.for_each[0]:
                b = node.for_each[1]
            elif node.exit_group is not None and key == node.status_input:
                states = {p: (run.tasks[p].state, run.tasks[p].reason)
                          for p in self._tasks_of(node.exit_group)}  # fmt: skip
                resolved[key] = {"value": flow.group_status(states)}
                continue
            else:
                b = node.inputs.get(key, Value(inp.default))
            if isinstance(b, Ref | OneOf):
                art = run.produced(b)
                if art is None:
                    raise ExecutionError(f"input {key!r}: no upstream output was produced")
                resolved[key] = {"artifact": art}
                if isinstance(b, Ref):  # who made it: named if the value is not what was asked
                    resolved[key]["from"] = f"{b.path}.{b.output}"
            elif isinstance(b, Item):
                resolved[key] = {"artifact": b.artifact}
            elif inp.type == "path" and b.value is not None and node.for_each is None:
                resolved[key] = self._import_path(node.path, key, b.value)
            else:
                resolved[key] = {"value": b.value}
        return resolved

    def _tasks_of(self, paths: list[str]) -> list[str]:
        """The tasks an exit handler's group holds: a map that started stands for its
        iterations' tasks, one by one (``fit[0]``, ``fold[1]/check``), in item order."""
        run = self.run
        found: list[str] = []
        for path in paths:
            children = [p for p in run.order if run.plan[p].parent == path]
            if run.plan[path].is_map and children:
                children.sort(key=lambda p: run.plan[p].index or 0)  # stable: plan order within
                found.extend(self._tasks_of(children))
            else:
                found.append(path)
        return found

    def _import_path(self, node: str, key: str, value: Any) -> dict[str, Any]:
        """A ``Path`` input given as a path string: the file or folder becomes a blob.

        Its sha256 is then part of the cache key and the lineage. ``runs reproduce`` reuses
        the blob the original run imported, not the file as it is now; a server run uses
        the blob uploaded for it.
        """
        run, e = self.run, self.run.e
        recorded = run.reproduced_inputs.get(node, {}).get(key)
        if recorded is not None and "artifact" in recorded:
            return dict(recorded)
        uploaded = run.uploaded.get(str(value))
        if uploaded is not None:
            return {"artifact": {**uploaded, "type": "path"}, "source": str(value)}
        if not e.import_local_files:
            raise ExecutionError(
                f"input {key!r} names the path {str(value)!r}: a server does not read files "
                "from its own disk for a run; pass the data as an output of an upstream step "
                "(or run the pipeline locally, where paths are imported)"
            )
        path = Path(str(value)).expanduser()
        if not path.is_absolute():
            path = Path(run.cwd) / path
        if path.is_file():
            info = e.store.put_file(path)
            artifact = {
                "sha256": info.sha256,
                "format": "file",
                "type": "path",
                "filename": path.name,
            }
        elif path.is_dir():
            from argosy.runtime.formats import write_value

            tmp = Path(e.cache_dir) / f"import-{new_id()}.tar"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            write_value(path, "path", None, tmp, what=f"input {key!r}")
            info = e.store.put_file(tmp, move=True)
            artifact = {"sha256": info.sha256, "format": "dir", "type": "path"}
        else:
            raise ExecutionError(f"input {key!r} names {str(path)!r}, which does not exist")
        return {"artifact": artifact, "source": str(path)}

    def record(self, s: Session, view: TaskView) -> None:
        """Lineage edges: which artifact, imported file or value each input of the task got."""
        run = self.run
        task_rows.record_inputs(
            s, tenant=run.e.tenant, run_id=run.run_id, task_id=view.id,
            inputs=view.inputs or {}, user=run.e.user, at=q.now(),
        )  # fmt: skip
