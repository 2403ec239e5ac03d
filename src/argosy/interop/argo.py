"""Export a compiled pipeline as an Argo Workflows ``WorkflowTemplate`` (``argosy compile
--target argo``), for teams that schedule through Argo.

Mapped: the root DAG (tasks, dependencies), pipeline parameters (workflow arguments with
defaults), JSON-typed values between tasks (output parameters), files between container steps
(artifacts, through Argo's artifact repository: the object store), resources (requests, memory
limit, ``nvidia.com/gpu``), node pools (node selector, tolerations, affinity from the same pool
map as the Kubernetes executor), retries (``retryStrategy`` with exponential backoff),
timeouts (``activeDeadlineSeconds``), conditions (``when``: comparisons with and/or/not) and
fan-out (``withItems`` / ``withParam``). Python steps run in the runtime image (or their own,
``@step(image=...)``) through :mod:`argosy.interop.argo_step` (their code and Argosy baked
into the image by CI); values are JSON.

Refused, with the node named (Argo has no equivalent, or Argosy's engine does it):
sub-pipelines, ``one_of`` inputs, exit handlers, ``in``/``not in`` conditions, a fan-out's
parallelism, and non-JSON values of Python steps (data frames, arrays, models: those need
Argosy's artifact store).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from argosy.errors import UsageError
from argosy.executors.kubernetes import manifests
from argosy.executors.kubernetes.manifests import Pool
from argosy.spec.models import (
    ConditionSpec,
    ConstantInput,
    ContainerImplementation,
    InputBinding,
    NodeSpec,
    OneOfInput,
    ParameterInput,
    PipelineSpec,
    PythonImplementation,
    StepSpec,
    TaskOutputInput,
)

JSON_TYPES = {"int", "float", "str", "bool", "list", "dict", "none", "metrics"}
MOUNT = "/argosy"
_PLACEHOLDER = re.compile(r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\.(path|value)\s*\}\}")


class ArgoExportError(UsageError):
    """The pipeline uses something Argo Workflows cannot express."""


def _name(text: str) -> str:
    """An Argo task/template name: lowercase letters, digits and '-'."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"


def _refuse(node: str, what: str) -> ArgoExportError:
    return ArgoExportError(
        f"node {node!r}: {what} cannot be exported to Argo Workflows; run this pipeline with "
        "Argosy's engine (the Kubernetes executor) instead"
    )


def _is_json(type_ref: str) -> bool:
    return type_ref in JSON_TYPES or type_ref.startswith(("list[", "dict[", "tuple["))


def _ref(binding: InputBinding, node: str) -> tuple[str, str | None]:
    """An Argo expression for a value, and the task it comes from (if any)."""
    if isinstance(binding, ConstantInput):
        value = binding.constant
        return (value if isinstance(value, str) else json.dumps(value)), None
    if isinstance(binding, ParameterInput):
        return f"{{{{workflow.parameters.{binding.parameter}}}}}", None
    if isinstance(binding, TaskOutputInput):
        up = _name(binding.task_output.node)
        return f"{{{{tasks.{up}.outputs.parameters.{binding.task_output.output}}}}}", up
    raise _refuse(node, "a one_of input (the output of whichever branch ran)")


def _condition(cond: ConditionSpec, node: str, deps: set[str]) -> str:
    if cond.all is not None:
        return "(" + " && ".join(_condition(c, node, deps) for c in cond.all) + ")"
    if cond.any is not None:
        return "(" + " || ".join(_condition(c, node, deps) for c in cond.any) + ")"
    if cond.not_ is not None:
        return f"!({_condition(cond.not_, node, deps)})"
    if cond.op in ("in", "not in") or cond.left is None or cond.right is None:
        raise _refuse(node, f"the condition operator {cond.op!r}")
    sides = []
    numeric = any(
        isinstance(o, ConstantInput) and isinstance(o.constant, int | float | bool)
        for o in (cond.left, cond.right)
    )
    for operand in (cond.left, cond.right):
        text, up = _ref(operand, node)
        if up:
            deps.add(up)
        if isinstance(operand, ConstantInput) and numeric:
            sides.append(json.dumps(operand.constant))
        else:
            sides.append(text if numeric else "'" + text.replace("'", "\\'") + "'")
    return f"{sides[0]} {cond.op} {sides[1]}"


