"""When a task may move on: a pending task's verdict, and a queued task's room to start.

A pending task waits until everything it depends on is done; then it runs, or is skipped
saying why — an upstream that failed, was skipped or produced nothing for it, none of a
``one_of``'s branches ran, or a condition that does not hold (conditions read upstream JSON
outputs, each once). Exit handlers run whatever their group did. A queued iteration of a map
starts only while its map has fewer iterations running than its parallelism allows.
"""

from __future__ import annotations

import json
from typing import Any

from argosy.engine import flow
from argosy.engine.plan import OneOf, PlanNode, Ref
from argosy.engine.state import RunState, failed
from argosy.states import TASK_DONE, TASK_OK, Reason, TaskState


def verdict(run: RunState, node: PlanNode) -> str | None:
    """None: wait; "": run it; otherwise the reason it is skipped."""
    tasks = run.tasks
    if any(tasks[d].state not in TASK_DONE for d in node.deps()):
        return None
    group = set(node.exit_group or [])
    direct = [r.path for b in node.inputs.values() if isinstance(b, Ref) for r in [b]]
    if node.for_each is not None and isinstance(node.for_each[1], Ref):
        direct.append(node.for_each[1].path)
    for path in dict.fromkeys([*direct, *node.after]):
        if path in group:
            continue
        up = tasks[path]
        if up.state in TASK_OK:
            continue
        if failed(up):
            return f"{Reason.UPSTREAM_FAILED}: {path} {up.state}"
        if path in direct:
            return f"{Reason.UPSTREAM_SKIPPED}: {path} was skipped"
    for b in node.inputs.values():
        if isinstance(b, OneOf) and not any(tasks[r.path].state in TASK_OK for r in b.refs):
            bad = [r.path for r in b.refs if failed(tasks[r.path])]
            if bad:
                return f"{Reason.UPSTREAM_FAILED}: {bad[0]} {tasks[bad[0]].state}"
            return f"{Reason.UPSTREAM_SKIPPED}: none of {', '.join(r.path for r in b.refs)} ran"
    for cond in node.when:
        for ref in cond.refs():
            up = tasks[ref.path]
            if up.state not in TASK_OK:
                if failed(up):
                    return f"{Reason.UPSTREAM_FAILED}: {ref.path} {up.state}"
                return f"{Reason.UPSTREAM_SKIPPED}: {ref.path} was skipped"
        holds, text = flow.evaluate(cond, lambda ref: _value(run, ref))
        if not holds:
            return f"{Reason.CONDITION_FALSE}: {text}"
    return ""


def _value(run: RunState, ref: Ref) -> Any:
    """The JSON value of an upstream output (read once)."""
    key = (ref.path, ref.output)
    if key not in run.values:
        art = run.tasks[ref.path].outputs[ref.output]
        run.values[key] = json.loads(run.e.store.read_blob(art["sha256"]))
    return run.values[key]


def within_parallelism(run: RunState, node: PlanNode) -> bool:
    """Whether an iteration may start under its map's ``parallelism`` (others always may)."""
    if node.parent is None:
        return True
    limit = run.plan[node.parent].for_each[2]  # type: ignore[index]
    if limit is None:
        return True
    active = {
        run.plan[p].index
        for p, v in run.tasks.items()
        if run.plan[p].parent == node.parent and v.state == TaskState.RUNNING
    }
    return node.index in active or len(active) < limit
