"""Reuse of earlier outputs: a task whose inputs are resolved is ``cached`` or ``queued``.

A task reuses an earlier task's outputs — copied as its own artifact rows, pointing at the
same blobs — when the run retries another run and that run's task succeeded with the same
cache key, or when the step cache finds a hit (see :mod:`argosy.engine.cache`). Otherwise it
is queued, and the task's ``cache`` column says why it missed (or that caching is off).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from argosy.engine import cache
from argosy.engine.state import RunState, TaskView, artifact_ref
from argosy.states import TASK_OK, TaskState
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import tasks as task_rows
from argosy.stores.metadata.tables import Task


class Reuse:
    """Decides, per task, between reusing earlier outputs and queueing it."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.image_ids: dict[str, str | None] = {}  # image name -> local image id (read once)

    def consult(self, s: Session, view: TaskView) -> None:
        """Reuse an identical earlier task's outputs (``cached``), or queue the task, saying why."""
        run, e = self.run, self.run.e
        step = run.step_of(view.node_path)
        image = None
        name = getattr(step.implementation, "image", None)  # container steps, Python in images
        if name:
            from argosy.runtime.container import image_id

            if name not in self.image_ids:
                self.image_ids[name] = image_id(name)
            image = self.image_ids[name]
        parts = cache.components(step, view.inputs or {}, e.tenant, image_id=image)
        key = cache.key_of(parts)
        info: dict[str, Any] = {"components": parts}
        if run.retry_of is not None:
            earlier = task_rows.task_at(s, e.tenant, run.retry_of, view.node_path)
            if earlier is not None and earlier.state in TASK_OK and earlier.cache_key == key:
                why = f"retry of run {run.retry_of}: reuses its succeeded task {view.node_path}"
                self._reuse(s, view, earlier, key, info, reason=why)
                return
        if not (run.cache_enabled and step.cache):
            info["status"] = "off"
            info["reason"] = ("caching is off for this step (cache=False)" if not step.cache
                              else "caching is off for this run (--no-cache or ARGOSY_CACHE=false)")  # fmt: skip
        else:
            ttl = step.cache_ttl if step.cache_ttl is not None else e.cache_ttl
            hit = cache.find_hit(s, e.store, e.tenant, key, ttl, list(step.outputs))
            if hit is not None:
                self._reuse(s, view, hit, key, info)
                return
            info["status"] = "miss"
            info["reason"] = self._miss_reason(s, s.get_one(Task, view.id), key, parts)
        run.set_task(s, view, TaskState.QUEUED, inputs=view.inputs, queued_at=q.now(),
                     cache_key=key, cache=info)  # fmt: skip

    def _miss_reason(self, s: Session, row: Task, key: str, parts: dict[str, Any]) -> str:
        earlier = cache.nearest_earlier(s, self.run.e.tenant, row)
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
        self, s: Session, view: TaskView, hit: Task, key: str, info: dict[str, Any],
        *, reason: str | None = None,
    ) -> None:  # fmt: skip
        run, e = self.run, self.run.e
        source = hit.cached_from_task_id or hit.id
        info["status"] = "hit"
        info["reason"] = reason or f"reuses task {hit.node_path} of run {hit.run_id}"
        created = q.now()
        for old in task_rows.task_artifacts(s, hit.id):
            art = task_rows.add_artifact(
                s, tenant=e.tenant, run_id=run.run_id, task_id=view.id, attempt_id=None,
                node_path=view.node_path, output_name=old.output_name, type=old.type,
                format=old.format, serializer=old.serializer, sha256=old.sha256,
                size=old.size, value=old.value, created_at=created, created_by=e.user,
            )  # fmt: skip
            view.outputs[art.output_name] = artifact_ref(art)
        run.set_task(s, view, TaskState.CACHED, inputs=view.inputs, queued_at=created,
                     started_at=created, finished_at=created, cache_key=key, cache=info,
                     cached_from_task_id=source, reason=None)  # fmt: skip
