"""Small named checks that a spec can run, each raising one clear :class:`ValidationError`.

:func:`validate_spec` runs the structural checks (any spec, however it was made: traced from
Python or loaded from YAML). :func:`validate_for_executor` adds the checks that depend on
where the run goes (resource capacity, secrets, a container engine).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from argosy.errors import ValidationError
from argosy.sdk.types import DEFAULT_FORMATS, TypeInfo, compatible
from argosy.spec.models import (
    ContainerImplementation,
    ParameterInput,
    PipelineSpec,
    TaskOutputInput,
    TypeSpec,
)
from argosy.units import format_bytes

_NODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


def _info(t: TypeSpec) -> TypeInfo:
    return TypeInfo(t.type, t.serializer, t.optional)


def _fail(spec: PipelineSpec, check: str, node: str, message: str) -> ValidationError:
    return ValidationError(check, message, where=node, location=spec.location(node))


def check_node_names(spec: PipelineSpec) -> None:
    seen: set[str] = set()
    for node in spec.root.nodes:
        if not _NODE.match(node.name):
            raise _fail(spec, "check_node_names", node.name,
                        "invalid node name; use letters, digits, '_', '-' or '.'")  # fmt: skip
        if node.name in seen:
            raise _fail(spec, "check_node_names", node.name,
                        "node name used twice; give each call its own name")  # fmt: skip
        seen.add(node.name)


def check_references_exist(spec: PipelineSpec) -> None:
    """Every step, parameter, node and output a binding names exists."""
    nodes = {n.name: n for n in spec.root.nodes}
    for node in spec.root.nodes:
        if node.step not in spec.steps:
            raise _fail(spec, "check_references_exist", node.name,
                        f"unknown step {node.step!r}; steps are: {', '.join(sorted(spec.steps))}")  # fmt: skip
        step = spec.steps[node.step]
        for key, binding in node.inputs.items():
            if key not in step.inputs:
                raise _fail(spec, "check_references_exist", node.name,
                            f"step {step.name!r} has no input {key!r}; its inputs are: "
                            f"{', '.join(step.inputs) or '(none)'}")  # fmt: skip
            if isinstance(binding, ParameterInput) and binding.parameter not in spec.parameters:
                raise _fail(spec, "check_references_exist", node.name,
                            f"input {key!r} uses unknown parameter {binding.parameter!r}; "
                            f"parameters are: {', '.join(spec.parameters) or '(none)'}")  # fmt: skip
            if isinstance(binding, TaskOutputInput):
                ref = binding.task_output
                if ref.node not in nodes:
                    raise _fail(spec, "check_references_exist", node.name,
                                f"input {key!r} uses an output of unknown node {ref.node!r}")  # fmt: skip
                upstream = spec.steps.get(nodes[ref.node].step)
                if upstream is not None and ref.output not in upstream.outputs:
                    raise _fail(spec, "check_references_exist", node.name,
                                f"input {key!r} uses output {ref.output!r} of {ref.node!r}, which "
                                f"has outputs: {', '.join(upstream.outputs) or '(none)'}")  # fmt: skip
        for other in node.after:
            if other not in nodes:
                raise _fail(spec, "check_references_exist", node.name,
                            f"runs after unknown node {other!r}")  # fmt: skip
    for name, ref in spec.root.outputs.items():
        if ref.node not in nodes or ref.output not in spec.steps[nodes[ref.node].step].outputs:
            raise _fail(spec, "check_references_exist", "pipeline",
                        f"pipeline output {name!r} refers to {ref.node}.{ref.output}, which "
                        "does not exist")  # fmt: skip


def upstream_of(spec: PipelineSpec) -> dict[str, list[str]]:
    """Node path -> the node paths it waits for (data and ordering dependencies)."""
    deps: dict[str, list[str]] = {}
    for node in spec.root.nodes:
        found = [b.task_output.node for b in node.inputs.values() if isinstance(b, TaskOutputInput)]
        deps[node.name] = list(dict.fromkeys([*found, *node.after]))
    return deps


def check_no_cycles(spec: PipelineSpec) -> None:
    deps = upstream_of(spec)
    state: dict[str, int] = {}  # 1: visiting, 2: done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            loop = " -> ".join([*trail[trail.index(name) :], name])
            raise _fail(spec, "check_no_cycles", name,
                        f"the pipeline has a cycle ({loop}); a step cannot depend on its own output")  # fmt: skip
        state[name] = 1
        for up in deps.get(name, []):
            visit(up, [*trail, name])
        state[name] = 2

    for node in spec.root.nodes:
        visit(node.name, [])


def check_required_inputs(spec: PipelineSpec) -> None:
    for node in spec.root.nodes:
        step = spec.steps[node.step]
        for key, inp in step.inputs.items():
            if inp.required and key not in node.inputs:
                raise _fail(spec, "check_required_inputs", node.name,
                            f"required input {key!r} of step {step.name!r} is not given; pass "
                            f"{key}=<value, parameter or upstream output>")  # fmt: skip


def check_types(spec: PipelineSpec) -> None:
    """Each input's source (output, parameter, constant) fits the input's annotation."""
    nodes = {n.name: n for n in spec.root.nodes}
    for node in spec.root.nodes:
        step = spec.steps[node.step]
        for key, binding in node.inputs.items():
            expected = _info(step.inputs[key])
            if isinstance(binding, TaskOutputInput):
                ref = binding.task_output
                got = _info(spec.steps[nodes[ref.node].step].outputs[ref.output])
                source = f"output {ref.node}.{ref.output}"
            elif isinstance(binding, ParameterInput):
                got = _info(spec.parameters[binding.parameter])
                source = f"parameter {binding.parameter!r}"
            else:
                got = TypeInfo(json_type(binding.constant))
                source = f"constant {binding.constant!r}"
                if binding.constant is None and (expected.optional or expected.ref == "any"):
                    continue
            if not compatible(got, expected, is_value=not isinstance(binding, TaskOutputInput)):
                raise _fail(spec, "check_types", node.name,
                            f"input {key!r} of step {step.name!r} expects {expected.ref} but "
                            f"{source} is {got.ref}; convert it in a step or fix the annotation")  # fmt: skip


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


STRUCTURAL_CHECKS: list[Callable[[PipelineSpec], None]] = [
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


@dataclass(frozen=True)
class Capacity:
    """What an executor can run at once, in total."""

    cpu: float
    memory: int
    gpu: int


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


def container_engine() -> str | None:
    """The container CLI to run container steps with: podman first, then docker."""
    import os

    chosen = os.environ.get("ARGOSY_CONTAINER_ENGINE")
    if chosen:
        return shutil.which(chosen)
    for candidate in ("podman", "docker"):
        path = shutil.which(candidate)
        if path:
            return path
    return None


def check_container_engine(spec: PipelineSpec) -> None:
    for name, step in spec.steps.items():
        if isinstance(step.implementation, ContainerImplementation) and container_engine() is None:
            raise ValidationError("check_container_engine",
                "this container step needs podman or docker on PATH; install one (see "
                "docs/sdk.md#container-steps)", where=name,
                location=spec.location(f"step:{name}"))  # fmt: skip


def validate_for_executor(
    spec: PipelineSpec, capacity: Capacity, secrets: Mapping[str, str], secrets_source: str
) -> None:
    check_resources_fit(spec, capacity)
    check_secrets_available(spec, secrets, secrets_source)
    check_container_engine(spec)