def _resources(step: StepSpec) -> dict[str, Any]:
    r = step.resources
    return manifests.resources(r.cpu, r.memory, r.gpu, 1.25)


def _step_template(step: StepSpec, image: str, pools: Mapping[str, Pool] | None) -> dict[str, Any]:
    impl = step.implementation
    name = _name(step.name)
    parameters = [{"name": n} for n, spec in step.inputs.items() if _is_json(spec.type)]
    artifacts: list[dict[str, Any]] = []
    out_parameters = []
    out_artifacts = []
    for out, spec in step.outputs.items():
        path = f"{MOUNT}/outputs/{out}"
        if _is_json(spec.type):
            out_parameters.append({"name": out, "valueFrom": {"path": path}})
        elif isinstance(impl, ContainerImplementation):
            out_artifacts.append({"name": out, "path": path})
        else:
            raise _refuse(step.name, f"the {spec.type} output {out!r} of a Python step")
    container: dict[str, Any] = {"resources": _resources(step)}
    if isinstance(impl, PythonImplementation):
        for n, spec in step.inputs.items():
            if not _is_json(spec.type):
                raise _refuse(step.name, f"the {spec.type} input {n!r} of a Python step")
        container["image"] = impl.image or image  # a step's own image: the project and Argosy in it
        container["command"] = ["python", "-m", "argosy.interop.argo_step"]
        container["args"] = [
            impl.module,
            impl.function,
            impl.returns,
            *[f"--in={n}={{{{inputs.parameters.{n}}}}}" for n in step.inputs],
            *[f"--out={o}" for o in step.outputs],
        ]
    elif not isinstance(impl, ContainerImplementation):
        raise _refuse(step.name, f"a {impl.kind} step")
    else:
        for n, spec in step.inputs.items():
            if _is_json(spec.type):  # also as a file, as Argosy's container steps get it
                artifacts.append(
                    {
                        "name": n,
                        "path": f"{MOUNT}/inputs/{n}",
                        "raw": {"data": f"{{{{inputs.parameters.{n}}}}}"},
                    }
                )
            else:
                artifacts.append({"name": n, "path": f"{MOUNT}/inputs/{n}"})

        def substitute(match: re.Match[str]) -> str:
            group, n, kind = match.groups()
            if kind == "path":
                return f"{MOUNT}/{group}/{n}"
            return f"{{{{inputs.parameters.{n}}}}}"

        container["image"] = impl.image
        container["command"] = [_PLACEHOLDER.sub(substitute, part) for part in impl.command]
    env = [{"name": k, "value": v} for k, v in step.env.items()]
    template: dict[str, Any] = {"name": name, "container": container}
    if step.secrets:  # as files, never environment variables (a Secret named argosy-secrets)
        env.append({"name": "ARGOSY_SECRETS_DIR", "value": manifests.SECRETS_DIR})
        container["volumeMounts"] = [
            {"name": "argosy-secrets", "mountPath": manifests.SECRETS_DIR, "readOnly": True}
        ]
        template["volumes"] = [
            {
                "name": "argosy-secrets",
                "secret": {
                    "secretName": "argosy-secrets",
                    "items": [{"key": s, "path": s} for s in step.secrets],
                },
            }
        ]
    if env:
        container["env"] = env
    if parameters or artifacts:
        template["inputs"] = {}
        if parameters:
            template["inputs"]["parameters"] = parameters
        if artifacts:
            template["inputs"]["artifacts"] = artifacts
    if out_parameters or out_artifacts:
        template["outputs"] = {}
        if out_parameters:
            template["outputs"]["parameters"] = out_parameters
        if out_artifacts:
            template["outputs"]["artifacts"] = out_artifacts
    if step.retries:
        strategy: dict[str, Any] = {"limit": str(step.retries), "retryPolicy": "Always"}
        if step.retry_backoff:
            strategy["backoff"] = {"duration": f"{step.retry_backoff:g}s", "factor": "2"}
        template["retryStrategy"] = strategy
    if step.timeout:
        template["activeDeadlineSeconds"] = str(max(1, round(step.timeout)))
    pool = step.resources.pool
    if pool:
        template["metadata"] = {"labels": {"argosy.dev/pool": manifests.label_value(pool)}}
        if pools is not None:
            if pool not in pools:
                raise ArgoExportError(
                    f"step {step.name!r} asks for pool {pool!r}, which is not in the pool map "
                    f"({', '.join(sorted(pools)) or 'empty'})"
                )
            p = pools[pool]
            if p.node_selector:
                template["nodeSelector"] = dict(p.node_selector)
            if p.tolerations:
                template["tolerations"] = list(p.tolerations)
            if p.affinity:
                template["affinity"] = p.affinity
    return template


