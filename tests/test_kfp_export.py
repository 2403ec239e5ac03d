"""``argosy compile --target kfp``: Argosy's examples as KFP IR that the KFP SDK loads, and that
Argosy runs again (``argosy run exported.yaml``) with the native run's outputs.

The KFP SDK check runs in kfp's own virtualenv (tests/test_kfp_api.py's ``kfp_python``). The
round trip runs the exported Python steps' containers on the host (``ARGOSY_KFP_CONTAINERS=host``
at import), with the examples on PYTHONPATH as the image would have them.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from argosy.client.local import LocalBackend
from argosy.config import load_settings
from argosy.interop.kfp.export import KfpExportError, pipeline_spec, to_yaml
from argosy.interop.kfp.load import load_file
from argosy.spec.compile import CompiledPipeline, compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.test_kfp_api import kfp_python as kfp_python  # the fixture

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGE = "registry.example/argosy-examples@sha256:" + "0" * 64
EXPORTABLE = ["container_step.py", "demo.py", "sweep.py", "control_flow.py:one_fold"]

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys, yaml
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2
    loaded = {}
    for path in sys.argv[1:]:
        component = components.load_component_from_file(path)
        docs = list(yaml.safe_load_all(open(path)))
        json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
        for doc in docs[1:]:
            json_format.ParseDict(doc, pipeline_spec_pb2.PlatformSpec())
        loaded[path] = component.name
    print(json.dumps(loaded))
    """
)


def _compiled(target: str) -> CompiledPipeline:
    return compile_pipeline(load_pipeline(str(EXAMPLES / target)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("kfp-export")
    files: dict[str, Path] = {}
    for target in EXPORTABLE:
        path = folder / (target.replace(".py", "").replace(":", "-") + ".yaml")
        path.write_text(to_yaml(pipeline_spec(_compiled(target).spec, image=IMAGE)))
        files[target] = path
    return files


def test_exported_examples_load_in_the_kfp_sdk(
    exported: dict[str, Path], kfp_python: str, tmp_path: Path
) -> None:
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    proc = subprocess.run(
        [kfp_python, str(script), *map(str, exported.values())],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(loaded) == sorted(str(p) for p in exported.values())


def test_exported_ir_carries_resources_retries_caching_and_images(
    exported: dict[str, Path],
) -> None:
    import yaml

    doc = yaml.safe_load(exported["demo.py"].read_text().split("\n---\n")[0])
    train = doc["deploymentSpec"]["executors"]["exec-train-logistic"]["container"]
    assert train["image"] == IMAGE
    assert train["command"] == ["python3", "-m", "argosy.interop.kfp.entry"]
    assert train["resources"]["resourceMemoryLimit"] == str(2**30)
    assert train["env"] == [{"name": "OMP_NUM_THREADS", "value": "1"}]
    task = doc["root"]["dag"]["tasks"]["train-logistic"]
    assert task["retryPolicy"]["maxRetryCount"] == 1
    assert task["cachingOptions"] == {"enableCache": True}
    shout = yaml.safe_load(exported["container_step.py"].read_text())
    assert "busybox" in shout["deploymentSpec"]["executors"]["exec-shout"]["container"]["image"]


def test_exit_handlers_are_refused_with_a_reason() -> None:
    with pytest.raises(KfpExportError, match="exit handler cannot be exported"):
        pipeline_spec(_compiled("control_flow.py:model_selection").spec, image=IMAGE)


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))  # the examples, as the image holds them
    monkeypatch.chdir(tmp_path)
    local = LocalBackend(load_settings(home=tmp_path / "state"))
    yield local
    local.close()


def _run(backend: LocalBackend, compiled: CompiledPipeline, **params: Any) -> dict[str, Any]:
    run = backend.submit(compiled, params)
    backend.follow(run.id)
    detail = backend.run_detail(run.id)
    assert detail.status == "succeeded", [(t.node_path, t.state, t.reason) for t in detail.tasks]
    return {k: v.value for k, v in detail.outputs.items()}


@pytest.mark.parametrize("target", ["sweep.py", "demo.py", "container_step.py"])
def test_an_exported_example_runs_again_with_the_native_outputs(
    target: str, exported: dict[str, Path], backend: LocalBackend
) -> None:
    again = _run(backend, load_file(exported[target], on_host=True).compiled)
    if target == "container_step.py":  # natively it needs its image (tests/test_container.py)
        assert again == {"loud": "HELLO!", "capitals": 5}
        return
    native = _run(backend, _compiled(target))
    assert again == native


def test_a_python_step_with_its_own_image_runs_in_it(tmp_path: Path) -> None:
    own = "registry.example/ml/xgb@sha256:" + "34" * 32
    path = tmp_path / "kfp_own_image.py"
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
    spec = compile_pipeline(load_pipeline(f"{path}:own_image")).spec
    executors = pipeline_spec(spec, image=IMAGE)[0]["deploymentSpec"]["executors"]
    assert executors["exec-fit"]["container"]["image"] == own
    assert executors["exec-report"]["container"]["image"] == IMAGE
