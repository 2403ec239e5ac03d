"""KFP IR → an Argosy pipeline spec, run by Argosy's engine like any other.

The mapping (docs/kubeflow.md has the full table):

* a leaf task → a node calling its own step with a ``kfp`` implementation (the executor as
  compiled, the component's definitions, what the task adds); the launcher runs it through the
  KFP executor contract (:mod:`.task`);
* a task running a ``dag`` component → a node calling a sub-pipeline (nested pipelines,
  condition, loop and exit-handler bodies alike);
* ``triggerPolicy.condition`` → ``when`` (:mod:`.cel`); ``parameterIterator`` /
  ``artifactIterator`` → ``for_each`` with ``iteratorPolicy.parallelismLimit`` (its outputs are
  the Collected lists); ``valueFromOneof`` and several ``artifactSelectors`` → ``one_of``;
  ``strategy: ALL_UPSTREAM_TASKS_COMPLETED`` → an exit handler over ``dependentTasks``;
* ``dependentTasks`` → ``after``, and every producer named in the inputs is an upstream too
  (the compiler leaves some out of ``dependentTasks``);
* ``cachingOptions`` (``{}`` is off), ``retryPolicy``, executor ``resources`` and ``env``, and
  the Kubernetes platform spec where Argosy has an equivalent (node pool, tenant secrets) →
  the step's options; everything else is named once in :attr:`Imported.notes`.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import argosy
from argosy.errors import PipelineDefinitionError, UsageError
from argosy.interop.kfp import cel
from argosy.interop.kfp.ir import (
    CONTAINER,
    CONTRACT_VERSION,
    FINAL_STATUS,
    PARAMETER_TYPES,
    KfpFileError,
    cast,
    digest,
    executor_kind,
    read_ir,
)
from argosy.spec.compile import CompiledPipeline
from argosy.spec.models import (
    ConstantInput,
    DagSpec,
    ExitHandlerSpec,
    ForEachSpec,
    InputBinding,
    InputSpec,
    KfpImplementation,
    NodeSpec,
    OneOfInput,
    Operand,
    OutputReference,
    ParameterInput,
    ParameterSpec,
    PipelineSpec,
    Provenance,
    Resources,
    StepSpec,
    SubPipelineSpec,
    TaskOutputInput,
    TypeSpec,
)
from argosy.spec.validate import validate_spec
from argosy.units import parse_memory

# where a container component runs: "engine" (podman/docker) or "host" (its argv, here)
CONTAINERS_ENV = "ARGOSY_KFP_CONTAINERS"
_PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")
# nodeSelector labels that name a node pool; their value becomes the step's pool
POOL_LABELS = ("argosy.dev/pool", "karpenter.sh/nodepool", "cloud.google.com/gke-nodepool",
               "eks.amazonaws.com/nodegroup")  # fmt: skip


_IGNORED = {
    "nodeSelector": "only a constant label "
    + ", ".join(POOL_LABELS)
    + " maps (to the step's node pool)",
    "secretAsEnv": "only constant secret names map (each envVar to the tenant secret of that name)",
}


@dataclass
class Imported:
    """A KFP pipeline as an Argosy spec, and what of it Argosy does not apply (one line each)."""

    compiled: CompiledPipeline
    notes: list[str] = field(default_factory=list)


def _seconds(duration: Any) -> float:
    """A proto Duration (``"30s"``, ``"1.5s"``) in seconds."""
    text = str(duration or "0s").strip()
    return float(text[:-1]) if text.endswith("s") else float(text)


def _cpu(value: Any) -> float | None:
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


class _Importer:
    def __init__(self, ir: dict[str, Any], platform: dict[str, Any], source: str, on_host: bool):
        self.ir = ir
        self.source = source
        self.on_host = on_host
        self.name = str(ir["pipelineInfo"]["name"])
        self.components: dict[str, Any] = ir.get("components") or {}
        self.executors: dict[str, Any] = (ir.get("deploymentSpec") or {}).get("executors") or {}
        kubernetes = (platform.get("platforms") or {}).get("kubernetes") or {}
        self.k8s: dict[str, Any] = (kubernetes.get("deploymentSpec") or {}).get("executors") or {}
        self.pipeline_config: dict[str, Any] = kubernetes.get("pipelineConfig") or {}
        self.steps: dict[str, StepSpec] = {}
        self.pipelines: dict[str, SubPipelineSpec] = {}
        self.notes: list[str] = []
        self._noted: set[str] = set()

    def note(self, key: str, text: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.notes.append(text)

    def fail(self, where: str, why: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(f"{self.source}: {where}: {why}")

    # -- the whole pipeline -------------------------------------------------------------------
    def run(self) -> PipelineSpec:
        root = self.ir["root"]
        if "dag" not in root:
            raise self.fail("root", "the root component has no dag; compile a @dsl.pipeline")
        parameters = self.parameters(root, top=True)
        dag = self.dag("", root)
        for key in sorted(self.pipeline_config):
            self.note(
                f"pipelineConfig.{key}",
                f"platform spec pipelineConfig.{key} is ignored: Argosy passes artifacts "
                "between tasks through its artifact store ({{$.workspace_path}} is a folder "
                "of the run on the task's machine)",
            )
        known = {self.executor_label(c) for c in self.components.values()}
        for label in sorted(set(self.k8s) - known):
            self.note(f"k8s:{label}", f"platform spec for unknown executor {label!r} is ignored")
        return PipelineSpec(
            name=self.name,
            parameters=parameters,
            steps=self.steps,
            root=dag,
            pipelines=self.pipelines,
            provenance=Provenance(
                compiled_at=datetime.now(UTC).isoformat(),
                compiled_by=getpass.getuser(),
                argosy_version=argosy.__version__,
                source_file=self.source,
            ),
        )

    @staticmethod
    def executor_label(component: Any) -> str:
        return str(component.get("executorLabel", "")) if isinstance(component, dict) else ""

    def parameters(self, component: dict[str, Any], *, top: bool) -> dict[str, ParameterSpec]:
        """A (sub-)pipeline's inputs: typed at the top (``-p`` values are parsed by type)."""
        defs = component.get("inputDefinitions") or {}
        found: dict[str, ParameterSpec] = {}
        for name, p in (defs.get("parameters") or {}).items():
            kfp_type = p.get("parameterType")
            has_default = "defaultValue" in p
            optional = bool(p.get("isOptional")) or has_default
            found[name] = ParameterSpec(
                type=PARAMETER_TYPES.get(kfp_type, "any") if top else "any",
                optional=optional and not has_default,
                required=not optional,
                default=cast(p.get("defaultValue"), kfp_type),
            )
        for name, a in (defs.get("artifacts") or {}).items():
            optional = bool(a.get("isOptional"))
            found[name] = ParameterSpec(type="any", optional=optional, required=not optional)
        return found

    # -- graphs -------------------------------------------------------------------------------
    def dag(self, key: str, component: dict[str, Any]) -> DagSpec:
        dag = component["dag"]
        tasks: dict[str, Any] = dag.get("tasks") or {}
        nodes = [self.node(key, name, task) for name, task in tasks.items()]
        outputs: dict[str, OutputReference | OneOfInput] = {}
        declared = component.get("outputDefinitions") or {}
        for name, out in ((dag.get("outputs") or {}).get("parameters") or {}).items():
            if "valueFromParameter" in out:
                src = out["valueFromParameter"]
                outputs[name] = OutputReference(
                    node=src["producerSubtask"], output=src["outputParameterKey"]
                )
            elif "valueFromOneof" in out:
                selectors = out["valueFromOneof"].get("parameterSelectors") or []
                outputs[name] = OneOfInput(
                    one_of=[
                        OutputReference(node=s["producerSubtask"], output=s["outputParameterKey"])
                        for s in selectors
                    ]
                )
        for name, out in ((dag.get("outputs") or {}).get("artifacts") or {}).items():
            refs = [
                OutputReference(node=s["producerSubtask"], output=s["outputArtifactKey"])
                for s in out.get("artifactSelectors") or []
            ]
            if len(refs) == 1:
                outputs[name] = refs[0]
            elif refs:
                outputs[name] = OneOfInput(one_of=refs)
        missing = [
            n for kind in ("parameters", "artifacts") for n in declared.get(kind) or {}
            if n not in outputs
        ]  # fmt: skip
        if missing:
            raise self.fail(key or "root", f"output {missing[0]!r} is declared but not wired")
        return DagSpec(nodes=nodes, outputs=outputs)

    def sub_pipeline(self, component_name: str) -> str:
        key = component_name.removeprefix("comp-")
        if key not in self.pipelines:
            component = self.components[component_name]
            self.pipelines[key] = SubPipelineSpec(name=key, parameters={}, root=DagSpec(nodes=[]))
            self.pipelines[key] = SubPipelineSpec(
                name=key,
                parameters=self.parameters(component, top=False),
                root=self.dag(key, component),
            )
        return key

    def node(self, key: str, name: str, task: dict[str, Any]) -> NodeSpec:
        where = f"{key}/{name}" if key else name
        component_name = task["componentRef"]["name"]
        component = self.components.get(component_name)
        if component is None:
            raise self.fail(where, f"component {component_name!r} is not in the file")
        declared = component.get("inputDefinitions") or {}
        param_types = {
            n: str(p.get("parameterType", ""))
            for n, p in (declared.get("parameters") or {}).items()
        }
        inputs: dict[str, InputBinding] = {}
        selectors: dict[str, str] = {}
        templated: list[str] = []
        status_input: str | None = None
        task_inputs = task.get("inputs") or {}
        for input_name, b in (task_inputs.get("parameters") or {}).items():
            if "taskFinalStatus" in b:
                status_input = input_name
                continue
            if "parameterExpressionSelector" in b:
                selectors[input_name] = str(b["parameterExpressionSelector"])
            if "runtimeValue" in b:
                value = (b["runtimeValue"] or {}).get("constant")
                value = cast(value, param_types.get(input_name))
                if isinstance(value, str) and _PLACEHOLDER.search(value):
                    templated.append(input_name)
                inputs[input_name] = ConstantInput(constant=value)
            elif "componentInputParameter" in b:
                inputs[input_name] = ParameterInput(parameter=b["componentInputParameter"])
            elif "taskOutputParameter" in b:
                src = b["taskOutputParameter"]
                inputs[input_name] = TaskOutputInput(
                    task_output=OutputReference(
                        node=src["producerTask"], output=src["outputParameterKey"]
                    )
                )
            else:
                raise self.fail(where, f"input {input_name!r} has an unknown source {sorted(b)}")
        for input_name, b in (task_inputs.get("artifacts") or {}).items():
            if "componentInputArtifact" in b:
                inputs[input_name] = ParameterInput(parameter=b["componentInputArtifact"])
            elif "taskOutputArtifact" in b:
                src = b["taskOutputArtifact"]
                inputs[input_name] = TaskOutputInput(
                    task_output=OutputReference(
                        node=src["producerTask"], output=src["outputArtifactKey"]
                    )
                )
            else:
                raise self.fail(where, f"artifact input {input_name!r} has an unknown source")

        trigger = task.get("triggerPolicy") or {}
        when = None
        if trigger.get("condition"):
            operands: dict[str, Operand] = {
                k: v for k, v in inputs.items() if not isinstance(v, OneOfInput)
            }
            if selectors:
                raise self.fail(where, "a condition task with input selectors is not supported")
            try:
                when = cel.parse_condition(str(trigger["condition"]), operands, param_types)
            except cel.ConditionError as exc:
                raise self.fail(where, str(exc)) from None
        depends = [str(d) for d in task.get("dependentTasks") or []]
        exit_handler = None
        if trigger.get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED":
            exit_handler = ExitHandlerSpec(group=depends, status_input=status_input or FINAL_STATUS)
        elif status_input is not None:
            raise self.fail(where, "a task final status input outside an exit handler")

        for_each = None
        pipeline = step = None
        if "dag" in component:
            if selectors:
                raise self.fail(where, "input selectors on a sub-DAG task are not supported")
            pipeline = self.sub_pipeline(component_name)
            for_each = self.iterator(where, task, inputs)
        else:
            if "parameterIterator" in task or "artifactIterator" in task:
                raise self.fail(where, "a loop over a leaf component (no dag) is not supported")
            step = self.step(
                key, name, task, component, inputs, selectors, templated, status_input,
                exit_handler is not None,
            )  # fmt: skip
        return NodeSpec(
            name=name,
            step=step,
            pipeline=pipeline,
            inputs=inputs,
            after=depends if exit_handler is None else [],
            when=when,
            for_each=for_each,
            exit_handler=exit_handler,
        )

    def iterator(
        self, where: str, task: dict[str, Any], inputs: dict[str, InputBinding]
    ) -> ForEachSpec | None:
        if "parameterIterator" in task:
            it = task["parameterIterator"]
            items = it.get("items") or {}
            if "raw" in items:
                raw = items["raw"]
                binding: InputBinding = ConstantInput(
                    constant=cast(json.loads(raw) if isinstance(raw, str) else raw, "LIST")
                )
            elif "inputParameter" in items:
                binding = inputs[items["inputParameter"]]
            else:
                raise self.fail(where, f"loop items {sorted(items)} are not supported")
        elif "artifactIterator" in task:
            it = task["artifactIterator"]
            binding = inputs[(it.get("items") or {})["inputArtifact"]]
        else:
            return None
        limit = int((task.get("iteratorPolicy") or {}).get("parallelismLimit") or 0)
        if isinstance(binding, OneOfInput):
            raise self.fail(where, "a loop over a OneOf value is not supported")
        return ForEachSpec(input=it["itemInput"], items=binding, parallelism=limit or None)

    # -- leaf steps ---------------------------------------------------------------------------
    def step(
        self,
        key: str,
        name: str,
        task: dict[str, Any],
        component: dict[str, Any],
        inputs: dict[str, InputBinding],
        selectors: dict[str, str],
        templated: list[str],
        status_input: str | None,
        exit_handler: bool,
    ) -> str:
        where = f"{key}/{name}" if key else name
        label = str(component.get("executorLabel", ""))
        executor = self.executors.get(label)
        if executor is None:
            raise self.fail(where, f"executor {label!r} is not in deploymentSpec")
        kind = executor_kind(executor)
        declared = component.get("inputDefinitions") or {}
        step_inputs: dict[str, InputSpec] = {}
        for input_name, p in (declared.get("parameters") or {}).items():
            has_default = "defaultValue" in p
            step_inputs[input_name] = InputSpec(
                type="any",
                required=not (p.get("isOptional") or has_default) and input_name != status_input,
                default=cast(p.get("defaultValue"), p.get("parameterType")),
            )
        for input_name, a in (declared.get("artifacts") or {}).items():
            step_inputs[input_name] = InputSpec(type="any", required=not a.get("isOptional"))
        for extra in inputs:  # pipelinechannel--* inputs the component does not declare
            step_inputs.setdefault(extra, InputSpec(type="any", required=False))
        if exit_handler and status_input is None:  # Argosy hands every exit handler a status
            step_inputs[FINAL_STATUS] = InputSpec(type="any", required=False)
        outputs_declared = component.get("outputDefinitions") or {}
        outputs = {
            n: TypeSpec(type=PARAMETER_TYPES.get(p.get("parameterType"), "any"))
            for n, p in (outputs_declared.get("parameters") or {}).items()
        }
        outputs.update({n: TypeSpec(type="path") for n in outputs_declared.get("artifacts") or {}})
        task_info = {
            "name": str((task.get("taskInfo") or {}).get("name") or name),
            "pipeline": self.name,
            "kind": kind,
        }
        if selectors:
            task_info["selectors"] = selectors  # type: ignore[assignment]
        if templated:
            task_info["templated"] = templated  # type: ignore[assignment]
        if status_input:
            task_info["status_input"] = status_input
        if kind == CONTAINER and self.on_host:
            task_info["on_host"] = True  # type: ignore[assignment]
        definitions: dict[str, Any] = {
            k: component[k] for k in ("inputDefinitions", "outputDefinitions") if k in component
        }
        impl = KfpImplementation(
            executor=executor,
            component=definitions,
            task=task_info,  # type: ignore[arg-type]
            code_fingerprint={"kfp": digest([executor, definitions, task_info])},
            packages={"argosy-kfp-contract": CONTRACT_VERSION},
        )
        container = executor.get("container") or {}
        caching = task.get("cachingOptions")
        retry = task.get("retryPolicy") or {}
        step_key = f"{key}.{name}" if key else name
        resources, env, secrets = self.options(where, label, container)
        self.steps[step_key] = StepSpec(
            name=step_key,
            implementation=impl,
            inputs=step_inputs,
            outputs=outputs,
            resources=resources,
            retries=int(retry.get("maxRetryCount") or 0),
            retry_backoff=_seconds(retry.get("backoffDuration")),
            cache=bool((caching or {}).get("enableCache", False)) if caching is not None else True,
            env=env,
            secrets=secrets,
        )
        if retry and float(retry.get("backoffFactor", 2.0) or 2.0) != 2.0:
            self.note(
                "retryPolicy.backoffFactor",
                "retryPolicy.backoffFactor is not applied: Argosy doubles the backoff after each "
                "failed attempt (backoffDuration is the first wait)",
            )
        if retry.get("backoffMaxDuration") not in (None, "3600s"):
            self.note("retryPolicy.backoffMaxDuration", "retryPolicy.backoffMaxDuration is ignored")
        if (caching or {}).get("cacheKey"):
            self.note("cachingOptions.cacheKey", "cachingOptions.cacheKey is ignored: Argosy "
                      "keys its cache by code, inputs and environment")  # fmt: skip
        return step_key

    def options(
        self, where: str, label: str, container: dict[str, Any]
    ) -> tuple[Resources, dict[str, str], list[str]]:
        """Resources, environment and secrets of an executor (and its platform spec)."""
        r = container.get("resources") or {}
        cpu = memory = None
        gpu = 0
        pool = None

        def fixed(field_name: str) -> Any:
            value = r.get(field_name)
            if isinstance(value, str) and _PLACEHOLDER.search(value):
                self.note(
                    f"resources.{field_name}",
                    f"resources.{field_name} set from a pipeline input is not applied: Argosy "
                    "fixes a step's resources when the pipeline is imported",
                )
                return None
            return value

        cpu_text = fixed("resourceCpuRequest") or fixed("resourceCpuLimit")
        if cpu_text is not None:
            cpu = _cpu(cpu_text)
        elif r.get("cpuRequest") or r.get("cpuLimit"):
            cpu = float(r.get("cpuRequest") or r["cpuLimit"])
        memory_text = fixed("resourceMemoryLimit") or fixed("resourceMemoryRequest")
        if memory_text is not None:
            memory = parse_memory(str(memory_text))
        elif r.get("memoryLimit") or r.get("memoryRequest"):
            memory = int(float(r.get("memoryLimit") or r["memoryRequest"]) * 1e9)
        accelerator = r.get("accelerator") or {}
        count = accelerator.get("resourceCount") or accelerator.get("count")
        if isinstance(count, str) and _PLACEHOLDER.search(count):
            self.note("resources.accelerator", "resources.accelerator set from a pipeline input "
                      "is not applied: Argosy fixes a step's resources when it is imported")  # fmt: skip
        elif count:
            gpu = int(float(count))
            kind = accelerator.get("resourceType") or accelerator.get("type")
            if kind and not _PLACEHOLDER.search(str(kind)):
                self.note("resources.accelerator.type", f"resources.accelerator.type ({kind}) "
                          "is not applied: Argosy asks for a GPU count; pick the GPU kind "
                          "with a node pool")  # fmt: skip
        env = {str(e["name"]): str(e.get("value", "")) for e in container.get("env") or []}
        secrets: list[str] = []
        for field_name, value in sorted((self.k8s.get(label) or {}).items()):
            if field_name == "nodeSelector" and isinstance(value, dict) and value.get("labels"):
                labels = value["labels"]
                found = [labels[k] for k in POOL_LABELS if k in labels]
                if found:
                    pool = str(found[0])
                    continue
            if field_name == "secretAsEnv" and all(s.get("secretName") for s in value):
                for s in value:
                    secrets.extend(str(k["envVar"]) for k in s.get("keyToEnv") or [])
                self.note("secretAsEnv", "platform spec secretAsEnv: each envVar gets the "
                          "tenant secret of that name (argosy secrets set ENVVAR); the "
                          "Kubernetes secret name and key are not used")  # fmt: skip
                continue
            self.note(
                f"k8s.{field_name}",
                f"platform spec {field_name} is ignored (first at executor {label}): "
                + _IGNORED.get(field_name, "Argosy has no equivalent"),
            )
        defaults = Resources()
        return (
            Resources(
                cpu=cpu if cpu is not None else defaults.cpu,
                memory=memory,
                gpu=gpu,
                pool=pool,
            ),
            env,
            secrets,
        )


def import_ir(text: str, *, source: str, on_host: bool | None = None) -> Imported:
    """Translate KFP IR text into a validated Argosy spec (plus what it ignores)."""
    if on_host is None:
        chosen = os.environ.get(CONTAINERS_ENV, "engine").strip().lower()
        if chosen not in ("engine", "host"):
            raise UsageError(f"{CONTAINERS_ENV}={chosen!r}: use 'engine' (podman/docker) or 'host'")
        on_host = chosen == "host"
    ir, platform = read_ir(text, source)
    importer = _Importer(ir, platform, source, on_host)
    spec = importer.run()
    validate_spec(spec)
    return Imported(CompiledPipeline(spec), importer.notes)


def load_file(path: Path, *, on_host: bool | None = None) -> Imported:
    """Import a KFP IR file (``argosy run pipeline.yaml``)."""
    if not path.is_file():
        raise UsageError(
            f"pipeline file {str(path)!r} not found; check the path (relative to {Path.cwd()})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KfpFileError(f"cannot read {path}: {exc}") from None
    return import_ir(text, source=str(path), on_host=on_host)
