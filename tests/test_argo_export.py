"""``argosy compile --target argo``: the Argo Workflows export validates against Hera's models of
Argo's API (strictly: a field Hera does not know fails), maps DAG tasks, parameters, artifacts,
resources, pools, retries, timeouts, conditions and fan-out, refuses what Argo cannot express
with the node named, and its Python-step entrypoint really runs a step."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from hera.workflows.models import WorkflowTemplate
from typer.testing import CliRunner

from argosy.cli.main import app
from argosy.executors.kubernetes.manifests import Pool
from argosy.interop.argo import ArgoExportError, workflow_template
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.spec.models import PipelineSpec

IMAGE = "registry.example.com/argosy/runtime@sha256:" + "ef" * 32
TOOL = "registry.example.com/tools/wc@sha256:" + "12" * 32

FLOWS = textwrap.dedent(
    f"""
    from pathlib import Path
    from argosy import If, container_step, pipeline, step

    @step(retries=2, retry_backoff=5, timeout=600, cpu=2, memory="1Gi")
    def make(n: int) -> list[int]:
        return list(range(n))

    @step(pool="gpu-a10g", gpu=1, secrets=["WANDB_KEY"])
    def square(x: int) -> int:
        return x * x

    @step
    def total(xs: list[int]) -> int:
        return sum(xs)

    @step
    def announce(total: int) -> str:
        return f"total {{total}}"

    count_words = container_step(
        name="count_words", image="{TOOL}",
        command=["sh", "-c", "echo {{{{inputs.text.value}}}} | wc -w > {{{{outputs.count.path}}}}"],
        inputs={{"text": str}}, outputs={{"count": Path}},
    )
    read_count = container_step(
        name="read_count", image="{TOOL}",
        command=["sh", "-c", "cat {{{{inputs.count.path}}}} > {{{{outputs.n.path}}}}"],
        inputs={{"count": Path}}, outputs={{"n": str}},
    )

    @pipeline
    def flow(n: int = 4, text: str = "a b c") -> str:
        squares = square.map(make(n=n))
        t = total(xs=squares)
        read_count(count=count_words(text=text))
        with If(t > 10):
            said = announce(total=t)
        return said

    @step
    def inner_step(x: int) -> int:
        return x

    @pipeline
    def inner(x: int = 1) -> int:
        return inner_step(x=x)

    @pipeline
    def nested() -> int:
        return inner(x=2)
    """
)


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("argo")
    path = folder / f"argo_flows_{uuid.uuid4().hex[:8]}.py"
    path.write_text(FLOWS)
    return path


def spec_of(flows: Path, name: str) -> PipelineSpec:
    return compile_pipeline(load_pipeline(f"{flows}:{name}")).spec


def strictly_valid(doc: dict[str, Any]) -> WorkflowTemplate:
    """Hera's models ignore unknown fields: a round trip must give the document back."""
    model = WorkflowTemplate.model_validate(doc)
    again = json.loads(model.model_dump_json(by_alias=True, exclude_none=True))
    assert again == doc, "a field Hera's Argo models do not know (or a wrong type)"
    return model


