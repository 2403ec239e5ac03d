"""The compiled pipeline spec (``apiVersion: argosy.dev/v1``): portable, versioned, hashed.

A spec is what every other layer consumes: the engine runs it, the server stores it, the
interop layer translates it. Its identity (the pipeline version digest) is the sha256 of the
RFC 8785 canonical JSON of everything except ``provenance``, so the same executable content
always has the same version, whoever compiled it and when.

Room to grow: a :class:`NodeSpec` names a ``step``; conditions, fan-out, exit handlers and
sub-pipelines arrive as new optional node fields and new entries in ``pipelines`` (an absent
field means "not used"), so existing specs keep their digests.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, JsonValue

API_VERSION: Literal["argosy.dev/v1"] = "argosy.dev/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TypeSpec(_Model):
    """An artifact or parameter type: a stable ref (``int``, ``pandas.DataFrame``), a serializer."""

    type: str
    serializer: str | None = None
    optional: bool = False


class InputSpec(TypeSpec):
    """One input of a step: its type and, for an optional input, its default."""

    required: bool = True
    default: JsonValue = None


class ParameterSpec(TypeSpec):
    """One pipeline parameter (a JSON value given at run time)."""

    required: bool = True
    default: JsonValue = None


class Resources(_Model):
    """What one attempt asks of its executor; ``pool`` is a free-form node-pool label."""

    cpu: float = 1.0
    memory: int | None = None
    gpu: int = 0
    pool: str | None = None


class PythonImplementation(_Model):
    """A Python function imported from a code package and run by the step launcher."""

    kind: Literal["python"] = "python"
    module: str
    function: str
    code: str  # "sha256:<hex>" of the code package
    environment: str  # "sha256:<hex>" of the environment manifest
    python: str  # "3.11.7"
    returns: Literal["single", "fields", "none"]
    # what the step's code depends on (see spec/fingerprint.py): component -> sha256 ...
    code_fingerprint: dict[str, str] = {}
    # ... and the installed distributions it imports -> version (plus python, platform)
    packages: dict[str, str] = {}
    # the step's own packages (@step(packages=[...])), installed into its own environment
    requirements: list[str] = []
    # the container image the step runs in (@step(image=...)), the runtime mounted into it
    image: str | None = None


class ContainerImplementation(_Model):
    """A command run in a container image; inputs and outputs are exchanged as files."""

    kind: Literal["container"] = "container"
    image: str
    command: list[str]
    network: bool = False  # off unless the step asks (container_step(network=True))


class KfpImplementation(_Model):
    """A Kubeflow Pipelines executor imported from KFP IR (:mod:`argosy.interop.kfp`).

    A lightweight Python component, a container component or an importer, run by the launcher
    through the KFP executor contract. ``executor`` is the IR executor as compiled,
    ``component`` the component's input and output definitions, ``task`` what the task adds
    (its KFP name, input selectors, templated constants, the pipeline's name, run-on-host).
    """

    kind: Literal["kfp"] = "kfp"
    executor: dict[str, JsonValue]
    component: dict[str, JsonValue] = {}
    task: dict[str, JsonValue] = {}
    # what the cache key covers, as for a Python step: the executor and component digests ...
    code_fingerprint: dict[str, str] = {}
    # ... and the version of Argosy's KFP executor contract
    packages: dict[str, str] = {}


Implementation = Annotated[
    PythonImplementation | ContainerImplementation | KfpImplementation,
    Field(discriminator="kind"),
]


class StepSpec(_Model):
    """A step definition, shared by every node that calls it."""

    name: str
    implementation: Implementation
    inputs: dict[str, InputSpec] = {}
    outputs: dict[str, TypeSpec] = {}
    resources: Resources = Resources()
    retries: int = 0
    retry_backoff: float = 0.0
    timeout: float | None = None
    cache: bool = True
    cache_version: str | None = None
    cache_ttl: float | None = None
    env: dict[str, str] = {}
    secrets: list[str] = []


class ConstantInput(_Model):
    constant: JsonValue


class ParameterInput(_Model):
    parameter: str


class OutputReference(_Model):
    """``{node: "split", output: "train"}``: one output of one node."""

    node: str
    output: str


class TaskOutputInput(_Model):
    task_output: OutputReference


class OneOfInput(_Model):
    """The output of whichever branch ran: the first of ``one_of`` that was produced."""

    one_of: list[OutputReference]


InputBinding = ConstantInput | ParameterInput | TaskOutputInput | OneOfInput
Operand = ConstantInput | ParameterInput | TaskOutputInput

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")


class ConditionSpec(_Model):
    """A condition on parameters and upstream JSON outputs; exactly one form is set.

    ``{op, left, right}`` compares two operands; ``all``/``any`` combine conditions;
    ``not_`` (``"not"`` in JSON) negates one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"] | None = None
    left: Operand | None = None
    right: Operand | None = None
    all: list[ConditionSpec] | None = None
    any: list[ConditionSpec] | None = None
    not_: ConditionSpec | None = Field(default=None, alias="not")


class ForEachSpec(_Model):
    """Run the node once per item of ``items``, passing the item as input ``input``."""

    input: str
    items: InputBinding
    parallelism: int | None = None


class ExitHandlerSpec(_Model):
    """This node runs after every node of ``group`` is done, whatever their outcome.

    It receives their final status as input ``status_input``:
    ``{"status": "succeeded|failed|cancelled", "tasks": {node: {"state", "reason"}}}``.
    """

    group: list[str]
    status_input: str = "status"


class NodeSpec(_Model):
    """One occurrence of a step (or a sub-pipeline) in a DAG; ``name`` is its node path segment.

    Optional fields stay at their defaults when unused, so plain DAGs keep their digests.
    """

    name: str
    step: str | None = None
    pipeline: str | None = None  # a key of PipelineSpec.pipelines: a nested graph
    inputs: dict[str, InputBinding] = {}
    after: list[str] = []
    when: ConditionSpec | None = None
    for_each: ForEachSpec | None = None
    exit_handler: ExitHandlerSpec | None = None


class DagSpec(_Model):
    """A graph of nodes and the outputs it exposes."""

    nodes: list[NodeSpec]
    outputs: dict[str, OutputReference | OneOfInput] = {}


class SubPipelineSpec(_Model):
    """A pipeline used as a node of another: its parameters and its own graph."""

    name: str
    parameters: dict[str, ParameterSpec] = {}
    root: DagSpec


class CodePackage(_Model):
    """A snapshot of the project's Python files; ``paths`` are its folders put on ``sys.path``."""

    paths: list[str]
    size: int


class Provenance(_Model):
    """Where a spec came from; stored beside the spec, outside its digest."""

    compiled_at: str
    compiled_by: str
    argosy_version: str
    source_file: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    git_diff_sha256: str | None = None  # of `git diff HEAD` when the tree was dirty
    locations: dict[str, str] = {}  # node path or "step:NAME" -> "file:line"


class PipelineSpec(_Model):
    """A compiled pipeline: parameters, steps, the root DAG, and the code it references."""

    apiVersion: Literal["argosy.dev/v1"] = API_VERSION
    kind: Literal["Pipeline"] = "Pipeline"
    name: str
    parameters: dict[str, ParameterSpec] = {}
    steps: dict[str, StepSpec]
    root: DagSpec
    pipelines: dict[str, SubPipelineSpec] = {}
    code: dict[str, CodePackage] = {}
    provenance: Provenance | None = None

    def executable_json(self) -> dict[str, Any]:
        """The part of the spec the digest covers: everything but provenance."""
        return self.model_dump(mode="json", exclude={"provenance"}, exclude_defaults=False)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` over the RFC 8785 canonical JSON of the executable content.

        Fields at their default value are left out, so a later format version that adds an
        optional field (with a default meaning "not used") keeps existing digests.
        """
        doc = self.model_dump(mode="json", exclude={"provenance"}, exclude_defaults=True)
        doc.update(apiVersion=self.apiVersion, kind=self.kind)
        return "sha256:" + hashlib.sha256(rfc8785.dumps(doc)).hexdigest()

    def location(self, key: str) -> str | None:
        """``file:line`` of a node (by node path) or a step (``step:NAME``), when known."""
        return self.provenance.locations.get(key) if self.provenance else None

    def node(self, path: str) -> NodeSpec:
        """A node of the root graph by name."""
        for node in self.root.nodes:
            if node.name == path:
                return node
        raise KeyError(path)

    def step_of(self, path: str) -> StepSpec:
        """The step a root-graph node calls."""
        step = self.node(path).step
        if step is None:
            raise KeyError(f"{path} calls a sub-pipeline, not a step")
        return self.steps[step]

    def dags(self) -> list[tuple[str, DagSpec]]:
        """The root graph and every sub-pipeline graph, with their names (root: "")."""
        return [("", self.root), *((k, p.root) for k, p in self.pipelines.items())]
