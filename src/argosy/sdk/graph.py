"""Describing a pipeline's DAG while its Python body runs ("tracing"); nothing executes here.

Inside ``@pipeline`` bodies, calling a step does not run it: it adds a :class:`Node` to the
active :class:`GraphBuilder` and returns handles (:class:`OutputRef`) that later steps take as
inputs. The finished :class:`PipelineGraph` is what ``argosy.spec.compile`` turns into a spec;
running it is the engine's job.
"""

from __future__ import annotations

import contextvars
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from argosy.errors import PipelineDefinitionError, ValidationError
from argosy.sdk.types import TypeInfo, compatible

if TYPE_CHECKING:
    from argosy.sdk.step import Step

NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_ARGOSY_SDK = __file__.rsplit("/", 1)[0]

_builder: contextvars.ContextVar[GraphBuilder | None] = contextvars.ContextVar(
    "argosy_graph_builder", default=None
)


def current_builder() -> GraphBuilder | None:
    """The graph being traced, or None outside a ``@pipeline`` body."""
    return _builder.get()


def caller_location() -> str:
    """``file:line`` of the first frame outside the SDK (the user's call site)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_ARGOSY_SDK):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class _Handle:
    """Refuses Python operations that would need the value at definition time.

    A handle stands for a value that exists only when the run executes; using it in ``if``,
    comparisons, arithmetic or string formatting would silently compute with the handle
    itself, so each of these raises with the user's file:line instead.
    """

    def _no_value(self, what: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(
            f"{self!r} has no value while the pipeline is being defined, so it cannot be used "
            f"{what}; compute it inside a step and pass the result on [{caller_location()}]"
        )

    def __bool__(self) -> bool:
        raise self._no_value("in 'if', 'and', 'or' or 'not'")

    def __iter__(self) -> Iterator[Any]:
        raise PipelineDefinitionError(
            f"{self!r} is a single value known only at run time and cannot be iterated or "
            "unpacked in the pipeline body; return a NamedTuple from the step to get several "
            f"outputs [{caller_location()}]"
        )

    def __eq__(self, other: object) -> bool:
        raise self._no_value("in a comparison")

    def __ne__(self, other: object) -> bool:
        raise self._no_value("in a comparison")

    def __lt__(self, other: object) -> bool:
        raise self._no_value("in a comparison")

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self) -> int:
        return id(self)

    def __format__(self, spec: str) -> str:
        raise self._no_value("in an f-string or format()")

    def __str__(self) -> str:
        raise self._no_value("as a string")

    def _arith(self, *other: object) -> Any:
        raise self._no_value("in arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = __neg__ = _arith

    def __getitem__(self, key: object) -> Any:
        raise self._no_value("with [] indexing")


@dataclass(frozen=True, eq=False, repr=False)
class ParameterRef(_Handle):
    """A pipeline parameter, as seen inside the pipeline body."""

    name: str
    type: TypeInfo

    def __repr__(self) -> str:
        return f"<parameter {self.name}>"


@dataclass(frozen=True, eq=False, repr=False)
class OutputRef(_Handle):
    """One output of one node: what a downstream step receives as an input."""

    node: Node
    output: str
    type: TypeInfo

    def __repr__(self) -> str:
        return f"<output {self.node.path}.{self.output}>"

    def after(self, *others: OutputRef | StepCall) -> OutputRef:
        """Also wait for ``others`` before this node starts (an ordering-only dependency)."""
        self.node.add_after(others)
        return self


class StepCall(_Handle):
    """The handle of a step call with several (or no) outputs: ``parts.train``, ``a, b = ...``."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def node(self) -> Node:
        return self._node

    def __getattr__(self, name: str) -> OutputRef:
        if name.startswith("_"):
            raise AttributeError(name)
        outputs = self._node.step.outputs
        if name not in outputs:
            raise ValidationError(
                "check_references_exist",
                f"step {self._node.step.name!r} has no output {name!r}; its outputs are: "
                f"{', '.join(outputs) or '(none)'}",
                where=self._node.path,
                location=caller_location(),
            )
        return OutputRef(self._node, name, outputs[name])

    def __iter__(self) -> Iterator[OutputRef]:
        return iter([OutputRef(self._node, n, t) for n, t in self._node.step.outputs.items()])

    def __repr__(self) -> str:
        return f"<call {self._node.path}>"

    def after(self, *others: OutputRef | StepCall) -> StepCall:
        """Also wait for ``others`` before this node starts (an ordering-only dependency)."""
        self._node.add_after(others)
        return self


@dataclass(frozen=True)
class Binding:
    """Where one input of a node comes from: exactly one of constant, parameter or output."""

    constant: Any = None
    parameter: str | None = None
    output: OutputRef | None = None
    is_constant: bool = False


@dataclass(eq=False)
class Node:
    """One occurrence of a step in the pipeline, with its stable node path."""

    path: str
    step: Step
    inputs: dict[str, Binding]
    location: str
    after: list[str] = field(default_factory=list)

    def add_after(self, others: tuple[OutputRef | StepCall, ...]) -> None:
        for other in others:
            if not isinstance(other, OutputRef | StepCall):
                raise PipelineDefinitionError(
                    f"{self.path}: .after() takes step calls or their outputs, got {other!r}"
                )
            if other.node.path not in self.after:
                self.after.append(other.node.path)