GPU = Pool.parse(
    "gpu-a10g",
    {
        "node_selector": {"karpenter.sh/nodepool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
)


def test_export_validates_and_maps_the_dag(flows: Path) -> None:
    doc = workflow_template(spec_of(flows, "flow"), image=IMAGE, pools={"gpu-a10g": GPU})
    strictly_valid(doc)
    spec = doc["spec"]
    assert spec["arguments"]["parameters"] == [
        {"name": "n", "value": "4"},
        {"name": "text", "value": "a b c"},
    ]
    tasks = {t["name"]: t for t in spec["templates"][0]["dag"]["tasks"]}
    templates = {t["name"]: t for t in spec["templates"][1:]}
    # fan-out over an upstream list output
    assert tasks["square"]["withParam"] == "{{tasks.make.outputs.parameters.output}}"
    assert tasks["square"]["dependencies"] == ["make"]
    # a condition on an upstream value
    assert tasks["announce"]["when"] == "{{tasks.total.outputs.parameters.output}} > 10"
    # files between container steps are artifacts (Argo's artifact repository)
    assert tasks["read-count"]["arguments"]["artifacts"] == [
        {"name": "count", "from": "{{tasks.count-words.outputs.artifacts.count}}"}
    ]
    assert templates["count-words"]["outputs"]["artifacts"] == [
        {"name": "count", "path": "/argosy/outputs/count"}
    ]
    assert templates["count-words"]["container"]["image"] == TOOL
    assert "{{inputs.parameters.text}}" in templates["count-words"]["container"]["command"][2]
    # resources, retries, timeout
    make = templates["make"]
    assert make["container"]["resources"]["requests"] == {"cpu": "2000m", "memory": "1024Mi"}
    assert make["retryStrategy"] == {
        "limit": "2",
        "retryPolicy": "Always",
        "backoff": {"duration": "5s", "factor": "2"},
    }
    assert make["activeDeadlineSeconds"] == "600"
    assert make["container"]["image"] == IMAGE
    # node pools and GPUs, secrets as files
    sq = templates["square"]
    assert sq["nodeSelector"] == {"karpenter.sh/nodepool": "gpu"}
    assert sq["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert sq["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert sq["volumes"][0]["secret"]["items"] == [{"key": "WANDB_KEY", "path": "WANDB_KEY"}]
    assert all(e["name"] != "WANDB_KEY" for e in sq["container"].get("env", []))


def test_refusals_name_the_node(flows: Path) -> None:
    with pytest.raises(ArgoExportError, match=r"node .inner.*sub-pipeline"):
        workflow_template(spec_of(flows, "nested"), image=IMAGE)
    with pytest.raises(ArgoExportError, match="not in the pool map"):
        workflow_template(spec_of(flows, "flow"), image=IMAGE, pools={})
    with pytest.raises(Exception, match="pinned by digest"):
        workflow_template(spec_of(flows, "flow"), image="runtime:latest")


def test_cli_compile_target_argo(
    flows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGOSY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(
        "ARGOSY_KUBERNETES_POOLS", json.dumps({"gpu-a10g": {"node_selector": {"pool": "gpu"}}})
    )
    out = tmp_path / "flow.yaml"
    result = CliRunner().invoke(
        app, ["compile", f"{flows}:flow", "--target", "argo", "--image", IMAGE, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    strictly_valid(yaml.safe_load(out.read_text()))


def test_python_step_entrypoint_runs_the_step(flows: Path, tmp_path: Path) -> None:
    """What an exported Python step's container runs, run here."""
    outputs = tmp_path / "outputs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "argosy.interop.argo_step",
            flows.stem,
            "total",
            "single",
            "--in=xs=[1, 4, 9]",
            "--out=output",
        ],
        env={
            "PYTHONPATH": str(flows.parent),
            "ARGOSY_OUTPUTS_DIR": str(outputs),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((outputs / "output").read_text()) == 14


def test_a_python_step_with_its_own_image_runs_in_it(tmp_path: Path) -> None:
    own = "registry.example.com/ml/xgb@sha256:" + "34" * 32
    path = tmp_path / f"argo_own_image_{uuid.uuid4().hex[:8]}.py"
    path.write_text(
        textwrap.dedent(f"""
        from argosy import pipeline, step

        @step(image="{own}")
        def fit(n: int) -> int:
            return n

        @step
        def report(n: int) -> int:
            return n

        @pipeline
        def own_image(n: int = 1) -> int:
            return report(fit(n))
        """)
    )
    doc = workflow_template(spec_of(path, "own_image"), image=IMAGE)
    strictly_valid(doc)
    templates = {t["name"]: t for t in doc["spec"]["templates"][1:]}
    assert templates["fit"]["container"]["image"] == own
    assert templates["report"]["container"]["image"] == IMAGE
