"""Small named checks that a spec can run, each raising one clear :class:`ValidationError`.

:func:`validate_spec` runs the structural checks (any spec, however it was made: traced from
Python or loaded from YAML). :func:`validate_for_executor` adds the checks that depend on
where the run goes (resource capacity, secrets, a container engine).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from argosy.errors import ValidationError
from argosy.executors.base import Capacity as Capacity  # re-exported: callers import it here
from argosy.runtime.container import container_engine
from argosy.sdk.types import DEFAULT_FORMATS, JSON_TYPES, TypeInfo, compatible
from argosy.spec.models import (
    ConditionSpec,
    ConstantInput,
    ContainerImplementation,
    DagSpec,
    InputSpec,
    NodeSpec,
    OneOfInput,
    OutputReference,
    ParameterInput,
    ParameterSpec,
    PipelineSpec,
    TaskOutputInput,
    TypeSpec,
)
from argosy.units import format_bytes

_NODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


def _info(t: TypeSpec) -> TypeInfo:
    return TypeInfo(t.type, t.serializer, t.optional)


class _Dag:
    """One graph of a spec (the root or a sub-pipeline's) with what its checks need to know."""

    def __init__(self, spec: PipelineSpec, key: str, dag: DagSpec) -> None:
        self.spec = spec
        self.key = key  # "" for the root, else the sub-pipeline's name
        self.dag = dag
        self.nodes = {n.name: n for n in dag.nodes}
        self.parameters = spec.parameters if not key else spec.pipelines[key].parameters

    def fail(self, check: str, node: str, message: str) -> ValidationError:
        where = f"{self.key}/{node}" if self.key else node
        location = self.spec.location(f"{self.key}:{node}" if self.key else node)
        return ValidationError(check, message, where=where, location=location)

    def inputs_of(self, node: NodeSpec) -> dict[str, InputSpec | ParameterSpec]:
        if node.step is not None:
            return dict(self.spec.steps[node.step].inputs)
        return dict(self.spec.pipelines[node.pipeline or ""].parameters)

    def outputs_of(self, node: NodeSpec) -> dict[str, TypeSpec]:
        if node.step is not None:
            base = dict(self.spec.steps[node.step].outputs)
        else:
            sub = _Dag(
                self.spec, node.pipeline or "", self.spec.pipelines[node.pipeline or ""].root
            )
            base = {k: sub.type_of_output(ref) for k, ref in sub.dag.outputs.items()}
        if node.for_each is not None:
            return {k: TypeSpec(type="list") for k in base}
        return base

    def type_of_output(self, ref: OutputReference | OneOfInput) -> TypeSpec:
        refs = ref.one_of if isinstance(ref, OneOfInput) else [ref]
        types = [self.outputs_of(self.nodes[r.node])[r.output] for r in refs]
        return types[0] if len({t.type for t in types}) == 1 else TypeSpec(type="any")

    def refs_in(self, node: NodeSpec) -> list[tuple[str, OutputReference]]:
        """(what, reference) for every upstream output this node reads."""
        found: list[tuple[str, OutputReference]] = []
        bindings = [(f"input {k!r}", b) for k, b in node.inputs.items()]
        if node.for_each is not None:
            bindings.append(("map() items", node.for_each.items))
        for what, b in bindings:
            if isinstance(b, TaskOutputInput):
                found.append((what, b.task_output))
            elif isinstance(b, OneOfInput):
                found.extend((what, r) for r in b.one_of)
        for operand in _operands(node.when):
            if isinstance(operand, TaskOutputInput):
                found.append(("a condition", operand.task_output))
        return found

    def upstream(self) -> dict[str, list[str]]:
        deps: dict[str, list[str]] = {}
        for node in self.dag.nodes:
            found = [r.node for _, r in self.refs_in(node)]
            group = node.exit_handler.group if node.exit_handler else []
            deps[node.name] = list(dict.fromkeys([*found, *node.after, *group]))
        return deps


def _operands(cond: ConditionSpec | None) -> list[Any]:
    if cond is None:
        return []
    found = [o for o in (cond.left, cond.right) if o is not None]
    for part in [*(cond.all or []), *(cond.any or []), *([cond.not_] if cond.not_ else [])]:
        found.extend(_operands(part))
    return found


def _dags(spec: PipelineSpec) -> list[_Dag]:
    return [_Dag(spec, key, dag) for key, dag in spec.dags()]


def check_node_names(spec: PipelineSpec) -> None:
    for d in _dags(spec):
        seen: set[str] = set()
        for node in d.dag.nodes:
            if not _NODE.match(node.name):
                raise d.fail("check_node_names", node.name,
                             "invalid node name; use letters, digits, '_', '-' or '.'")  # fmt: skip
            if node.name in seen:
                raise d.fail("check_node_names", node.name,
                             "node name used twice; give each call its own name")  # fmt: skip
            seen.add(node.name)


def check_references_exist(spec: PipelineSpec) -> None:
    """Every step, sub-pipeline, parameter, node and output a node names exists."""
    for d in _dags(spec):
        for node in d.dag.nodes:
            if (node.step is None) == (node.pipeline is None):
                raise d.fail("check_references_exist", node.name,
                             "a node calls exactly one step or one sub-pipeline")  # fmt: skip
            if node.step is not None and node.step not in spec.steps:
                raise d.fail("check_references_exist", node.name,
                             f"unknown step {node.step!r}; steps are: {', '.join(sorted(spec.steps))}")  # fmt: skip
            if node.pipeline is not None and node.pipeline not in spec.pipelines:
                raise d.fail("check_references_exist", node.name,
                             f"unknown sub-pipeline {node.pipeline!r}")  # fmt: skip
            defs = d.inputs_of(node)
            for key in node.inputs:
                if key not in defs:
                    raise d.fail("check_references_exist", node.name,
                                 f"{node.step or node.pipeline!r} has no input {key!r}; its inputs "
                                 f"are: {', '.join(defs) or '(none)'}")  # fmt: skip
            params = [b for b in [*node.inputs.values(), *_operands(node.when)]
                      if isinstance(b, ParameterInput)]  # fmt: skip
            if node.for_each is not None and isinstance(node.for_each.items, ParameterInput):
                params.append(node.for_each.items)
            for b in params:
                if b.parameter not in d.parameters:
                    raise d.fail("check_references_exist", node.name,
                                 f"uses unknown parameter {b.parameter!r}; parameters are: "
                                 f"{', '.join(d.parameters) or '(none)'}")  # fmt: skip
            for what, ref in d.refs_in(node):
                if ref.node not in d.nodes:
                    raise d.fail("check_references_exist", node.name,
                                 f"{what} uses an output of unknown node {ref.node!r}")  # fmt: skip
                outputs = d.outputs_of(d.nodes[ref.node])
                if ref.output not in outputs:
                    raise d.fail("check_references_exist", node.name,
                                 f"{what} uses output {ref.output!r} of {ref.node!r}, which "
                                 f"has outputs: {', '.join(outputs) or '(none)'}")  # fmt: skip
            for other in [*node.after, *(node.exit_handler.group if node.exit_handler else [])]:
                if other not in d.nodes:
                    raise d.fail("check_references_exist", node.name,
                                 f"refers to unknown node {other!r}")  # fmt: skip
            if node.for_each is not None and node.for_each.input not in defs:
                raise d.fail("check_for_each", node.name,
                             f"map() iterates over input {node.for_each.input!r}, which "
                             f"{node.step or node.pipeline!r} does not have")  # fmt: skip
            if node.exit_handler is not None and node.exit_handler.status_input not in defs:
                raise d.fail("check_exit_handlers", node.name,
                             f"the exit handler needs an input {node.exit_handler.status_input!r}")  # fmt: skip
        for name, out in d.dag.outputs.items():
            refs = out.one_of if isinstance(out, OneOfInput) else [out]
            for ref in refs:
                if ref.node not in d.nodes or ref.output not in d.outputs_of(d.nodes[ref.node]):
                    raise d.fail("check_references_exist", "pipeline",
                                 f"pipeline output {name!r} refers to {ref.node}.{ref.output}, "
                                 "which does not exist")  # fmt: skip


def check_no_cycles(spec: PipelineSpec) -> None:
    for d in _dags(spec):
        deps = d.upstream()
        state: dict[str, int] = {}  # 1: visiting, 2: done

        def visit(
            name: str,
            trail: list[str],
            d: _Dag = d,
            deps: dict[str, list[str]] = deps,
            state: dict[str, int] = state,
        ) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                loop = " -> ".join([*trail[trail.index(name) :], name])
                raise d.fail("check_no_cycles", name,
                             f"the pipeline has a cycle ({loop}); a step cannot depend on its own output")  # fmt: skip
            state[name] = 1
            for up in deps.get(name, []):
                visit(up, [*trail, name])
            state[name] = 2

        for node in d.dag.nodes:
            visit(node.name, [])
    _check_pipeline_recursion(spec)


def _check_pipeline_recursion(spec: PipelineSpec) -> None:
    def visit(key: str, trail: list[str]) -> None:
        if key in trail:
            raise ValidationError("check_no_cycles",
                                  f"sub-pipelines call each other in a loop: {' -> '.join([*trail, key])}")  # fmt: skip
        for node in spec.pipelines[key].root.nodes:
            if node.pipeline:
                visit(node.pipeline, [*trail, key])

    for key in spec.pipelines:
        visit(key, [])


def check_required_inputs(spec: PipelineSpec) -> None:
    for d in _dags(spec):
        for node in d.dag.nodes:
            filled = {node.for_each.input} if node.for_each else set()
            if node.exit_handler:
                filled.add(node.exit_handler.status_input)
            for key, inp in d.inputs_of(node).items():
                if inp.required and key not in node.inputs and key not in filled:
                    raise d.fail("check_required_inputs", node.name,
                                 f"required input {key!r} of {node.step or node.pipeline!r} is not "
                                 f"given; pass {key}=<value, parameter or upstream output>")  # fmt: skip


def json_type(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return "dict"


def _binding_type(d: _Dag, binding: Any) -> tuple[TypeInfo, str, bool]:
    """(type, description, is_value) of what a binding provides."""
    if isinstance(binding, TaskOutputInput):
        ref = binding.task_output
        return (
            _info(d.outputs_of(d.nodes[ref.node])[ref.output]),
            f"output {ref.node}.{ref.output}",
            False,
        )
    if isinstance(binding, OneOfInput):
        return _info(d.type_of_output(binding)), "one_of(...)", False
    if isinstance(binding, ParameterInput):
        return _info(d.parameters[binding.parameter]), f"parameter {binding.parameter!r}", True
    return TypeInfo(json_type(binding.constant)), f"constant {binding.constant!r}", True


def check_types(spec: PipelineSpec) -> None:
    """Each input's source fits the input's annotation; map() items are lists; conditions read JSON."""
    for d in _dags(spec):
        for node in d.dag.nodes:
            defs = d.inputs_of(node)
            for key, binding in node.inputs.items():
                expected = _info(defs[key])
                if (
                    isinstance(binding, ConstantInput)
                    and binding.constant is None
                    and (expected.optional or expected.ref == "any")
                ):
                    continue
                parts = binding.one_of if isinstance(binding, OneOfInput) else [binding]
                for part in parts:
                    b = (
                        TaskOutputInput(task_output=part)
                        if isinstance(part, OutputReference)
                        else part
                    )
                    got, source, is_value = _binding_type(d, b)
                    if not compatible(got, expected, is_value=is_value):
                        raise d.fail("check_types", node.name,
                                     f"input {key!r} of {node.step or node.pipeline!r} expects "
                                     f"{expected.ref} but {source} is {got.ref}; convert it in a "
                                     "step or fix the annotation")  # fmt: skip
            if node.for_each is not None:
                got, source, _ = _binding_type(d, node.for_each.items)
                if got.ref not in ("list", "any"):
                    raise d.fail("check_for_each", node.name,
                                 f"map() iterates over {source}, which is {got.ref}, not a list; "
                                 "map over a list (a list output, parameter or constant)")  # fmt: skip
                if node.for_each.parallelism is not None and node.for_each.parallelism < 1:
                    raise d.fail("check_for_each", node.name, "parallelism must be >= 1")
            for operand in _operands(node.when):
                got, source, _ = _binding_type(d, operand)
                if got.ref not in JSON_TYPES and got.ref != "any":
                    raise d.fail("check_conditions", node.name,
                                 f"a condition reads {source}, a {got.ref}; conditions compare "
                                 "JSON values (numbers, strings, booleans, lists): compute the "
                                 "value in a step")  # fmt: skip
            if node.exit_handler is not None:
                inside = set(node.exit_handler.group)
                for what, ref in d.refs_in(node):
                    if ref.node in inside:
                        raise d.fail("check_exit_handlers", node.name,
                                     f"{what} of the exit handler comes from {ref.node!r}, a step "
                                     "of its own group; take the value from outside the group")  # fmt: skip


def check_outputs_storable(spec: PipelineSpec) -> None:
    """Every output type has a storage format: a default one, or an explicit serializer."""
    for name, step in spec.steps.items():
        for key, out in step.outputs.items():
            if out.serializer or out.type == "any" or out.type in DEFAULT_FORMATS:
                continue
            raise ValidationError(
                "check_outputs_storable",
                f"output {key!r} of step {name!r} has type {out.type}, which has no built-in "
                f"format; annotate it as Annotated[{out.type.rsplit('.', 1)[-1]}, "
                "serializer('joblib')] (or 'pickle') to opt in to pickle-based storage",
                where=name,
                location=spec.location(f"step:{name}"),
            )


def check_retry_policy(spec: PipelineSpec) -> None:
    for name, step in spec.steps.items():
        if (
            step.retries < 0
            or step.retry_backoff < 0
            or (step.timeout is not None and step.timeout <= 0)
        ):
            raise ValidationError(
                "check_retry_policy",
                "retries and retry_backoff must be >= 0 and timeout > 0",
                where=name,
                location=spec.location(f"step:{name}"),
            )


def check_safe_names(spec: PipelineSpec) -> None:
    """The pipeline's, steps' and sub-pipelines' names and every input and output name are
    safe to use as a key or path segment (no traversal, separators or control characters)."""
    from argosy.safe_paths import UnsafeNameError, check_name

    named: list[tuple[str, str, str]] = [("", "pipeline name", spec.name)]
    for name, step in spec.steps.items():
        named.append((name, "step name", name))
        named += [(name, "input name", key) for key in step.inputs]
        named += [(name, "output name", key) for key in step.outputs]
    for name, sub in spec.pipelines.items():
        named.append((name, "sub-pipeline name", name))
        named += [(name, "parameter name", key) for key in sub.parameters]
    named += [("", "parameter name", key) for key in spec.parameters]
    for where, what, value in named:
        try:
            check_name(value, what)
        except UnsafeNameError as exc:
            raise ValidationError(
                "check_safe_names", str(exc), where=where or None,
                location=spec.location(f"step:{where}") if where in spec.steps else None,
            ) from None  # fmt: skip


STRUCTURAL_CHECKS: list[Callable[[PipelineSpec], None]] = [
    check_safe_names,
    check_node_names,
    check_references_exist,
    check_no_cycles,
    check_required_inputs,
    check_types,
    check_outputs_storable,
    check_retry_policy,
]


def validate_spec(spec: PipelineSpec) -> None:
    """Run every structural check; the first failure raises."""
    for check in STRUCTURAL_CHECKS:
        check(spec)


def check_resources_fit(spec: PipelineSpec, capacity: Capacity) -> None:
    """No step asks for more than the executor has in total (it would wait forever)."""
    for name, step in spec.steps.items():
        r = step.resources
        loc = spec.location(f"step:{name}")
        if r.cpu > capacity.cpu:
            raise ValidationError("check_resources_fit",
                f"step asks for cpu={r.cpu:g} but the executor has {capacity.cpu:g} CPUs in total; "
                "lower the request or run with --max-cpus", where=name, location=loc)  # fmt: skip
        if r.memory is not None and r.memory > capacity.memory:
            raise ValidationError("check_resources_fit",
                f"step asks for memory={format_bytes(r.memory)} but the executor has "
                f"{format_bytes(capacity.memory)} in total; lower the request or run with --max-memory",
                where=name, location=loc)  # fmt: skip
        if r.gpu > capacity.gpu:
            raise ValidationError("check_resources_fit",
                f"step asks for gpu={r.gpu} but the executor has {capacity.gpu} GPUs; run it "
                "where GPUs exist, or set --max-gpus if this machine has them", where=name,
                location=loc)  # fmt: skip


def check_secrets_available(spec: PipelineSpec, secrets: Mapping[str, str], source: str) -> None:
    for name, step in spec.steps.items():
        for secret in step.secrets:
            if secret not in secrets:
                raise ValidationError("check_secrets_available",
                    f"secret {secret!r} is not set; export {secret}=... or add it to {source}",
                    where=name, location=spec.location(f"step:{name}"))  # fmt: skip


def check_container_engine(spec: PipelineSpec) -> None:
    for name, step in spec.steps.items():
        in_image = isinstance(step.implementation, ContainerImplementation) or bool(
            getattr(step.implementation, "image", None))  # fmt: skip
        if in_image and container_engine() is None:
            raise ValidationError("check_container_engine",
                "this step runs in a container image and needs podman or docker on PATH; "
                "install one (see docs/sdk.md#container-steps)", where=name,
                location=spec.location(f"step:{name}"))  # fmt: skip


def validate_for_executor(
    spec: PipelineSpec, capacity: Capacity, secrets: Mapping[str, str], secrets_source: str
) -> None:
    check_resources_fit(spec, capacity)
    check_secrets_available(spec, secrets, secrets_source)
    check_container_engine(spec)
