"""Control flow in a pipeline body: ``If``/``Elif``/``Else`` and ``exit_handler``.

These only record structure while the body is traced; the engine evaluates conditions and
runs exit handlers when the run gets there::

    with If(accuracy >= threshold):
        deployed = deploy(model=model)
    with Else():
        alerted = alert(metrics=metrics)
    report(result=one_of(deployed, alerted))

    with exit_handler(notify, channel="ml-ops"):
        train(...)                    # notify(status=..., channel=...) runs after, whatever happens
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from argosy.errors import PipelineDefinitionError
from argosy.sdk.graph import (
    Condition,
    GraphBuilder,
    _as_condition,
    caller_location,
    current_builder,
    outside_pipeline,
)


def _builder(what: str) -> GraphBuilder:
    builder = current_builder()
    if builder is None:
        raise outside_pipeline(what)
    return builder


class _Branch:
    kind = "if"

    def __init__(self, condition: Any = None) -> None:
        self.condition: Condition | None = None if condition is None else _as_condition(condition)

    def __enter__(self) -> None:
        _builder(self.kind.capitalize()).open_branch(self.kind, self.condition, caller_location())

    def __exit__(self, *exc: object) -> None:
        _builder(self.kind.capitalize()).close_branch()


class If(_Branch):
    """Steps inside run only when ``condition`` holds at run time (else they are skipped)."""

    kind = "if"

    def __init__(self, condition: Any) -> None:
        super().__init__(condition)


class Elif(_Branch):
    """Right after an If/Elif block: runs when no earlier branch ran and ``condition`` holds."""

    kind = "elif"

    def __init__(self, condition: Any) -> None:
        super().__init__(condition)


class Else(_Branch):
    """Right after an If/Elif block: runs when no earlier branch ran."""

    kind = "else"

    def __init__(self) -> None:
        super().__init__(None)


@contextmanager
def exit_handler(
    step: Any, *, status_input: str = "status", name: str | None = None, **inputs: Any
) -> Iterator[None]:
    """Run ``step`` after every step in the block is done — succeeded, failed or cancelled.

    The step receives the block's final status as its ``status`` input: ``{"status":
    "succeeded" | "failed" | "cancelled", "tasks": {node path: {"state", "reason"}}}``;
    other inputs are given as keywords and must not come from steps inside the block.
    """
    builder = _builder("exit_handler()")
    group: list[str] = []
    builder.groups.append(group)
    try:
        yield
    finally:
        builder.groups.remove(group)
    if not group:
        raise PipelineDefinitionError(
            f"the exit_handler block calls no steps; put the steps it guards inside it [{caller_location()}]"
        )
    builder.add_call(step, (), inputs, name, exit_group=list(group), status_input=status_input)
