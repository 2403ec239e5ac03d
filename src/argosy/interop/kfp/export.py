"""An Argosy spec as KFP v2 pipeline spec (IR): ``argosy compile --target kfp``.

* a Python step → a containerized component in ``image`` (built by CI with the project and
  Argosy, pinned by digest) running :mod:`argosy.interop.kfp.entry`; JSON-typed inputs and
  outputs are KFP parameters, the others artifacts (``system.Artifact``; Metrics outputs
  ``system.Metrics``);
* a container step → a container component, its ``{{inputs.X.value|path}}`` and
  ``{{outputs.X.path}}`` as KFP placeholders;
* resources, retries and caching → the executor's resources and the task's options; a node
  pool → the platform spec's ``nodeSelector`` on ``argosy.dev/pool``;
* ``when`` → ``triggerPolicy.condition`` (CEL over the task's own inputs); ``for_each`` → a
  ``for-loop-N`` DAG around the node, its outputs Collected; sub-pipelines → DAG components.

Exit handlers and ``one_of`` inputs are refused (KFP expresses them with surrounding DAGs that
this exporter does not build yet); so are Path parameters.
"""

from __future__ import annotations

import json
import re
from typing import Any

from argosy.errors import PipelineDefinitionError
from argosy.interop.kfp.ir import ARGOSY_TO_PARAMETER
from argosy.spec.models import (
    ConditionSpec,
    ConstantInput,
    ContainerImplementation,
    DagSpec,
    InputBinding,
    NodeSpec,
    OneOfInput,
    OutputReference,
    ParameterInput,
    PipelineSpec,
    PythonImplementation,
    StepSpec,
    TaskOutputInput,
    TypeSpec,
)

SDK_VERSION = "kfp-2.15.2"
_PLACEHOLDER = re.compile(r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\.(path|value)\s*\}\}")


class KfpExportError(PipelineDefinitionError):
    """An Argosy pipeline that cannot be written as KFP IR (yet)."""


def _refuse(where: str, what: str) -> KfpExportError:
    return KfpExportError(
        f"{where}: {what} cannot be exported to KFP IR yet; see docs/kubeflow.md#export"
    )


