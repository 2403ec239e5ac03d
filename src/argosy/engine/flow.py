"""Control flow at run time: evaluating conditions, and the status an exit handler receives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from argosy.engine.plan import Bound, Cond, Ref, Value
from argosy.states import TaskState

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
    "in": lambda a, b: bool(a in b),
    "not in": lambda a, b: bool(a not in b),
}


def evaluate(cond: Cond, value_of: Callable[[Ref], Any]) -> tuple[bool, str]:
    """Whether ``cond`` holds, and how it read (``accuracy >= 0.9 (0.85 >= 0.9)``)."""
    if cond.op is not None:
        assert cond.left is not None and cond.right is not None
        left, right = _operand(cond.left, value_of), _operand(cond.right, value_of)
        try:
            holds = _COMPARE[cond.op](left, right)
        except TypeError:
            holds = False
        return (
            holds,
            f"{_name(cond.left)} {cond.op} {_name(cond.right)} ({json.dumps(left)} {cond.op} {json.dumps(right)})",
        )
    if cond.negate is not None:
        holds, text = evaluate(cond.negate, value_of)
        return not holds, f"not ({text})"
    parts = [evaluate(c, value_of) for c in (cond.all or cond.any)]
    holds = all(h for h, _ in parts) if cond.all else any(h for h, _ in parts)
    joiner = " and " if cond.all else " or "
    return holds, joiner.join(f"({t})" for _, t in parts)


def _operand(b: Bound, value_of: Callable[[Ref], Any]) -> Any:
    if isinstance(b, Value):
        return b.value
    if isinstance(b, Ref):
        return value_of(b)
    raise TypeError(f"a condition cannot read {b!r}")


def _name(b: Bound) -> str:
    if isinstance(b, Ref):
        return f"{b.path}.{b.output}"
    return json.dumps(b.value) if isinstance(b, Value) else "?"


def group_status(states: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    """What an exit handler receives about its group: overall status and per-task states.

    A task reused from the cache counts as ``succeeded`` (it did, in the run it reuses), so
    an unchanged re-run gives the handler the same status, and the handler is cached too.
    """
    states = {p: ("succeeded" if s == TaskState.CACHED else s, r) for p, (s, r) in states.items()}
    values = {s for s, _ in states.values()}
    if TaskState.FAILED in values:
        status = "failed"
    elif TaskState.CANCELLED in values:
        status = "cancelled"
    else:
        status = "succeeded"
    return {
        "status": status,
        "tasks": {path: {"state": s, "reason": r} for path, (s, r) in states.items()},
    }
