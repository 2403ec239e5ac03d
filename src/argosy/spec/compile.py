"""Compile a traced pipeline (:class:`PipelineGraph`) into a :class:`PipelineSpec`.

Compilation snapshots the project's code into a code package and fingerprints the
environment; both are returned as blobs for the caller to store beside the spec.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import argosy
from argosy.errors import PipelineDefinitionError, ValidationError
from argosy.sdk.graph import (
    AllOf,
    AnyOf,
    Binding,
    Comparison,
    Condition,
    Negation,
    OneOfRef,
    OutputRef,
    ParameterRef,
    PipelineGraph,
    _Handle,
)
from argosy.sdk.pipeline import Pipeline
from argosy.sdk.step import ContainerStep, Step
from argosy.spec import code_package, environment, fingerprint
from argosy.spec.compiled import CompiledPipeline as CompiledPipeline  # re-exported
from argosy.spec.compiled import git_state
from argosy.spec.loader import module_name_for
from argosy.spec.models import (
    CodePackage,
    ConditionSpec,
    ConstantInput,
    ContainerImplementation,
    DagSpec,
    ExitHandlerSpec,
    ForEachSpec,
    InputBinding,
    InputSpec,
    NodeSpec,
    OneOfInput,
    OutputReference,
    ParameterInput,
    ParameterSpec,
    PipelineSpec,
    Provenance,
    PythonImplementation,
    Resources,
    StepSpec,
    SubPipelineSpec,
    TaskOutputInput,
    TypeSpec,
)
from argosy.spec.validate import validate_spec


def _binding(b: Binding) -> InputBinding:
    if b.one_of is not None:
        return OneOfInput(
            one_of=[OutputReference(node=r.node.path, output=r.output) for r in b.one_of]
        )
    if b.output is not None:
        return TaskOutputInput(
            task_output=OutputReference(node=b.output.node.path, output=b.output.output)
        )
    if b.parameter is not None:
        return ParameterInput(parameter=b.parameter)
    return ConstantInput(constant=b.constant)


def _step_spec(step: Step, impl: PythonImplementation | ContainerImplementation) -> StepSpec:
    opts = step.config
    return StepSpec(
        name=step.name,
        implementation=impl,
        inputs={
            k: InputSpec(
                **d.type.to_json(),
                required=d.required,
                default=None if d.required else d.default,
            )
            for k, d in step.inputs.items()
        },
        outputs={k: TypeSpec(**t.to_json()) for k, t in step.outputs.items()},
        resources=Resources(cpu=opts.cpu, memory=opts.memory, gpu=opts.gpu, pool=opts.pool),
        retries=opts.retries,
        retry_backoff=opts.retry_backoff,
        timeout=opts.timeout,
        cache=opts.cache,
        cache_version=opts.cache_version,
        cache_ttl=opts.cache_ttl,
        env=dict(opts.env),
        secrets=list(opts.secrets),
    )


def _origin(step: Step) -> object:
    """What a step is, whatever options it is called with: its function, or image+command."""
    if isinstance(step, ContainerStep):
        return (step.image, tuple(step.command))
    return step.func


_FORMAT_MODULES = {"parquet": "pyarrow", "npy": "numpy", "joblib": "joblib"}


def _format_modules(step: Step) -> set[str]:
    """Top-level modules that store a step's typed inputs and outputs (part of its packages)."""
    types = [*step.outputs.values(), *(d.type for d in step.inputs.values())]
    found = {t.ref.split(".")[0] for t in types if "." in t.ref}
    found |= {_FORMAT_MODULES[t.format] for t in types if t.format in _FORMAT_MODULES}
    return found


