"""The execution plan: a spec's nested graphs flattened into tasks with full node paths.

The spec keeps sub-pipelines as nested graphs; the engine runs tasks. The plan expands every
sub-pipeline call in place (``prep/clean``, ``prep-2/clean``), rewrites references to full
node paths and sub-pipeline parameters to what the caller bound them to, and carries each
node's conditions, ordering and exit-handler groups down to the tasks it becomes.

A mapped node (``for_each``) stays one plan node until its items are known at run time;
:meth:`Planner.iterations` then expands it into ``NAME[i]`` tasks (or ``NAME[i]/...`` for a
mapped sub-pipeline). Expansion is deterministic, so a resumed engine rebuilds the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from argosy.spec.models import (
    ConditionSpec,
    ConstantInput,
    DagSpec,
    NodeSpec,
    OneOfInput,
    OutputReference,
    ParameterInput,
    PipelineSpec,
    TaskOutputInput,
)


@dataclass(frozen=True)
class Value:
    """A JSON value known when the plan is made (constant, parameter, default, map item)."""

    value: Any


@dataclass(frozen=True)
class Ref:
    """One output of one task, by full node path."""

    path: str
    output: str


@dataclass(frozen=True)
class OneOf:
    """The first of ``refs`` that was produced (branches of a condition)."""

    refs: tuple[Ref, ...]


@dataclass(frozen=True)
class Item:
    """A map item that is an artifact (an element of a collected output)."""

    artifact: dict[str, Any]


Bound = Value | Ref | OneOf | Item


@dataclass(frozen=True)
class Cond:
    """A condition with operands bound to plan values and references."""

    op: str | None = None
    left: Bound | None = None
    right: Bound | None = None
    all: tuple[Cond, ...] = ()
    any: tuple[Cond, ...] = ()
    negate: Cond | None = None

    def refs(self) -> list[Ref]:
        found = [o for o in (self.left, self.right) if isinstance(o, Ref)]
        for part in (*self.all, *self.any, *((self.negate,) if self.negate else ())):
            found.extend(part.refs())
        return found


@dataclass
class PlanNode:
    """One task to be (or a map node whose iterations are to be) run."""

    path: str
    step: str | None  # the step key; None for a map over a sub-pipeline
    inputs: dict[str, Bound]
    after: list[str] = field(default_factory=list)
    when: list[Cond] = field(default_factory=list)
    pipeline: str | None = None  # a mapped sub-pipeline
    for_each: tuple[str, Bound, int | None] | None = None  # (input, items, parallelism)
    exit_group: list[str] | None = None
    status_input: str = "status"
    parent: str | None = None  # the map node this is an iteration (or inside one) of
    index: int | None = None
    item: Any = None

    @property
    def is_map(self) -> bool:
        return self.for_each is not None

    def sources(self) -> list[Ref]:
        """Every upstream output this node reads (inputs, map items, conditions)."""
        found: list[Ref] = []
        bound = list(self.inputs.values())
        if self.for_each is not None:
            bound.append(self.for_each[1])
        for b in bound:
            if isinstance(b, Ref):
                found.append(b)
            elif isinstance(b, OneOf):
                found.extend(b.refs)
        for cond in self.when:
            found.extend(cond.refs())
        return found

    def deps(self) -> list[str]:
        """Paths this node waits for."""
        paths = [r.path for r in self.sources()]
        return list(dict.fromkeys([*paths, *self.after, *(self.exit_group or [])]))


class Planner:
    """Expands a spec into plan nodes (statically), and map nodes into iterations (at run time)."""

    def __init__(self, spec: PipelineSpec, parameters: dict[str, Any]) -> None:
        self.spec = spec
        self.parameters = parameters
        # map path -> iteration index -> the mapped sub-pipeline's outputs, bound
        self.iteration_outputs: dict[str, dict[int, dict[str, Bound]]] = {}

    def static(self) -> tuple[list[PlanNode], dict[str, Bound]]:
        """The plan of the root graph, and the pipeline's outputs."""
        scope: dict[str, Bound] = {k: Value(v) for k, v in self.parameters.items()}
        return self.expand(self.spec.root, "", scope, [], [])

    # -- expansion -------------------------------------------------------------------------------
    def expand(
        self, dag: DagSpec, prefix: str, scope: dict[str, Bound], when: list[Cond], after: list[str]
    ) -> tuple[list[PlanNode], dict[str, Bound]]:
        plan: list[PlanNode] = []
        aliases: dict[str, dict[str, Bound]] = {}  # sub-pipeline node -> its outputs
        made: dict[str, list[str]] = {}  # node name -> the plan paths it became

        def bind(b: Any) -> Bound:
            if isinstance(b, ConstantInput):
                return Value(b.constant)
            if isinstance(b, ParameterInput):
                return scope[b.parameter]
            if isinstance(b, TaskOutputInput):
                return ref(b.task_output)
            assert isinstance(b, OneOfInput)
            refs: list[Ref] = []
            for r in b.one_of:
                got = ref(r)
                refs.extend(
                    got.refs if isinstance(got, OneOf) else [got] if isinstance(got, Ref) else []
                )
            return OneOf(tuple(refs))

        def ref(r: OutputReference) -> Bound:
            if r.node in aliases:
                return aliases[r.node][r.output]
            return Ref(prefix + r.node, r.output)

        def cond(c: ConditionSpec) -> Cond:
            return Cond(
                op=c.op,
                left=bind(c.left) if c.left is not None else None,
                right=bind(c.right) if c.right is not None else None,
                all=tuple(cond(p) for p in c.all or []),
                any=tuple(cond(p) for p in c.any or []),
                negate=cond(c.not_) if c.not_ is not None else None,
            )

        for node in _ordered(dag):
            path = prefix + node.name
            inputs = {k: bind(b) for k, b in node.inputs.items()}
            node_when = [*when, *([cond(node.when)] if node.when else [])]
            node_after = [*after, *(p for a in node.after for p in made.get(a, [prefix + a]))]
            if node.pipeline is not None and node.for_each is None:
                sub = self.spec.pipelines[node.pipeline]
                sub_scope = {k: inputs[k] if k in inputs else Value(p.default)
                             for k, p in sub.parameters.items()}  # fmt: skip
                inner, outputs = self.expand(sub.root, path + "/", sub_scope, node_when, node_after)
                plan.extend(inner)
                aliases[node.name] = outputs
                made[node.name] = [n.path for n in inner]
                continue
            group = None
            if node.exit_handler is not None:
                group = [p for g in node.exit_handler.group for p in made.get(g, [prefix + g])]
            plan.append(
                PlanNode(
                    path=path,
                    step=node.step,
                    inputs=inputs,
                    after=node_after,
                    when=node_when,
                    pipeline=node.pipeline,
                    for_each=(
                        node.for_each.input,
                        bind(node.for_each.items),
                        node.for_each.parallelism,
                    )
                    if node.for_each
                    else None,
                    exit_group=group,
                    status_input=node.exit_handler.status_input if node.exit_handler else "status",
                )
            )
            made[node.name] = [path]
        return plan, {k: bind(_as_binding(r)) for k, r in dag.outputs.items()}

    def iterations(self, node: PlanNode, items: list[Bound]) -> list[PlanNode]:
        """The tasks of a map node, once its items are known: ``PATH[i]`` or ``PATH[i]/...``."""
        assert node.for_each is not None
        over = node.for_each[0]
        made: list[PlanNode] = []
        self.iteration_outputs[node.path] = {}
        for i, item in enumerate(items):
            base = f"{node.path}[{i}]"
            item_value = (
                item.value
                if isinstance(item, Value)
                else item.artifact
                if isinstance(item, Item)
                else None
            )
            if node.step is not None:
                made.append(
                    PlanNode(
                        path=base,
                        step=node.step,
                        inputs={**node.inputs, over: item},
                        parent=node.path,
                        index=i,
                        item=item_value,
                    )
                )
                continue
            assert node.pipeline is not None
            sub = self.spec.pipelines[node.pipeline]
            scope: dict[str, Bound] = {k: Value(p.default) for k, p in sub.parameters.items()}
            scope.update(node.inputs)
            scope[over] = item
            inner, outputs = self.expand(sub.root, base + "/", scope, [], [])
            for n in inner:
                n.parent, n.index, n.item = node.path, i, item_value
            made.extend(inner)
            self.iteration_outputs[node.path][i] = outputs
        return made

    def outputs_of_iteration(self, node: PlanNode, index: int, output: str) -> Bound:
        """What output ``output`` of iteration ``index`` of a map node is."""
        if node.step is not None:
            return Ref(f"{node.path}[{index}]", output)
        return self.iteration_outputs[node.path][index][output]


def _as_binding(r: OutputReference | OneOfInput) -> TaskOutputInput | OneOfInput:
    return r if isinstance(r, OneOfInput) else TaskOutputInput(task_output=r)


def _ordered(dag: DagSpec) -> list[NodeSpec]:
    """Nodes in dependency order (traced specs already are; hand-written ones may not be)."""
    names = {n.name: n for n in dag.nodes}
    done: list[NodeSpec] = []
    seen: set[str] = set()

    def deps(n: NodeSpec) -> list[str]:
        found: list[str] = []
        for b in [*n.inputs.values(), *([n.for_each.items] if n.for_each else [])]:
            if isinstance(b, TaskOutputInput):
                found.append(b.task_output.node)
            elif isinstance(b, OneOfInput):
                found.extend(r.node for r in b.one_of)
        return [*found, *n.after, *(n.exit_handler.group if n.exit_handler else [])]

    def visit(n: NodeSpec) -> None:
        if n.name in seen:
            return
        seen.add(n.name)
        for d in deps(n):
            if d in names:
                visit(names[d])
        done.append(n)

    for n in dag.nodes:
        visit(n)
    return done
