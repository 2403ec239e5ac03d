"""Compile a traced pipeline (:class:`PipelineGraph`) into a :class:`PipelineSpec`.

Compilation snapshots the project's code into a code package and fingerprints the
environment; both are returned as blobs for the caller to store beside the spec.
"""

from __future__ import annotations

import getpass
import hashlib
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import argosy
from argosy.sdk.graph import Binding, PipelineGraph
from argosy.sdk.pipeline import Pipeline
from argosy.sdk.step import ContainerStep, Step
from argosy.spec import code_package, environment, fingerprint
from argosy.spec.loader import module_name_for
from argosy.spec.models import (
    CodePackage,
    ConstantInput,
    ContainerImplementation,
    DagSpec,
    InputBinding,
    InputSpec,
    NodeSpec,
    OutputReference,
    ParameterInput,
    ParameterSpec,
    PipelineSpec,
    Provenance,
    PythonImplementation,
    Resources,
    StepSpec,
    TaskOutputInput,
    TypeSpec,
)
from argosy.spec.validate import validate_spec


@dataclass
class CompiledPipeline:
    """A spec plus the blobs it references by hash (code packages, environment manifests)."""

    spec: PipelineSpec
    blobs: dict[str, bytes] = field(default_factory=dict)


def _git(root: Path) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, sha256 of the diff against HEAD) of the repository holding ``root``."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=10, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--no-ext-diff", "--binary")
    except (OSError, subprocess.SubprocessError):
        return None, None, None
    dirty = bool(diff.strip())
    return commit or None, dirty, hashlib.sha256(diff).hexdigest() if dirty else None


def _binding(b: Binding) -> InputBinding:
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


def compile_graph(graph: PipelineGraph, *, cache_dir: Path | None = None) -> CompiledPipeline:
    """Turn a traced graph into a validated spec, packaging the code its Python steps import."""
    blobs: dict[str, bytes] = {}
    code: dict[str, CodePackage] = {}
    steps: dict[str, StepSpec] = {}
    locations: dict[str, str] = {}
    env_digest: str | None = None
    package: code_package.BuiltPackage | None = None
    source = Path(graph.file).resolve() if graph.file else None

    origins: dict[str, object] = {}
    step_keys: dict[str, str] = {}
    for node in graph.nodes:
        locations[node.path] = node.location
        s = node.step
        existing = steps.get(s.name)
        impl: PythonImplementation | ContainerImplementation
        if isinstance(s, ContainerStep):
            impl = ContainerImplementation(image=s.image, command=s.command)
        else:
            if env_digest is None:
                manifest = environment.environment_manifest(cache_dir)
                raw = environment.manifest_bytes(manifest)
                env_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
                blobs[env_digest] = raw
            func_file = Path(sys.modules[s.module].__file__ or "").resolve()
            if package is None:
                anchor = source or func_file
                root = code_package.project_root(anchor)
                _, entry = module_name_for(anchor)
                package = code_package.build_package(root, [entry])
                blobs["sha256:" + package.sha256] = package.data
                code["sha256:" + package.sha256] = CodePackage(
                    paths=package.paths, size=len(package.data)
                )
            fp = fingerprint.step_fingerprint(s.func, package.root, _format_modules(s))
            impl = PythonImplementation(
                code_fingerprint=fp.code,
                packages=fp.packages,
                module=s.module,
                function=s.qualname,
                code="sha256:" + package.sha256,
                environment=env_digest,
                python=platform.python_version(),
                returns="fields" if s.multi_output else ("single" if s.outputs else "none"),
            )
        step_spec = _step_spec(s, impl)
        key = s.name
        if existing is not None and existing != step_spec:
            if origins[s.name] != _origin(s):
                from argosy.errors import ValidationError

                raise ValidationError(
                    "check_step_names",
                    f"two different steps are named {s.name!r} (defined at "
                    f"{locations.get(f'step:{s.name}', '?')} "
                    f"and {s.location}); rename one with @step(name=...)",
                    where=node.path,
                    location=node.location,
                )
            # the same step called with other options (.options(cpu=...)): its own variant
            key = next((k for k, v in steps.items() if v == step_spec), f"{s.name}@{node.path}")
        origins.setdefault(s.name, _origin(s))
        steps[key] = step_spec
        step_keys[node.path] = key
        locations.setdefault(f"step:{key}", s.location)

    commit, dirty, diff_sha = _git(
        package.root if package else (source.parent if source else Path.cwd())
    )
    spec = PipelineSpec(
        name=graph.name,
        parameters={
            k: ParameterSpec(**t.to_json(), required=req, default=default)
            for k, (t, default, req) in graph.parameters.items()
        },
        steps=steps,
        root=DagSpec(
            nodes=[
                NodeSpec(
                    name=n.path,
                    step=step_keys[n.path],
                    inputs={k: _binding(b) for k, b in n.inputs.items()},
                    after=list(n.after),
                )
                for n in graph.nodes
            ],
            outputs={
                k: OutputReference(node=ref.node.path, output=ref.output)
                for k, ref in graph.outputs.items()
            },
        ),
        code=code,
        provenance=Provenance(
            compiled_at=datetime.now(UTC).isoformat(),
            compiled_by=getpass.getuser(),
            argosy_version=argosy.__version__,
            source_file=str(source) if source else None,
            git_commit=commit,
            git_dirty=dirty,
            git_diff_sha256=diff_sha,
            locations={**locations, "pipeline": graph.location},
        ),
    )
    validate_spec(spec)
    return CompiledPipeline(spec, blobs)


def compile_pipeline(pipeline: Pipeline, *, cache_dir: Path | None = None) -> CompiledPipeline:
    """Trace and compile a ``@pipeline``."""
    return compile_graph(pipeline.graph(), cache_dir=cache_dir)
