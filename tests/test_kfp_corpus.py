"""The KFP corpus (tests/kfp, 31 files compiled by the KFP SDK) run with Argosy's engine.

Every file is imported and run once, in one module-scoped batch, in process (the local home,
tasks as processes), with the arguments the upstream tests use; each test then checks what
tests/kfp/manifest.json and the corpus README expect: outputs, task states, which branch ran,
how many iterations, the exit handler's status. Container components run through podman with
a busybox image built here and tagged with the corpus's image names (nothing is pulled).
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from argosy.api import documents as api
from argosy.client.local import LocalBackend
from argosy.config import load_settings
from argosy.interop.kfp.load import Imported, load_file
from argosy.spec.parameters import bind_parameters

HERE = Path(__file__).resolve().parent / "kfp"
CORPUS = HERE / "pipelines"
MANIFEST = {r["file"]: r for r in json.loads((HERE / "manifest.json").read_text())["files"]}
IMAGES = [
    "docker.io/library/alpine:latest",
    "ghcr.io/containerd/busybox:latest",
    "registry.access.redhat.com/ubi9/python-311:latest",
    "docker.io/library/python:3.11",
]
BUILT = "localhost/argosy-kfp-test-busybox:1"
PODMAN_PATH = "/usr/bin:/usr/sbin:/bin:/sbin"


@dataclass
class Ran:
    """One corpus file, imported and run."""

    imported: Imported
    run: api.RunDetail
    backend: LocalBackend
    args: dict[str, Any]

    @property
    def spec(self) -> Any:
        return self.imported.compiled.spec

    def tasks(self, suffix: str) -> list[api.Task]:
        """The task at node path ``suffix``, else those whose path ends with ``/suffix``."""
        exact = [t for t in self.run.tasks if t.node_path == suffix]
        return exact or [t for t in self.run.tasks if t.node_path.endswith("/" + suffix)]

    def task(self, suffix: str) -> api.Task:
        found = self.tasks(suffix)
        assert len(found) == 1, [t.node_path for t in self.run.tasks]
        return found[0]

    def state(self, suffix: str) -> str:
        return self.task(suffix).state

    def output(self, suffix: str, name: str = "Output") -> Any:
        ref = self.task(suffix).outputs[name]
        if ref.value is not None:
            return ref.value
        return json.loads(self.backend.local.store.read_blob(ref.sha256))

    def artifact(self, suffix: str, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A KFP artifact output: its record (name, type, metadata) and its files by name."""
        ref = self.task(suffix).outputs[name]
        data = self.backend.local.store.read_blob(ref.sha256)
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[member.name.removeprefix("./")] = extracted.read()
        record = json.loads(files.pop("kfp-artifact.json"))
        return record, files

    def log(self, suffix: str) -> str:
        path = self.task(suffix).node_path
        return "\n".join(line.line for line in self.backend.logs(self.run.id, node=path))


def _args(record: dict[str, Any], tmp: Path) -> dict[str, str]:
    """The upstream test's arguments as ``-p`` text (fresh files where it asks for one)."""
    args: dict[str, str] = {}
    for key, value in record["run_args"].items():
        if value == "<fresh temp file path>":
            value = str(tmp / f"{record['file']}.{key}")
        args[key] = value if isinstance(value, str) else json.dumps(value)
    return args


@pytest.fixture(scope="module")
def podman_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The corpus's image names, tagged on a busybox image built from scratch here."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run 'make test' (it installs the test packages)")
    folder = tmp_path_factory.mktemp("kfp-image")
    conf = folder / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    env = {"CONTAINERS_CONF": str(conf), "PATH": PODMAN_PATH}
    shutil.copy("/bin/busybox", folder / "busybox")
    (folder / "Containerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    subprocess.run(["podman", "build", "-q", "-t", BUILT, str(folder)],
                   check=True, capture_output=True, env=env)  # fmt: skip
    for image in IMAGES:
        subprocess.run(["podman", "tag", BUILT, image], check=True, capture_output=True, env=env)
    yield {"CONTAINERS_CONF": str(conf)}
    for image in IMAGES:
        subprocess.run(["podman", "untag", image], check=False, capture_output=True, env=env)


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, podman_images: dict[str, str]
) -> Iterator[dict[str, Ran]]:
    """Every corpus file run once (about 30 s): file name -> what happened."""
    tmp = tmp_path_factory.mktemp("kfp-corpus")
    ran: dict[str, Ran] = {}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in podman_images.items():
            mp.setenv(key, value)
        mp.delenv("ARGOSY_KFP_CONTAINERS", raising=False)
        mp.chdir(tmp)
        # one GPU, as if this machine had one: local_execution_pipeline_with_k8s_only_methods
        # asks for nvidia.com/gpu x1, which Argosy applies (a laptop without one refuses it)
        backend = LocalBackend(load_settings(home=tmp / "state", max_gpus=1))
        for name in sorted(MANIFEST):
            imported = load_file(CORPUS / name)
            args = _args(MANIFEST[name], tmp)
            params = bind_parameters(imported.compiled.spec, args)
            run = backend.submit(imported.compiled, params)
            backend.follow(run.id)
            ran[name] = Ran(imported, backend.run_detail(run.id), backend, args)
        yield ran
        backend.close()


