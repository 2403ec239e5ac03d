"""Describing a pipeline's DAG while its Python body runs ("tracing"); nothing executes here.

Inside ``@pipeline`` bodies, calling a step does not run it: it adds a :class:`Node` to the
active :class:`GraphBuilder` and returns handles (:class:`OutputRef`) that later steps take as
inputs. The finished :class:`PipelineGraph` is what ``argosy.spec.compile`` turns into a spec;
running it is the engine's job.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
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
    """``file:line`` of the first frame outside the SDK and ``contextlib`` (the user's call
    site, also for ``with exit_handler(...)`` blocks)."""
    frame = sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_ARGOSY_SDK)
        or frame.f_code.co_filename == contextlib.__file__
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def user_location(tb: TracebackType | None) -> str | None:
    """``file:line`` of the innermost frame of ``tb`` in the user's code (not Argosy's, not
    the import machinery's), or None."""
    argosy_root = _ARGOSY_SDK.rsplit("/", 1)[0]
    frames = [
        f for f in traceback.extract_tb(tb)
        if not f.filename.startswith((argosy_root, "<frozen")) and f.filename != contextlib.__file__
    ]  # fmt: skip
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


_direct_calls: list[str] = []  # pipelines called as plain Python functions, outermost first


def outside_pipeline(what: str) -> PipelineDefinitionError:
    """The error for ``map()``, ``If`` or ``exit_handler`` used outside a pipeline's tracing.

    Called directly, a pipeline is a plain function that runs its steps in-process; control
    flow needs the engine, so the message names ``.run()``.
    """
    where = caller_location()
    if _direct_calls:
        name = _direct_calls[-1]
        return PipelineDefinitionError(
            f"pipeline {name!r} uses {what}, which needs the engine: it cannot run as a plain "
            f"Python call; run it with {name}.run(...) or 'argosy run FILE:{name}' [{where}]"
        )
    return PipelineDefinitionError(f"{what} only works inside a @pipeline body [{where}]")


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

    # Comparisons build conditions for If/Elif (see argosy.sdk.control); using one in a
    # plain Python ``if`` still fails, through Condition.__bool__.
    def __eq__(self, other: object) -> Condition:  # type: ignore[override]
        return Comparison("==", self, other)

    def __ne__(self, other: object) -> Condition:  # type: ignore[override]
        return Comparison("!=", self, other)

    def __lt__(self, other: object) -> Condition:
        return Comparison("<", self, other)

    def __le__(self, other: object) -> Condition:
        return Comparison("<=", self, other)

    def __gt__(self, other: object) -> Condition:
        return Comparison(">", self, other)

    def __ge__(self, other: object) -> Condition:
        return Comparison(">=", self, other)

    def is_in(self, values: object) -> Condition:
        """A condition: this value is one of ``values`` (a list, or a list handle)."""
        return Comparison("in", self, values)

    def not_in(self, values: object) -> Condition:
        return Comparison("not in", self, values)

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


class Condition:
    """A condition on parameters and upstream outputs, evaluated when the run gets there.

    Build one by comparing handles (``acc >= 0.9``, ``region.is_in(["eu", "us"])``) and
    combine with ``&``, ``|`` and ``~``; use it with ``If``/``Elif``.
    """

    def __bool__(self) -> bool:
        raise PipelineDefinitionError(
            "a condition on step outputs or parameters is known only at run time, so Python's "
            "'if', 'and', 'or' and 'not' cannot use it; write `with If(condition):` (and "
            f"`&`, `|`, `~` to combine conditions) [{caller_location()}]"
        )

    def __and__(self, other: Condition) -> Condition:
        return AllOf([self, _as_condition(other)])

    def __or__(self, other: Condition) -> Condition:
        return AnyOf([self, _as_condition(other)])

    def __invert__(self) -> Condition:
        return Negation(self)


@dataclass(frozen=True, eq=False)
class Comparison(Condition):
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, eq=False)
class AllOf(Condition):
    parts: list[Condition]


@dataclass(frozen=True, eq=False)
class AnyOf(Condition):
    parts: list[Condition]


@dataclass(frozen=True, eq=False)
class Negation(Condition):
    part: Condition