def _kebab(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "x"


def _is_parameter(t: TypeSpec) -> bool:
    return t.type in ARGOSY_TO_PARAMETER or t.type.startswith(("list[", "dict["))


def _parameter_type(t: TypeSpec) -> str:
    if t.type.startswith("list["):
        return "LIST"
    if t.type.startswith("dict["):
        return "STRUCT"
    return ARGOSY_TO_PARAMETER.get(t.type, "STRING")


def _artifact_type(t: TypeSpec) -> dict[str, str]:
    title = "system.Artifact"
    return {"schemaTitle": title, "schemaVersion": "0.0.1"}


def _definitions(
    inputs: dict[str, Any], outputs: dict[str, TypeSpec], artifacts: set[str] | None = None
) -> dict[str, Any]:
    """Input and output definitions; ``artifacts``: inputs of type ``any`` fed by artifacts."""
    doc: dict[str, Any] = {}
    params: dict[str, Any] = {}
    arts: dict[str, Any] = {}
    for name, spec in inputs.items():
        if _is_parameter(spec) or (spec.type == "any" and name not in (artifacts or set())):
            entry: dict[str, Any] = {
                "parameterType": _parameter_type(spec) if spec.type != "any" else "STRING"
            }
            if not spec.required:
                entry["isOptional"] = True
                if spec.default is not None:
                    entry["defaultValue"] = spec.default
            params[name] = entry
        else:
            arts[name] = {"artifactType": _artifact_type(spec)}
            if not spec.required:
                arts[name]["isOptional"] = True
    if params or arts:
        doc["inputDefinitions"] = {
            k: v for k, v in (("parameters", params), ("artifacts", arts)) if v
        }
    out_params = {
        n: {"parameterType": _parameter_type(t)} for n, t in outputs.items() if _is_parameter(t)
    }
    out_arts = {
        n: {"artifactType": _artifact_type(t)} for n, t in outputs.items() if not _is_parameter(t)
    }
    if out_params or out_arts:
        doc["outputDefinitions"] = {
            k: v for k, v in (("parameters", out_params), ("artifacts", out_arts)) if v
        }
    return doc


class _Exporter:
    def __init__(self, spec: PipelineSpec, image: str | None) -> None:
        self.spec = spec
        self.image = image
        self.components: dict[str, Any] = {}
        self.executors: dict[str, Any] = {}
        self.k8s: dict[str, Any] = {}
        self.loops = 0

    # -- leaf components ----------------------------------------------------------------------
    def step_component(self, key: str, artifacts: set[str]) -> str:
        step = self.spec.steps[key]
        name = f"comp-{_kebab(key)}"
        if name in self.components:
            return name
        label = f"exec-{_kebab(key)}"
        definitions = _definitions(step.inputs, step.outputs, artifacts)
        self.components[name] = {"executorLabel": label, **definitions}
        self.executors[label] = {"container": self.container(key, step)}
        if step.resources.pool:
            self.k8s[label] = {"nodeSelector": {"labels": {"argosy.dev/pool": step.resources.pool}}}
        return name

    def container(self, key: str, step: StepSpec) -> dict[str, Any]:
        impl = step.implementation
        if isinstance(impl, PythonImplementation):
            image = impl.image or self.image  # a step's own image: the project and Argosy in it
            if not image:
                raise KfpExportError(
                    "--target kfp needs the image Python steps run in (the project and Argosy "
                    "installed), pinned by digest: --image REPO@sha256:..."
                )
            types = {n: [t.type, t.serializer] for n, t in step.outputs.items()}
            container: dict[str, Any] = {
                "image": image,
                "command": ["python3", "-m", "argosy.interop.kfp.entry"],
                "args": ["--executor_input", "{{$}}", "--module", impl.module,
                         "--function", impl.function, "--returns", impl.returns,
                         "--types", json.dumps(types)],
            }  # fmt: skip
        elif isinstance(impl, ContainerImplementation):

            def substitute(m: re.Match[str]) -> str:
                group, n, kind = m.groups()
                t = (step.inputs.get(n) if group == "inputs" else step.outputs.get(n)) or TypeSpec(
                    type="any"
                )
                if group == "inputs" and kind == "value":
                    return f"{{{{$.inputs.parameters['{n}']}}}}"
                if group == "inputs" and _is_parameter(t):
                    return f"/tmp/argosy-inputs/{n}"
                if group == "outputs" and _is_parameter(t):
                    return f"{{{{$.outputs.parameters['{n}'].output_file}}}}"
                kind_name = "parameters" if _is_parameter(t) and group == "inputs" else "artifacts"
                if kind_name == "parameters":
                    return f"{{{{$.inputs.parameters['{n}']}}}}"
                return f"{{{{$.{group}.artifacts['{n}'].path}}}}"

            command = [_PLACEHOLDER.sub(substitute, part) for part in impl.command]
            # a parameter read as a file ({{inputs.X.path}}): KFP passes parameters as values,
            # so a shell writes each to /tmp/argosy-inputs/X before the command runs
            as_files = [n for n, t in step.inputs.items() if _is_parameter(t)
                        and any(re.search(r"\{\{\s*inputs\." + n + r"\.path", c) for c in impl.command)]  # fmt: skip
            if as_files:
                script = "mkdir -p /tmp/argosy-inputs"
                for i, n in enumerate(as_files, start=1):
                    script += f' && printf "%s" "${i}" > /tmp/argosy-inputs/{n}'
                script += f' && shift {len(as_files)} && exec "$@"'
                values = [f"{{{{$.inputs.parameters['{n}']}}}}" for n in as_files]
                command = ["sh", "-c", script, "sh", *values, *command]
            container = {"image": impl.image, "command": command}
        else:
            raise _refuse(key, f"a {impl.kind} step")
        r = step.resources
        resources: dict[str, Any] = {"cpuLimit": r.cpu, "resourceCpuLimit": f"{int(r.cpu * 1000)}m"}
        if r.memory:
            resources.update(memoryLimit=r.memory / 1e9, resourceMemoryLimit=str(r.memory))
        if r.gpu:
            resources["accelerator"] = {"count": str(r.gpu), "resourceCount": str(r.gpu),
                                        "type": "nvidia.com/gpu", "resourceType": "nvidia.com/gpu"}  # fmt: skip
        container["resources"] = resources
        if step.env:
            container["env"] = [{"name": k, "value": v} for k, v in step.env.items()]
        return container

    # -- graphs -------------------------------------------------------------------------------
    def types_of(self, dag_key: str, dag: DagSpec) -> dict[str, dict[str, TypeSpec]]:
        """Each node's outputs' types (a mapped node's outputs are lists)."""
        found: dict[str, dict[str, TypeSpec]] = {}
        for node in dag.nodes:
            if node.step is not None:
                outs = dict(self.spec.steps[node.step].outputs)
            else:
                sub = self.spec.pipelines[node.pipeline or ""]
                inner = self.types_of(node.pipeline or "", sub.root)
                outs = {
                    k: inner[r.node][r.output]
                    if isinstance(r, OutputReference)
                    else TypeSpec(type="any")
                    for k, r in sub.root.outputs.items()
                }
            if node.for_each is not None:
                outs = {
                    k: TypeSpec(type="list") if _is_parameter(t) else t for k, t in outs.items()
                }
            found[node.name] = outs
        return found

    def binding(
        self,
        where: str,
        b: InputBinding,
        scope: dict[str, TypeSpec],
        outs: dict[str, dict[str, TypeSpec]],
    ) -> tuple[str, dict[str, Any]]:
        """("parameters" | "artifacts", the KFP input spec) of a binding."""
        if isinstance(b, ConstantInput):
            return "parameters", {"runtimeValue": {"constant": b.constant}}
        if isinstance(b, ParameterInput):
            t = scope.get(b.parameter, TypeSpec(type="any"))
            kind = "parameters" if _is_parameter(t) or t.type == "any" else "artifacts"
            key = "componentInputParameter" if kind == "parameters" else "componentInputArtifact"
            return kind, {key: b.parameter}
        if isinstance(b, TaskOutputInput):
            ref = b.task_output
            t = outs[ref.node][ref.output]
            if _is_parameter(t):
                return "parameters", {"taskOutputParameter": {"producerTask": _kebab(ref.node),
                                                              "outputParameterKey": ref.output}}  # fmt: skip
            return "artifacts", {"taskOutputArtifact": {"producerTask": _kebab(ref.node),
                                                        "outputArtifactKey": ref.output}}  # fmt: skip
        raise _refuse(where, "a one_of input")

    def dag(self, key: str, dag: DagSpec, scope: dict[str, TypeSpec]) -> dict[str, Any]:
        outs = self.types_of(key, dag)
        tasks: dict[str, Any] = {}
        for node in dag.nodes:
            tasks[_kebab(node.name)] = self.task(key, node, scope, outs)
        doc: dict[str, Any] = {"tasks": tasks}
        outputs: dict[str, Any] = {}
        for name, ref in dag.outputs.items():
            if isinstance(ref, OneOfInput):
                raise _refuse(key or "pipeline", "a one_of output")
            t = outs[ref.node][ref.output]
            if _is_parameter(t):
                outputs.setdefault("parameters", {})[name] = {"valueFromParameter": {
                    "producerSubtask": _kebab(ref.node), "outputParameterKey": ref.output}}  # fmt: skip
            else:
                outputs.setdefault("artifacts", {})[name] = {"artifactSelectors": [
                    {"producerSubtask": _kebab(ref.node), "outputArtifactKey": ref.output}]}  # fmt: skip
        if outputs:
            doc["outputs"] = outputs
        return doc

    def task(
        self,
        key: str,
        node: NodeSpec,
        scope: dict[str, TypeSpec],
        outs: dict[str, dict[str, TypeSpec]],
    ) -> dict[str, Any]:
        where = f"{key}/{node.name}" if key else node.name
        if node.exit_handler is not None:
            raise _refuse(where, "an exit handler")
        inputs: dict[str, dict[str, Any]] = {}
        for name, b in node.inputs.items():
            kind, value = self.binding(where, b, scope, outs)
            inputs.setdefault(kind, {})[name] = value
        if node.step is not None:
            component = self.step_component(node.step, set(inputs.get("artifacts", {})))
            step = self.spec.steps[node.step]
            task: dict[str, Any] = {
                "componentRef": {"name": component},
                "taskInfo": {"name": _kebab(node.name)},
            }
            task["cachingOptions"] = {"enableCache": True} if step.cache else {}
            if step.retries:
                task["retryPolicy"] = {"maxRetryCount": step.retries,
                                       "backoffDuration": f"{step.retry_backoff:g}s",
                                       "backoffFactor": 2.0, "backoffMaxDuration": "3600s"}  # fmt: skip
        else:
            sub = self.spec.pipelines[node.pipeline or ""]
            name = f"comp-{_kebab(node.pipeline or '')}"
            if name not in self.components:
                self.components[name] = {}
                inner_scope = {k: TypeSpec(type=p.type) for k, p in sub.parameters.items()}
                body = self.dag(node.pipeline or "", sub.root, inner_scope)
                inner_outs = self.types_of(node.pipeline or "", sub.root)
                out_types = {
                    k: inner_outs[r.node][r.output] for k, r in sub.root.outputs.items()
                    if isinstance(r, OutputReference)
                }  # fmt: skip
                self.components[name] = {"dag": body, **_definitions(sub.parameters, out_types)}
            task = {"componentRef": {"name": name}, "taskInfo": {"name": _kebab(node.name)}}
        if node.after:
            task["dependentTasks"] = sorted({_kebab(a) for a in node.after})
        producers = sorted({
            v[k]["producerTask"] for kind in inputs.values() for v in kind.values()
            for k in ("taskOutputParameter", "taskOutputArtifact") if k in v
        })  # fmt: skip
        if producers:
            task["dependentTasks"] = sorted({*task.get("dependentTasks", []), *producers})
        if inputs:
            task["inputs"] = inputs
        if node.when is not None:
            task.setdefault("triggerPolicy", {})["condition"] = self.condition(
                where, node.when, task, scope, outs
            )
        if node.for_each is not None:
            return self.loop(where, node, task, scope, outs)
        return task

    def condition(
        self, where: str, cond: ConditionSpec, task: dict[str, Any], scope: dict[str, TypeSpec],
        outs: dict[str, dict[str, TypeSpec]],
    ) -> str:  # fmt: skip
        if cond.op is not None:
            sides = []
            for operand in (cond.left, cond.right):
                assert operand is not None
                if isinstance(operand, ConstantInput):
                    sides.append(json.dumps(operand.constant) if not isinstance(operand.constant, str)
                                 else "'" + operand.constant.replace("'", "\\'") + "'")  # fmt: skip
                    continue
                channel = (
                    f"pipelinechannel--cond-{len(task.get('inputs', {}).get('parameters', {}))}"
                )
                kind, value = self.binding(where, operand, scope, outs)
                if kind != "parameters":
                    raise _refuse(where, "a condition on an artifact")
                task.setdefault("inputs", {}).setdefault("parameters", {})[channel] = value
                sides.append(f"inputs.parameter_values['{channel}']")
            if cond.op in ("in", "not in"):
                raise _refuse(where, f"a condition with {cond.op!r}")
            return f"{sides[0]} {cond.op} {sides[1]}"
        if cond.not_ is not None:
            return f"!({self.condition(where, cond.not_, task, scope, outs)})"
        parts = [
            f"({self.condition(where, c, task, scope, outs)})" for c in (cond.all or cond.any or [])
        ]
        return (" && " if cond.all else " || ").join(parts)

    def loop(
        self, where: str, node: NodeSpec, inner: dict[str, Any], scope: dict[str, TypeSpec],
        outs: dict[str, dict[str, TypeSpec]],
    ) -> dict[str, Any]:  # fmt: skip
        """A ``for-loop-N`` DAG running ``inner`` once per item; its outputs are Collected."""
        assert node.for_each is not None
        self.loops += 1
        loop_name = f"comp-for-loop-{self.loops}"
        item = node.for_each.input
        inner_inputs = inner.pop("inputs", {})
        loop_inputs: dict[str, dict[str, Any]] = {}
        body_inputs: dict[str, dict[str, Any]] = {}
        loop_params: dict[str, Any] = {}
        for kind, entries in inner_inputs.items():
            for name, value in entries.items():
                channel = f"pipelinechannel--{name}"
                loop_inputs.setdefault(kind, {})[channel] = value
                key = (
                    "componentInputParameter" if kind == "parameters" else "componentInputArtifact"
                )
                body_inputs.setdefault(kind, {})[name] = {key: channel}
                if kind == "parameters":
                    loop_params[channel] = {"parameterType": "STRING"}
        body_inputs.setdefault("parameters", {})[item] = {
            "componentInputParameter": f"pipelinechannel--{item}-loop-item"
        }
        loop_params[f"pipelinechannel--{item}-loop-item"] = {"parameterType": "STRING"}
        iterator: dict[str, Any] = {"itemInput": f"pipelinechannel--{item}-loop-item"}
        items = node.for_each.items
        if isinstance(items, ConstantInput):
            iterator["items"] = {"raw": json.dumps(items.constant)}
        else:
            kind, value = self.binding(where, items, scope, outs)
            loop_inputs.setdefault("parameters", {})[f"pipelinechannel--{item}-items"] = value
            loop_params[f"pipelinechannel--{item}-items"] = {"parameterType": "LIST"}
            iterator["items"] = {"inputParameter": f"pipelinechannel--{item}-items"}
        inner["inputs"] = body_inputs
        inner.pop("dependentTasks", None)
        body_name = _kebab(node.name)
        element_types = (
            dict(self.spec.steps[node.step].outputs) if node.step is not None
            else {k: TypeSpec(type="any") for k in self.spec.pipelines[node.pipeline or ""].root.outputs}
        )  # fmt: skip
        dag_outputs: dict[str, Any] = {}
        out_defs: dict[str, Any] = {}
        for name, t in element_types.items():
            if _is_parameter(t) or t.type == "any":
                dag_outputs.setdefault("parameters", {})[name] = {"valueFromParameter": {
                    "producerSubtask": body_name, "outputParameterKey": name}}  # fmt: skip
                out_defs.setdefault("parameters", {})[name] = {"parameterType": "LIST"}
            else:
                dag_outputs.setdefault("artifacts", {})[name] = {"artifactSelectors": [
                    {"producerSubtask": body_name, "outputArtifactKey": name}]}  # fmt: skip
                out_defs.setdefault("artifacts", {})[name] = {
                    "artifactType": _artifact_type(t),
                    "isArtifactList": True,
                }
        body: dict[str, Any] = {"tasks": {body_name: inner}}
        if dag_outputs:
            body["outputs"] = dag_outputs
        component: dict[str, Any] = {"dag": body, "inputDefinitions": {"parameters": loop_params}}
        if any("artifacts" in v for v in loop_inputs.values()) or "artifacts" in loop_inputs:
            component["inputDefinitions"]["artifacts"] = {
                n: {"artifactType": {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}}
                for n in loop_inputs.get("artifacts", {})
            }
        if out_defs:
            component["outputDefinitions"] = out_defs
        self.components[loop_name] = component
        task: dict[str, Any] = {
            "componentRef": {"name": loop_name},
            "parameterIterator": iterator,
            "taskInfo": {"name": body_name},
        }
        if node.for_each.parallelism:
            task["iteratorPolicy"] = {"parallelismLimit": node.for_each.parallelism}
        deps = sorted({
            v[k]["producerTask"] for entries in loop_inputs.values() for v in entries.values()
            for k in ("taskOutputParameter", "taskOutputArtifact") if k in v
        } | set(inner.get("dependentTasks", [])))  # fmt: skip
        if node.after:
            deps = sorted({*deps, *(_kebab(a) for a in node.after)})
        if deps:
            task["dependentTasks"] = deps
        if loop_inputs:
            task["inputs"] = loop_inputs
        if "triggerPolicy" in inner:
            raise _refuse(where, "a condition on a mapped node")
        return task

    def run(self) -> list[dict[str, Any]]:
        for name, p in self.spec.parameters.items():
            if p.type == "path":
                raise _refuse(f"parameter {name!r}", "a Path parameter")
        scope = {k: TypeSpec(type=p.type) for k, p in self.spec.parameters.items()}
        root_dag = self.dag("", self.spec.root, scope)
        outs = self.types_of("", self.spec.root)
        out_types = {
            k: outs[r.node][r.output] for k, r in self.spec.root.outputs.items()
            if isinstance(r, OutputReference)
        }  # fmt: skip
        root = {"dag": root_dag, **_definitions(self.spec.parameters, out_types)}
        doc = {
            "components": dict(sorted(self.components.items())),
            "deploymentSpec": {"executors": dict(sorted(self.executors.items()))},
            "pipelineInfo": {"name": _kebab(self.spec.name)},
            "root": root,
            "schemaVersion": "2.1.0",
            "sdkVersion": SDK_VERSION,
        }
        documents = [doc]
        if self.k8s:
            documents.append(
                {"platforms": {"kubernetes": {"deploymentSpec": {"executors": self.k8s}}}}
            )
        return documents


def pipeline_spec(spec: PipelineSpec, *, image: str | None) -> list[dict[str, Any]]:
    """The KFP IR documents of ``spec``: the PipelineSpec, and the PlatformSpec if needed."""
    return _Exporter(spec, image).run()


def to_yaml(documents: list[dict[str, Any]]) -> str:
    import yaml

    header = f"# PIPELINE DEFINITION\n# Name: {documents[0]['pipelineInfo']['name']}\n"
    return header + "\n---\n".join(yaml.safe_dump(d, sort_keys=True) for d in documents)