# -- what each file must do (README section 6) -------------------------------------------------
def _add_numbers(r: Ran) -> None:
    assert r.output("add-numbers") == 10
    assert r.run.outputs["Output"].value == 10


def _concat_message(r: Ran) -> None:
    assert r.run.outputs["Output"].value == "Hello World!"


def _nested_return(r: Ran) -> None:
    assert r.run.outputs["Output"].value == [{"A_a": "1", "B_b": "2"}, {"A_a": "10", "B_b": "20"}]


def _lightweight_pipeline(r: Ran) -> None:
    record, files = r.artifact("train", "model")
    assert record["metadata"] == {"accuracy": 0.9}
    assert record["type"]["schemaTitle"] == "system.Model"
    text = files["data"].decode()
    assert text.count("Step ") == 100 and "Step 99\n" in text
    assert "message: Hello KFP!" in text
    # numbers are doubles in IR (the default is {A: 1.0, B: 2.0}): whole numbers come back as
    # ints inside STRUCT values too, and the bool parameter file "True" is read as a boolean
    assert "input_dict: {'A': 1, 'B': 2}, type <class 'dict'>" in text
    assert "input_bool: True, type <class 'bool'>" in text
    assert "input_list: ['a', 'b', 'c'], type <class 'list'>" in text
    assert r.output("preprocess", "output_bool_parameter_path") is True
    assert r.output("preprocess", "output_dict_parameter_path") == {"A": 1, "B": 2}


def _lightweight_outputs(r: Ran) -> None:
    _, dataset = r.artifact("output-artifact", "Output")
    assert dataset["data"].decode() == "\n".join(["Hello World"] * 30)
    assert r.output("output-named-tuple", "scalar") == "123"
    _, model = r.artifact("output-named-tuple", "model")
    assert model["data"].decode() == "Model contents: " + dataset["data"].decode()
    _, metrics = r.artifact("output-named-tuple", "metrics")
    assert json.loads(metrics["data"])["metrics"][0]["numberValue"] == 0.9


def _hello_world(r: Ran) -> None:
    assert "hello world" in r.log("echo")


def _producer_consumer(r: Ran) -> None:
    # a STRING output parameter file keeps echo's trailing newline
    assert r.output("producer", "output_value") == "Hello world, this is an output parameter\n"
    assert "Hello world, this is an output parameter" in r.log("consumer")


def _two_step_containerized(r: Ran) -> None:
    assert "Hello KFP Containerized!" in r.log("component2")


def _after(r: Ran) -> None:
    tasks = sorted(r.run.tasks, key=lambda t: t.started_at or 0)
    said = [[s for s in r.log(t.node_path).splitlines() if not s.startswith("+")] for t in tasks]
    assert said == [["1st task"], ["2nd task"], ["3rd task"]]  # sh -x lines ("+ echo") aside
    for before, after in itertools.pairwise(tasks):
        assert before.finished_at is not None and after.started_at is not None
        assert before.finished_at <= after.started_at


def _concat(r: Ran) -> None:
    assert r.state("component-with-concat-placeholder") == "succeeded"


def _if_present(r: Ran) -> None:
    assert r.log("component-with-optional-inputs").strip() == "--arg0 input0 --arg2 default value"


def _placeholders(r: Ran) -> None:
    text = r.log("print-all-placeholders")
    assert "pipeline-with-placeholders-" in text and "print-all-placeholders" in text
    assert "{{" not in text


def _flip_coin(r: Ran) -> None:
    prints = [t for t in r.run.tasks if t.node_path.rsplit("/", 1)[-1].startswith("print-msg")]
    assert len(prints) == 4
    ran = [t for t in prints if t.state == "succeeded"]
    assert len(ran) == 1, [(t.node_path, t.state, t.reason) for t in prints]
    assert all(t.state == "skipped" for t in prints if t is not ran[0])
    coin = r.output("flip-coin")
    assert coin in ("heads", "tails")
    text = r.log(ran[0].node_path)
    assert coin in text and "{{" not in text  # the f-string placeholder was filled
    number = r.output("random-num" if coin == "heads" else "random-num-2")
    assert str(number) in text


