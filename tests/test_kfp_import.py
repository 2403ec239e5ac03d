"""Importing KFP IR: one test per surprise the corpus README lists, and the error cases.

Fast tests on the import (no run) except where the behaviour is only visible in a run: a
container component with no container engine, and the run-on-host option.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from argosy.client.local import LocalBackend
from argosy.config import load_settings
from argosy.engine.plan import Planner
from argosy.errors import UsageError
from argosy.interop.kfp import cel
from argosy.interop.kfp.ir import KfpFileError, cast, read_ir
from argosy.interop.kfp.load import import_ir, load_file
from argosy.interop.kfp.task import as_text, parse_text, select
from argosy.spec.models import ConstantInput, ParameterInput, TaskOutputInput

CORPUS = Path(__file__).resolve().parent / "kfp" / "pipelines"


def _spec(name: str) -> object:
    return load_file(CORPUS / name, on_host=False).compiled.spec


def test_numbers_are_doubles_and_come_back_as_their_declared_types() -> None:
    assert cast(9.0, "NUMBER_INTEGER") == 9 and isinstance(cast(9.0, "NUMBER_INTEGER"), int)
    assert cast(1, "NUMBER_DOUBLE") == 1.0 and isinstance(cast(1, "NUMBER_DOUBLE"), float)
    # whole numbers inside LIST and STRUCT values are integers again (kfp.local keeps 2.0)
    assert cast({"A": 1.0, "B": [2.0, 2.5]}, "STRUCT") == {"A": 1, "B": [2, 2.5]}
    assert cast("[1.0, 2.0]", "LIST") == [1, 2]
    assert cast("5.0", "STRING") == "5.0"
    spec = _spec("lightweight_python_functions_pipeline.yaml")
    assert spec.parameters["input_dict"].default == {"A": 1, "B": 2}  # type: ignore[attr-defined]
    assert spec.steps["train"].inputs["num_steps"].default == 100  # type: ignore[attr-defined]


def test_incomplete_dependent_tasks_producers_in_inputs_are_upstream_too() -> None:
    text = (CORPUS / "add_numbers.yaml").read_text()
    ir, _ = read_ir(text, "add_numbers.yaml")
    tasks = ir["root"]["dag"]["tasks"]
    tasks["second"] = {
        "componentRef": {"name": "comp-add-numbers"},
        "inputs": {
            "parameters": {
                "a": {
                    "taskOutputParameter": {
                        "producerTask": "add-numbers",
                        "outputParameterKey": "Output",
                    }
                },
                "b": {"runtimeValue": {"constant": 1.0}},
            }
        },
        "taskInfo": {"name": "second"},  # no dependentTasks, as the compiler sometimes writes
    }
    import yaml

    spec = import_ir(yaml.safe_dump(ir), source="mini.yaml").compiled.spec
    plan, _ = Planner(spec, {"a": 1, "b": 2}).static()
    second = next(n for n in plan if n.path == "second")
    assert second.deps() == ["add-numbers"]
    assert second.inputs["b"].value == 1  # type: ignore[union-attr]


def test_caching_off_is_an_empty_mapping() -> None:
    spec = _spec("flip_coin.yaml")
    assert spec.steps["flip-coin"].cache is False  # type: ignore[attr-defined]
    assert _spec("pipeline_with_caching.yaml").steps  # type: ignore[attr-defined]
    assert all(s.cache for s in _spec("pipeline_with_caching.yaml").steps.values())  # type: ignore[attr-defined]


def test_static_loop_items_are_a_json_string_and_loop_items_hold_dicts() -> None:
    spec = _spec("pipeline_with_loops.yaml")
    loop = spec.node("for-loop-4")  # type: ignore[attr-defined]
    assert loop.for_each.items == ConstantInput(
        constant=[{"A_a": "1", "B_b": "2"}, {"A_a": "10", "B_b": "20"}]
    )
    over_output = spec.node("for-loop-2")  # type: ignore[attr-defined]
    assert isinstance(over_output.for_each.items, TaskOutputInput)
    over_input = spec.node("for-loop-1")  # type: ignore[attr-defined]
    assert over_input.for_each.items == ParameterInput(parameter="loop_parameter")
    # parseJson(string_value)["A_a"] on an item declared STRING that holds a dict (or its text)
    assert select({"A_a": "1"}, 'parseJson(string_value)["A_a"]') == "1"
    assert select('{"A_a": {"x": [5]}}', "parseJson(string_value)['A_a']['x'][0]") == 5


def test_conditions_become_argosy_conditions_over_the_tasks_inputs() -> None:
    x = TaskOutputInput.model_validate({"task_output": {"node": "draw", "output": "Output"}})
    text = (
        "!(int(inputs.parameter_values['n']) < 5000) && !(int(inputs.parameter_values['n']) > 5000)"
    )
    cond = cel.parse_condition(text, {"n": x}, {"n": "NUMBER_INTEGER"})
    assert cond.all is not None and len(cond.all) == 2
    assert cond.all[0].not_ is not None and cond.all[0].not_.op == "<"
    assert cond.all[0].not_.left == x and cond.all[0].not_.right == ConstantInput(constant=5000)
    eq = cel.parse_condition("inputs.parameter_values['c'] == 'heads'", {"c": x})
    assert (eq.op, eq.right) == ("==", ConstantInput(constant="heads"))
    flag = cel.parse_condition("inputs.parameter_values['f'] == true", {"f": x})
    assert flag.right == ConstantInput(constant=True)
    with pytest.raises(cel.ConditionError, match="int\\(\\) of input 's', declared STRING"):
        cel.parse_condition("int(inputs.parameter_values['s']) > 1", {"s": x}, {"s": "STRING"})
    with pytest.raises(cel.ConditionError, match="does not have"):
        cel.parse_condition("inputs.parameter_values['nope'] == 1", {"s": x})


def test_optional_inputs_without_a_default_and_the_platform_spec_document() -> None:
    imported = load_file(CORPUS / "missing_kubernetes_optional_inputs.yaml", on_host=False)
    spec = imported.compiled.spec
    secret = spec.parameters["optional_secret_name"]
    assert (secret.required, secret.default, secret.optional) == (False, None, True)
    # each ignored platform-spec field is named once
    assert len(imported.notes) == len(set(imported.notes)) == 8


def test_output_parameter_files_are_read_by_their_declared_type() -> None:
    assert parse_text("Hello world, this is an output parameter\n", "STRING").endswith("\n")
    assert parse_text("True", "BOOLEAN") is True and parse_text("false\n", "BOOLEAN") is False
    assert parse_text("5\n", "NUMBER_INTEGER") == 5
    assert parse_text('{"A": 1.0}', "STRUCT") == {"A": 1}
    assert [as_text(v) for v in (5.0, 2.5, True, [1], "x")] == ["5", "2.5", "true", "[1]", "x"]


def test_files_that_are_not_kfp_ir_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(KfpFileError, match="not a compiled KFP pipeline"):
        import_ir("apiVersion: argosy.dev/v1\nkind: Pipeline\n", source="x.yaml")
    with pytest.raises(KfpFileError, match="schemaVersion 1"):
        import_ir(
            "pipelineInfo: {name: x}\nroot: {dag: {tasks: {}}}\nschemaVersion: 1.0.0\n",
            source="x.yaml",
        )
    with pytest.raises(UsageError, match="not found"):
        load_file(tmp_path / "missing.yaml")


def _run(tmp_path: Path, name: str, on_host: bool) -> tuple[object, LocalBackend]:
    backend = LocalBackend(load_settings(home=tmp_path / "state"))
    compiled = load_file(CORPUS / name, on_host=on_host).compiled
    run = backend.submit(compiled, {})
    backend.follow(run.id)
    return backend.run_detail(run.id), backend


def test_a_container_component_without_an_engine_names_the_step_and_the_host_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGOSY_CONTAINER_ENGINE", "no-such-engine")
    monkeypatch.chdir(tmp_path)
    detail, backend = _run(tmp_path, "hello_world.yaml", on_host=False)
    backend.close()
    task = detail.tasks[0]  # type: ignore[attr-defined]
    assert task.state == "failed"
    assert task.reason.startswith("container_error")
    assert "'echo'" in task.reason and "ARGOSY_KFP_CONTAINERS=host" in task.reason


def test_run_on_host_runs_a_container_components_command_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGOSY_CONTAINER_ENGINE", "no-such-engine")
    monkeypatch.chdir(tmp_path)
    detail, backend = _run(tmp_path, "pipeline_with_concat_placeholder.yaml", on_host=True)
    assert detail.status == "succeeded"  # type: ignore[attr-defined]  # [[ ]] under bash
    backend.close()