def _as_condition(value: Any) -> Condition:
    if isinstance(value, Condition):
        return value
    if isinstance(value, OutputRef | ParameterRef) and value.type.ref in ("bool", "any"):
        return Comparison("==", value, True)
    raise PipelineDefinitionError(
        f"{value!r} is not a condition; compare it, e.g. `x >= 0.9`, or pass a bool output "
        f"[{caller_location()}]"
    )


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


@dataclass(frozen=True, eq=False, repr=False)
class OneOfRef(_Handle):
    """The output of whichever branch ran (``one_of(a, b)``): the first that was produced."""

    refs: tuple[OutputRef, ...]
    type: TypeInfo

    def __repr__(self) -> str:
        return f"<one_of {', '.join(f'{r.node.path}.{r.output}' for r in self.refs)}>"


def one_of(*refs: OutputRef) -> OneOfRef:
    """Merge the outputs of alternative branches: downstream gets the one that was produced."""
    if len(refs) < 2 or not all(isinstance(r, OutputRef) for r in refs):
        raise PipelineDefinitionError(
            "one_of() takes two or more step outputs from different branches, e.g. "
            f"one_of(deployed, retrained) [{caller_location()}]"
        )
    types = {r.type.ref for r in refs}
    kind = refs[0].type if len(types) == 1 else TypeInfo("any")
    return OneOfRef(tuple(refs), kind)


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
        outputs = self._node.outputs
        if name not in outputs:
            raise ValidationError(
                "check_references_exist",
                f"{self._node.kind} {self._node.target_name!r} has no output {name!r}; its outputs are: "
                f"{', '.join(outputs) or '(none)'}",
                where=self._node.path,
                location=caller_location(),
            )
        return OutputRef(self._node, name, outputs[name])

    def __iter__(self) -> Iterator[OutputRef]:
        return iter([OutputRef(self._node, n, t) for n, t in self._node.outputs.items()])

    def __repr__(self) -> str:
        return f"<call {self._node.path}>"

    def after(self, *others: OutputRef | StepCall) -> StepCall:
        """Also wait for ``others`` before this node starts (an ordering-only dependency)."""
        self._node.add_after(others)
        return self


@dataclass(frozen=True)
class Binding:
    """Where one input of a node comes from: a constant, a parameter, an output, or one_of."""

    constant: Any = None
    parameter: str | None = None
    output: OutputRef | None = None
    one_of: tuple[OutputRef, ...] | None = None
    is_constant: bool = False


@dataclass(frozen=True)
class ForEach:
    """A node mapped over ``items``: one task per item, passed as input ``input``."""

    input: str
    items: Binding
    parallelism: int | None


@dataclass(eq=False)
class Node:
    """One occurrence of a step or sub-pipeline in a pipeline, with its node path."""

    path: str
    step: Step | None
    inputs: dict[str, Binding]
    location: str
    after: list[str] = field(default_factory=list)
    subgraph: PipelineGraph | None = None  # set for a sub-pipeline call
    when: Condition | None = None
    for_each: ForEach | None = None
    exit_group: list[str] | None = None
    status_input: str = "status"

    @property
    def kind(self) -> str:
        return "step" if self.step is not None else "pipeline"

    @property
    def target_name(self) -> str:
        return self.step.name if self.step is not None else self.subgraph.name  # type: ignore[union-attr]

    @property
    def outputs(self) -> dict[str, TypeInfo]:
        """Output name -> type; a mapped node's outputs are lists, in the order of its items."""
        if self.step is not None:
            base = dict(self.step.outputs)
        else:
            assert self.subgraph is not None
            base = {k: v.type for k, v in self.subgraph.outputs.items()}
        if self.for_each is not None:
            return {k: TypeInfo("list") for k in base}
        return base

    @property
    def multi_output(self) -> bool:
        if self.step is not None:
            return self.step.multi_output or not self.step.outputs
        return len(self.outputs) != 1

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
    outputs: dict[str, OutputRef | OneOfRef]
    location: str
    module: str
    file: str