def _oneof(r: Ran) -> None:
    assert r.run.outputs["Output"].value == "selected:A"
    skipped = [t for t in r.run.tasks if t.state == "skipped"]
    assert skipped and all(t.reason and "condition_false" in t.reason for t in skipped)


def _if_elif_else_complex(r: Ran) -> None:
    ints = r.task("print-ints")
    assert ints.state == "succeeded"
    text = r.log("print-ints")
    values = json.loads(text.strip().splitlines()[-1])
    assert len(values) == 3 and all(isinstance(v, int) for v in values)
    assert len([t for t in r.run.tasks if t.node_path.startswith("for-loop-1[")]) > 0


def _loops(r: Ran) -> None:
    items = sorted(
        t.item
        for t in r.run.tasks
        if t.node_path.startswith("for-loop-1[") and t.node_path.count("/") == 1
    )
    assert items == ["item1", "item2", "item3"]
    # parseJson(string_value)["A_a"] over an upstream LIST of dicts, and over a raw JSON list
    texts = "\n".join(r.log(t.node_path) for t in r.run.tasks if "print-text" in t.node_path)
    for expected in ("item1", "item2", "item3", "1", "2", "10", "20"):
        assert expected in texts.split("\n")


def _parallelism(r: Ran) -> None:
    assert r.run.status == "succeeded"
    assert len([t for t in r.run.tasks if "[" in t.node_path]) >= 20
    loops = {n.name: n for n in r.spec.root.nodes if n.for_each is not None}
    limits = {name: n.for_each.parallelism for name, n in loops.items()}
    assert 1 in limits.values() and 2 in limits.values()
    for name, limit in limits.items():
        if limit is None:
            continue
        # at any moment, at most `limit` iterations have a task (a process) running; a nested
        # loop node itself does not count (docs/kubeflow.md: parallelism and nested loops)
        spans = [
            (t.node_path.split("/")[0], t.started_at, t.finished_at)
            for t in r.run.tasks
            if t.node_path.startswith(name + "[") and t.attempts and t.started_at
        ]
        assert spans
        for _, at, _ in spans:
            running = {it for it, start, end in spans if start <= at < (end or at)}
            assert len(running) <= limit, (name, limit, running)


def _collected_artifacts(r: Ran) -> None:
    assert r.run.outputs["Output"].value == "0,1,2"


def _collected_parameters(r: Ran) -> None:
    # the Collected list is used inside the sub-pipeline and returned as its LIST output
    for path in ("collecting-parameters/consume-ids", "consume-ids"):
        assert r.log(path).splitlines() == [f"Consuming: model_id_s{i}" for i in (1, 2, 3)]


def _list_artifacts(r: Ran) -> None:
    printed = [t for t in r.run.tasks if "print-artifact-name" in t.node_path]
    assert len(printed) == 8 and all(t.state == "succeeded" for t in printed)
    # pythonic artifacts: the uri the function reported (dsl.get_uri) is the one stored
    made = [t for t in r.run.tasks if t.node_path.rsplit("/", 1)[-1].startswith("make-")]
    record, files = r.artifact(made[0].node_path, "Output")
    assert record["metadata"]["length"] == len(files["data"])


def _exit_handler_local(r: Ran) -> None:
    assert r.run.status == "succeeded"
    assert r.output("record-exit") == "exit:SUCCEEDED"


def _exit_handler_failing(r: Ran) -> None:
    assert r.run.status == "failed"
    assert r.state("fail-op") == "failed"
    assert r.state("print-op") == "succeeded"  # the exit task still runs
    assert "Exit handler has worked!" in r.log("print-op")


def _ignore_upstream_failure(r: Ran) -> None:
    assert r.run.status == "failed"
    assert r.state("write-marker") == "succeeded"
    assert Path(r.args["marker_path"]).read_text() == "cleanup_ran"


def _pipeline_in_pipeline(r: Ran) -> None:
    assert "Hello" in r.log("print-op1")
    assert "world" in r.log("inner-pipeline/print-op1")
    assert "world" in r.log("inner-pipeline/print-op2")  # the alpine echo container


def _artifact_crust(r: Ran) -> None:
    consumers = [t for t in r.run.tasks if "input:" in r.log(t.node_path)]
    assert consumers and "input:  foo" in r.log(consumers[0].node_path)


def _caching(r: Ran) -> None:
    assert r.run.outputs["Output"].value == 2
    again = r.backend.submit(r.imported.compiled, bind_parameters(r.spec, r.args))
    r.backend.follow(again.id)
    detail = r.backend.run_detail(again.id)
    assert [t.state for t in detail.tasks] == ["cached"]
    assert detail.outputs["Output"].value == 2


def _retry(r: Ran) -> None:
    assert r.run.outputs["Output"].value == "attempt=2"
    task = r.run.tasks[0]
    assert [a.state for a in task.attempts] == ["failed", "succeeded"]