def _task(node: NodeSpec, spec: PipelineSpec) -> dict[str, Any]:
    if node.pipeline is not None:
        raise _refuse(node.name, "a sub-pipeline")
    if node.exit_handler is not None:
        raise _refuse(node.name, "an exit handler")
    assert node.step is not None
    step = spec.steps[node.step]
    deps: set[str] = {_name(a) for a in node.after}
    parameters: list[dict[str, str]] = []
    artifacts: list[dict[str, str]] = []
    for name, binding in node.inputs.items():
        if isinstance(binding, OneOfInput):
            raise _refuse(node.name, "a one_of input (the output of whichever branch ran)")
        declared = step.inputs.get(name)
        if declared is not None and not _is_json(declared.type):
            if not isinstance(binding, TaskOutputInput):
                raise _refuse(node.name, f"the {declared.type} input {name!r} from a value")
            up = _name(binding.task_output.node)
            deps.add(up)
            artifacts.append(
                {
                    "name": name,
                    "from": f"{{{{tasks.{up}.outputs.artifacts.{binding.task_output.output}}}}}",
                }
            )
            continue
        text, source = _ref(binding, node.name)
        if source:
            deps.add(source)
        parameters.append({"name": name, "value": text})
    task: dict[str, Any] = {"name": _name(node.name), "template": _name(step.name)}
    if node.for_each is not None:
        each = node.for_each
        if each.parallelism is not None:
            raise _refuse(node.name, "a fan-out's parallelism limit")
        parameters.append({"name": each.input, "value": "{{item}}"})
        if isinstance(each.items, ConstantInput):
            task["withItems"] = each.items.constant
        else:
            text, source = _ref(each.items, node.name)
            if source:
                deps.add(source)
            task["withParam"] = text
    if node.when is not None:
        task["when"] = _condition(node.when, node.name, deps)
    if parameters or artifacts:
        task["arguments"] = {}
        if parameters:
            task["arguments"]["parameters"] = parameters
        if artifacts:
            task["arguments"]["artifacts"] = artifacts
    if deps:
        task["dependencies"] = sorted(deps)
    return task


def workflow_template(
    spec: PipelineSpec,
    *,
    image: str,
    name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    pools: Mapping[str, Pool] | None = None,
) -> dict[str, Any]:
    """The ``WorkflowTemplate`` of ``spec``; Python steps run in ``image`` (pinned)."""
    manifests.check_pinned(image)
    steps_used = [n.step for n in spec.root.nodes if n.step is not None]
    tasks = [_task(node, spec) for node in spec.root.nodes]
    templates: list[dict[str, Any]] = [{"name": "main", "dag": {"tasks": tasks}}]
    for step_name in dict.fromkeys(steps_used):
        templates.append(_step_template(spec.steps[step_name], image, pools))
    arguments = []
    for pname, p in spec.parameters.items():
        param: dict[str, Any] = {"name": pname}
        if not p.required or p.default is not None:
            param["value"] = p.default if isinstance(p.default, str) else json.dumps(p.default)
        arguments.append(param)
    metadata: dict[str, Any] = {
        "name": name or _name(spec.name),
        "labels": {"argosy.dev/pipeline": manifests.label_value(spec.name)},
        "annotations": {"argosy.dev/spec-digest": spec.digest},
    }
    if namespace:
        metadata["namespace"] = namespace
    body: dict[str, Any] = {"entrypoint": "main", "templates": templates}
    if arguments:
        body["arguments"] = {"parameters": arguments}
    if service_account:
        body["serviceAccountName"] = service_account
    body["podGC"] = {"strategy": "OnWorkflowSuccess"}
    body["securityContext"] = manifests.pod_security()
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": metadata,
        "spec": body,
    }