class GraphBuilder:
    """Collects nodes while a pipeline body runs: node paths, branches, groups, fan-outs."""

    def __init__(self, pipeline_name: str) -> None:
        self.pipeline_name = pipeline_name
        self.nodes: list[Node] = []
        self._used: set[str] = set()
        self._token: contextvars.Token[GraphBuilder | None] | None = None
        self.when: list[Condition] = []  # conditions of the enclosing If/Elif/Else blocks
        self._chains: dict[int, list[Condition] | None] = {}  # depth -> If/Elif conditions so far
        self._open: list[tuple[int, list[Condition], bool]] = []  # (depth, chain, is_else)
        self.groups: list[list[str]] = []  # node paths of the open exit-handler groups

    def __enter__(self) -> GraphBuilder:
        self._token = _builder.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _builder.reset(self._token)

    # -- branches --------------------------------------------------------------------------------
    def open_branch(self, kind: str, condition: Condition | None, location: str) -> None:
        depth = len(self.when)
        if kind == "if":
            prior: list[Condition] = []
        else:
            chain = self._chains.get(depth)
            if chain is None:
                raise PipelineDefinitionError(
                    f"{'Elif' if kind == 'elif' else 'Else'} must directly follow an If or Elif "
                    f"block at the same level [{location}]"
                )
            prior = chain
        negated: list[Condition] = [Negation(c) for c in prior]
        parts = negated + ([condition] if condition is not None else [])
        effective = parts[0] if len(parts) == 1 else AllOf(parts)
        self.when.append(effective)
        chain = [*prior, condition] if condition is not None else prior
        self._open.append((depth, chain, kind == "else"))

    def close_branch(self) -> None:
        self.when.pop()
        depth, chain, is_else = self._open.pop()
        for deeper in [d for d in self._chains if d > depth]:
            del self._chains[deeper]
        self._chains[depth] = None if is_else else chain

    def _condition(self) -> Condition | None:
        if not self.when:
            return None
        return self.when[0] if len(self.when) == 1 else AllOf(list(self.when))

    # -- node paths ------------------------------------------------------------------------------
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

    # -- calls -----------------------------------------------------------------------------------
    def add_call(
        self,
        target: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        *,
        for_each: tuple[str | None, Any, int | None] | None = None,
        exit_group: list[str] | None = None,
        status_input: str = "status",
    ) -> OutputRef | StepCall:
        """Add a node calling ``target`` (a Step, or a Pipeline: a sub-pipeline)."""
        from argosy.sdk.step import Step

        location = caller_location()
        is_step = isinstance(target, Step)
        subgraph = None if is_step else target.graph()
        path = self.node_path(name or target.name, name is not None, location)
        what = f"{'step' if is_step else 'pipeline'} {target.name!r}"
        defs = target.inputs if is_step else target.input_defs()
        names = list(defs)
        if len(args) > len(names):
            raise ValidationError(
                "check_inputs",
                f"{what} takes {len(names)} inputs ({', '.join(names)}) but "
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
        loop: ForEach | None = None
        if for_each is not None:
            over, items, parallelism = for_each
            over = over or next((n for n in names if n not in given), None)
            if over is None or over not in defs:
                raise ValidationError(
                    "check_for_each",
                    f"map() of {what} needs the input to iterate over: pass over=<input name>; "
                    f"its inputs are: {', '.join(names) or '(none)'}",
                    where=path,
                    location=location,
                )
            if over in given:
                raise ValidationError(
                    "check_for_each",
                    f"input {over!r} is what map() iterates over; do not also pass it",
                    where=path,
                    location=location,
                )
            self._check_items(what, path, over, defs[over].type, items, location)
            items_binding = self._bind(what, path, over, TypeInfo("list"), items, location)
            loop = ForEach(over, items_binding, parallelism)
        if exit_group is not None:
            if status_input not in defs:
                raise ValidationError(
                    "check_exit_handlers",
                    f"exit handler {what} must take an input named {status_input!r} (a dict) "
                    "to receive the final status of its group; add that parameter",
                    where=path,
                    location=location,
                )
            if status_input in given:
                raise ValidationError(
                    "check_exit_handlers",
                    f"input {status_input!r} of the exit handler is filled in by Argosy; do not pass it",
                    where=path,
                    location=location,
                )
        unknown = [k for k in given if k not in defs]
        if unknown:
            raise ValidationError(
                "check_inputs",
                f"{what} has no input {unknown[0]!r}; its inputs are: {', '.join(names) or '(none)'}",
                where=path,
                location=location,
            )
        bindings: dict[str, Binding] = {}
        for key, spec in defs.items():
            if key not in given:
                filled = (loop is not None and key == loop.input) or (
                    exit_group is not None and key == status_input
                )
                if spec.required and not filled:
                    raise ValidationError(
                        "check_required_inputs",
                        f"required input {key!r} of {what} is not given; pass "
                        f"{key}=<value, parameter or upstream output>",
                        where=path,
                        location=location,
                    )
                continue
            bindings[key] = self._bind(what, path, key, spec.type, given[key], location)
        if exit_group is not None:
            inside = set(exit_group)
            for key, b in bindings.items():
                sources = [b.output] if b.output is not None else list(b.one_of or ())
                for ref in sources:
                    if ref is not None and ref.node.path in inside:
                        raise ValidationError(
                            "check_exit_handlers",
                            f"input {key!r} of the exit handler comes from {ref.node.path!r}, a "
                            "step of its own group; an exit handler runs whatever happened to its "
                            "group, so it receives only the group's status: take the value "
                            "from outside the group",
                            where=path,
                            location=location,
                        )
        node = Node(
            path, target if is_step else None, bindings, location, subgraph=subgraph,
            when=self._condition(), for_each=loop, exit_group=exit_group,
            status_input=status_input,
        )  # fmt: skip
        self.nodes.append(node)
        self._chains[len(self.when)] = None  # a node between If and Elif/Else ends the chain
        for group in self.groups:
            group.append(path)
        if node.multi_output:
            return StepCall(node)
        (only,) = node.outputs.items()
        return OutputRef(node, only[0], only[1])

    def _check_items(
        self, what: str, path: str, over: str, each: TypeInfo, items: Any, location: str
    ) -> None:
        """What ``map()`` iterates over must be a list (the input gets one item at a time)."""
        if isinstance(items, OutputRef | ParameterRef):
            if compatible(items.type, TypeInfo("list"), is_value=isinstance(items, ParameterRef)):
                return
            source = (
                f"output {items.node.path}.{items.output}"
                if isinstance(items, OutputRef)
                else f"parameter {items.name!r}"
            )
            kind = items.type.ref
        elif isinstance(items, list | tuple | _Handle):
            return
        else:
            source, kind = f"the constant {json.dumps(items, default=repr)}", type(items).__name__
        raise ValidationError(
            "check_for_each",
            f"map() iterates over {source}, which is {kind}, not a list; give map() a list, "
            f"each of whose items goes to input {over!r} of {what} ({each.ref})",
            where=path,
            location=location,
        )

    def _bind(
        self, what: str, path: str, key: str, expected: TypeInfo, value: Any, location: str
    ) -> Binding:
        if isinstance(value, StepCall):
            outputs = list(value.node.outputs)
            raise ValidationError(
                "check_types",
                f"input {key!r} was given the whole call {value.node.path!r}, which has "
                f"{len(outputs)} outputs; pick one, e.g. {value.node.path}.{outputs[0] if outputs else '...'}",
                where=path,
                location=location,
            )
        if isinstance(value, OutputRef | ParameterRef | OneOfRef):
            if not compatible(value.type, expected, is_value=isinstance(value, ParameterRef)):
                source = (
                    f"output {value.node.path}.{value.output}"
                    if isinstance(value, OutputRef)
                    else f"parameter {value.name!r}"
                    if isinstance(value, ParameterRef)
                    else repr(value)
                )
                raise ValidationError(
                    "check_types",
                    f"input {key!r} of {what} expects {expected.ref} but {source} "
                    f"is {value.type.ref}; convert it in a step or fix the annotation",
                    where=path,
                    location=location,
                )
            if isinstance(value, OutputRef):
                return Binding(output=value)
            if isinstance(value, OneOfRef):
                return Binding(one_of=value.refs)
            return Binding(parameter=value.name)
        if isinstance(value, list | tuple | dict) and any(
            isinstance(v, _Handle) for v in (value.values() if isinstance(value, dict) else value)
        ):
            raise ValidationError(
                "check_constants",
                f"input {key!r} is given a {type(value).__name__} holding step outputs or "
                "parameters; a step input takes one handle: pass each as its own input, or "
                "collect outputs with map()",
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