def _k8s_only(r: Ran) -> None:
    assert r.run.outputs["Output"].value == "hello"
    step = next(iter(r.spec.steps.values()))
    assert (step.resources.cpu, step.resources.memory, step.resources.gpu) == (1.0, 256 * 2**20, 1)
    assert any("accelerator.type" in n for n in r.imported.notes)


def _machine_fields(r: Ran) -> None:
    assert r.run.status == "succeeded"
    notes = "\n".join(r.imported.notes)
    for field in ("resourceCpuLimit", "resourceMemoryLimit", "accelerator"):
        assert f"resources.{field}" in notes


def _importer_workspace(r: Ran) -> None:
    outputs = {k: v.value for k, v in r.run.outputs.items()}
    assert outputs == {"train_result": "123", "dir_result": "part-000.txt,part-001.txt"}
    record, _ = r.artifact("importer", "artifact")
    assert record["metadata"] == {"key": "value"}
    assert any("pipelineConfig.workspace" in n for n in r.imported.notes)


def _missing_optional(r: Ran) -> None:
    assert "baseline task" in r.log("log-message")
    notes = r.imported.notes
    for field in ("configMapAsEnv", "configMapAsVolume", "imagePullSecret", "nodeAffinity",
                  "nodeSelector", "secretAsEnv", "secretAsVolume", "tolerations"):  # fmt: skip
        assert sum(f"platform spec {field} " in n for n in notes) == 1, field
    assert r.spec.parameters["optional_secret_name"].required is False


EXPECTED: dict[str, tuple[str, Callable[[Ran], None]]] = {
    "add_numbers.yaml": ("succeeded", _add_numbers),
    "concat_message.yaml": ("succeeded", _concat_message),
    "nested_return.yaml": ("succeeded", _nested_return),
    "lightweight_python_functions_pipeline.yaml": ("succeeded", _lightweight_pipeline),
    "lightweight_python_functions_with_outputs.yaml": ("succeeded", _lightweight_outputs),
    "hello_world.yaml": ("succeeded", _hello_world),
    "producer_consumer_param_pipeline.yaml": ("succeeded", _producer_consumer),
    "two_step_pipeline_containerized.yaml": ("succeeded", _two_step_containerized),
    "pipeline_with_after.yaml": ("succeeded", _after),
    "pipeline_with_concat_placeholder.yaml": ("succeeded", _concat),
    "placeholder_with_if_placeholder_none_input_value.yaml": ("succeeded", _if_present),
    "pipeline_with_placeholders.yaml": ("succeeded", _placeholders),
    "flip_coin.yaml": ("succeeded", _flip_coin),
    "local_execution_pipeline_with_oneof.yaml": ("succeeded", _oneof),
    "if_elif_else_complex.yaml": ("succeeded", _if_elif_else_complex),
    "pipeline_with_loops.yaml": ("succeeded", _loops),
    "pipeline_with_parallelfor_parallelism.yaml": ("succeeded", _parallelism),
    "pipeline_with_collected_artifacts.yaml": ("succeeded", _collected_artifacts),
    "collected_parameters.yaml": ("succeeded", _collected_parameters),
    "pipeline_with_parallelfor_list_artifacts_GH-12033.yaml": ("succeeded", _list_artifacts),
    "local_execution_pipeline_with_exit_handler.yaml": ("succeeded", _exit_handler_local),
    "pipeline_with_exit_handler.yaml": ("failed", _exit_handler_failing),
    "local_execution_pipeline_with_ignore_upstream_failure.yaml": (
        "failed",
        _ignore_upstream_failure,
    ),
    "pipeline_in_pipeline.yaml": ("succeeded", _pipeline_in_pipeline),
    "artifact_crust.yaml": ("succeeded", _artifact_crust),
    "pipeline_with_caching.yaml": ("succeeded", _caching),
    "local_execution_pipeline_with_retry.yaml": ("succeeded", _retry),
    "local_execution_pipeline_with_k8s_only_methods.yaml": ("succeeded", _k8s_only),
    "pipeline_with_string_machine_fields_pipeline_input.yaml": ("succeeded", _machine_fields),
    "pipeline_with_importer_workspace.yaml": ("succeeded", _importer_workspace),
    "missing_kubernetes_optional_inputs.yaml": ("succeeded", _missing_optional),
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(MANIFEST) == sorted(p.name for p in CORPUS.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_runs_as_expected(name: str, corpus: dict[str, Ran]) -> None:
    ran = corpus[name]
    status, check = EXPECTED[name]
    assert ran.run.status == status, (
        ran.run.error,
        [(t.node_path, t.state, t.reason) for t in ran.run.tasks],
    )
    check(ran)