@dataclass
class PipelineGraph:
    """The traced DAG: parameters, nodes in call order, and the pipeline's outputs."""

    name: str
    parameters: dict[str, tuple[TypeInfo, Any, bool]]  # name -> (type, default, required)
    nodes: list[Node]
    outputs: dict[str, OutputRef]
    location: str
    module: str
    file: str


class GraphBuilder:
    """Collects nodes while a pipeline body runs; gives each node its node path."""

    def __init__(self, pipeline_name: str) -> None:
        self.pipeline_name = pipeline_name
        self.nodes: list[Node] = []
        self._used: set[str] = set()
        self._token: contextvars.Token[GraphBuilder | None] | None = None

    def __enter__(self) -> GraphBuilder:
        if current_builder() is not None:
            raise PipelineDefinitionError(
                "a pipeline called inside another pipeline's body is a sub-pipeline, which this "
                "version does not support yet; call its steps directly instead"
            )
        self._token = _builder.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _builder.reset(self._token)

    def node_path(self, base: str, explicit: bool, location: str) -> str:
        if not NODE_NAME.match(base):
            raise ValidationError(
                "check_node_names",
                f"{base!r} is not a valid node name; use letters, digits, '_', '-' or '.' "
                "(at most 63 characters, starting with a letter or '_')",
                location=location,
            )
        if explicit:
            if base in self._used:
                raise ValidationError(
                    "check_node_names",
                    f"node name {base!r} is used twice in pipeline {self.pipeline_name!r}; "
                    "give each call a different name=",
                    location=location,
                )
            self._used.add(base)
            return base
        path, n = base, 1
        while path in self._used:
            n += 1
            path = f"{base}-{n}"
        self._used.add(path)
        return path

    def add_call(
        self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any], name: str | None
    ) -> OutputRef | StepCall:
        location = caller_location()
        path = self.node_path(name or step.name, name is not None, location)
        names = list(step.inputs)
        if len(args) > len(names):
            raise ValidationError(
                "check_inputs",
                f"step {step.name!r} takes {len(names)} inputs ({', '.join(names)}) but "
                f"{len(args)} positional values were given",
                where=path,
                location=location,
            )
        given = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in given:
                raise ValidationError(
                    "check_inputs", f"input {key!r} given twice", where=path, location=location
                )
            given[key] = value
        unknown = [k for k in given if k not in step.inputs]
        if unknown:
            raise ValidationError(
                "check_inputs",
                f"step {step.name!r} has no input {unknown[0]!r}; its inputs are: "
                f"{', '.join(names) or '(none)'}",
                where=path,
                location=location,
            )
        bindings: dict[str, Binding] = {}
        for key, spec in step.inputs.items():
            if key not in given:
                if spec.required:
                    raise ValidationError(
                        "check_required_inputs",
                        f"required input {key!r} of step {step.name!r} is not given; pass "
                        f"{key}=<value, parameter or upstream output>",
                        where=path,
                        location=location,
                    )
                continue
            bindings[key] = self._bind(step, path, key, spec.type, given[key], location)
        node = Node(path, step, bindings, location)
        self.nodes.append(node)
        if step.multi_output or not step.outputs:
            return StepCall(node)
        (only,) = step.outputs.items()
        return OutputRef(node, only[0], only[1])

    def _bind(
        self, step: Step, path: str, key: str, expected: TypeInfo, value: Any, location: str
    ) -> Binding:
        if isinstance(value, StepCall):
            outputs = list(value.node.step.outputs)
            raise ValidationError(
                "check_types",
                f"input {key!r} was given the whole call {value.node.path!r}, which has "
                f"{len(outputs)} outputs; pick one, e.g. {value.node.path}.{outputs[0] if outputs else '...'}",
                where=path,
                location=location,
            )
        if isinstance(value, OutputRef | ParameterRef):
            if not compatible(value.type, expected, is_value=isinstance(value, ParameterRef)):
                source = (
                    f"output {value.node.path}.{value.output}"
                    if isinstance(value, OutputRef)
                    else f"parameter {value.name!r}"
                )
                raise ValidationError(
                    "check_types",
                    f"input {key!r} of step {step.name!r} expects {expected.ref} but {source} "
                    f"is {value.type.ref}; convert it in a step or fix the annotation",
                    where=path,
                    location=location,
                )
            if isinstance(value, OutputRef):
                return Binding(output=value)
            return Binding(parameter=value.name)
        if isinstance(value, list | tuple | dict) and any(
            isinstance(v, _Handle) for v in (value.values() if isinstance(value, dict) else value)
        ):
            raise ValidationError(
                "check_constants",
                f"input {key!r} is given a {type(value).__name__} holding step outputs or "
                "parameters; a step input takes one handle: pass each as its own input",
                where=path,
                location=location,
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValidationError(
                "check_constants",
                f"input {key!r} is given a constant of type {type(value).__name__} that is not "
                "JSON data; pass data between steps as step outputs, or as a pipeline parameter",
                where=path,
                location=location,
            ) from None
        return Binding(constant=value, is_constant=True)