class _Compiler:
    """Compiles a traced graph (and the sub-pipeline graphs it calls) into one spec."""

    def __init__(self, graph: PipelineGraph, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self.blobs: dict[str, bytes] = {}
        self.code: dict[str, CodePackage] = {}
        self.steps: dict[str, StepSpec] = {}
        self.pipelines: dict[str, SubPipelineSpec] = {}
        self.locations: dict[str, str] = {}
        self.origins: dict[str, object] = {}
        self.env_digest: str | None = None
        self.package: code_package.BuiltPackage | None = None
        self.source = Path(graph.file).resolve() if graph.file else None

    def implementation(self, s: Step) -> PythonImplementation | ContainerImplementation:
        if isinstance(s, ContainerStep):
            return ContainerImplementation(
                image=s.image, command=s.command, network=getattr(s, "network", False)
            )
        if self.env_digest is None:
            manifest = environment.environment_manifest(self.cache_dir)
            raw = environment.manifest_bytes(manifest)
            self.env_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            self.blobs[self.env_digest] = raw
        requirements = self._requirements(s)
        env_digest = self.env_digest
        if requirements:  # the step's own environment: the base manifest and its packages
            manifest = environment.environment_manifest(self.cache_dir)
            raw = environment.manifest_bytes({**manifest, "requirements": list(requirements)})
            env_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            self.blobs[env_digest] = raw
        if self.package is None:
            anchor = self.source or Path(sys.modules[s.module].__file__ or "").resolve()
            root = code_package.project_root(anchor)
            _, entry = module_name_for(anchor)
            self.package = code_package.build_package(root, [entry])
            self.blobs["sha256:" + self.package.sha256] = self.package.data
            self.code["sha256:" + self.package.sha256] = CodePackage(
                paths=self.package.paths, size=len(self.package.data)
            )
        fp = fingerprint.step_fingerprint(s.func, self.package.root, _format_modules(s))
        return PythonImplementation(
            code_fingerprint=fp.code,
            packages=fp.packages,
            module=_importable(s.module),
            function=s.qualname,
            code="sha256:" + self.package.sha256,
            environment=env_digest,
            python=platform.python_version(),
            returns="fields" if s.multi_output else ("single" if s.outputs else "none"),
            requirements=list(requirements),
            image=getattr(s.config, "image", None),
        )

    def _requirements(self, s: Step) -> tuple[str, ...]:
        """The step's packages, else the project's default (``argosy.toml``); none for a
        step in an image (its packages are the image's)."""
        if getattr(s.config, "image", None):
            return ()
        own = getattr(s.config, "packages", None)
        if own is not None:
            return tuple(own)
        return environment.project_packages(self.source)

    def step_key(self, s: Step, where: str, location: str) -> str:
        """The key of this step (with these options) in ``spec.steps``."""
        step_spec = _step_spec(s, self.implementation(s))
        existing = self.steps.get(s.name)
        key = s.name
        if existing is not None and existing != step_spec:
            if self.origins[s.name] != _origin(s):
                raise ValidationError(
                    "check_step_names",
                    f"two different steps are named {s.name!r} (defined at "
                    f"{self.locations.get(f'step:{s.name}', '?')} "
                    f"and {s.location}); rename one with @step(name=...)",
                    where=where,
                    location=location,
                )
            # the same step called with other options (.options(cpu=...)): its own variant
            key = next((k for k, v in self.steps.items() if v == step_spec), f"{s.name}@{where}")
        self.origins.setdefault(s.name, _origin(s))
        self.steps[key] = step_spec
        self.locations.setdefault(f"step:{key}", s.location)
        return key

    def pipeline_key(self, graph: PipelineGraph, where: str) -> str:
        sub = SubPipelineSpec(
            name=graph.name,
            parameters=_parameters(graph),
            root=self.dag(graph, prefix=f"{graph.name}:"),
        )
        existing = self.pipelines.get(graph.name)
        if existing is not None and existing != sub:
            raise ValidationError(
                "check_pipeline_names",
                f"two different pipelines are named {graph.name!r}; rename one with "
                "@pipeline(name=...)",
                where=where,
                location=graph.location,
            )
        self.pipelines[graph.name] = sub
        self.locations.setdefault(f"pipeline:{graph.name}", graph.location)
        return graph.name

    def dag(self, graph: PipelineGraph, prefix: str = "") -> DagSpec:
        nodes = []
        for n in graph.nodes:
            self.locations.setdefault(prefix + n.path, n.location)
            node = NodeSpec(
                name=n.path,
                step=self.step_key(n.step, n.path, n.location) if n.step is not None else None,
                pipeline=self.pipeline_key(n.subgraph, n.path) if n.subgraph is not None else None,
                inputs={k: _binding(b) for k, b in n.inputs.items()},
                after=list(n.after),
                when=_condition(n.when) if n.when is not None else None,
                for_each=ForEachSpec(
                    input=n.for_each.input,
                    items=_binding(n.for_each.items),
                    parallelism=n.for_each.parallelism,
                )
                if n.for_each is not None
                else None,
                exit_handler=ExitHandlerSpec(group=n.exit_group, status_input=n.status_input)
                if n.exit_group is not None
                else None,
            )
            nodes.append(node)
        return DagSpec(nodes=nodes, outputs={k: _output(r) for k, r in graph.outputs.items()})


def _parameters(graph: PipelineGraph) -> dict[str, ParameterSpec]:
    return {
        k: ParameterSpec(**t.to_json(), required=req, default=default)
        for k, (t, default, req) in graph.parameters.items()
    }


def _output(ref: OutputRef | OneOfRef) -> OutputReference | OneOfInput:
    if isinstance(ref, OneOfRef):
        return OneOfInput(
            one_of=[OutputReference(node=r.node.path, output=r.output) for r in ref.refs]
        )
    return OutputReference(node=ref.node.path, output=ref.output)


def _operand(value: Any) -> ConstantInput | ParameterInput | TaskOutputInput:
    if isinstance(value, OutputRef):
        return TaskOutputInput(
            task_output=OutputReference(node=value.node.path, output=value.output)
        )
    if isinstance(value, ParameterRef):
        return ParameterInput(parameter=value.name)
    if isinstance(value, _Handle):
        raise PipelineDefinitionError(f"{value!r} cannot be used in a condition; use a step output")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise PipelineDefinitionError(
            f"a condition compares with {value!r}, which is not JSON data; compare with numbers, "
            "strings, booleans or lists"
        ) from None
    return ConstantInput(constant=value)


def _condition(c: Condition) -> ConditionSpec:
    if isinstance(c, Comparison):
        return ConditionSpec(op=c.op, left=_operand(c.left), right=_operand(c.right))  # type: ignore[arg-type]
    if isinstance(c, AllOf):
        return ConditionSpec(all=[_condition(p) for p in c.parts])
    if isinstance(c, AnyOf):
        return ConditionSpec(any=[_condition(p) for p in c.parts])
    assert isinstance(c, Negation)
    return ConditionSpec.model_validate({"not": _condition(c.part)})


def compile_graph(graph: PipelineGraph, *, cache_dir: Path | None = None) -> CompiledPipeline:
    """Turn a traced graph into a validated spec, packaging the code its Python steps import."""
    c = _Compiler(graph, cache_dir)
    root = c.dag(graph)
    source = c.source
    commit, dirty, diff_sha = git_state(
        c.package.root if c.package else (source.parent if source else Path.cwd())
    )
    spec = PipelineSpec(
        name=graph.name,
        parameters=_parameters(graph),
        steps=c.steps,
        root=root,
        pipelines=c.pipelines,
        code=c.code,
        provenance=Provenance(
            compiled_at=datetime.now(UTC).isoformat(),
            compiled_by=getpass.getuser(),
            argosy_version=argosy.__version__,
            source_file=str(source) if source else None,
            git_commit=commit,
            git_dirty=dirty,
            git_diff_sha256=diff_sha,
            locations={**c.locations, "pipeline": graph.location},
        ),
    )
    validate_spec(spec)
    return CompiledPipeline(spec, c.blobs)


def compile_pipeline(pipeline: Pipeline, *, cache_dir: Path | None = None) -> CompiledPipeline:
    """Trace and compile a ``@pipeline``."""
    return compile_graph(pipeline.graph(), cache_dir=cache_dir)


def _importable(module: str) -> str:
    """The name a task imports a step's module by. A script run as ``python FILE.py`` defines
    its steps in ``__main__``, which in a task is the launcher's: the task imports the script
    by its own name instead (its ``if __name__ == "__main__":`` block does not run there), as
    a process pool's workers do."""
    main = sys.modules.get("__main__")
    if module != "__main__" or main is None:
        return module
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # python -m package.module
        return str(spec.name)
    file = getattr(main, "__file__", None)
    return module_name_for(Path(file).resolve())[0] if file else module
