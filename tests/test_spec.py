"""The compiled spec: a stable content digest, YAML/JSON export, named checks, node paths,
parameter binding, and the public SDK surface (what it exports, what ``--help`` imports)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

import argosy
from argosy.errors import UsageError, ValidationError
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.spec.models import PipelineSpec
from argosy.spec.parameters import bind_parameters
from argosy.spec.validate import validate_spec
from tests.conftest import Workspace

HEX = set("0123456789abcdef")


def compile_source(ws: Workspace, source: str) -> PipelineSpec:
    """Write ``source`` as a new module of the project and compile its pipeline in-process."""
    path = ws.write(source)
    return compile_pipeline(load_pipeline(str(path)), cache_dir=ws.home / "cache").spec


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists by index), to compare specs field by field."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def changed_fields(a: PipelineSpec, b: PipelineSpec) -> set[str]:
    fa, fb = flatten(a.executable_json()), flatten(b.executable_json())
    return {k for k in fa.keys() | fb.keys() if fa.get(k, object()) != fb.get(k, object())}


# -- digest ------------------------------------------------------------------------------

BASIC = """
from argosy import pipeline, step


@step(retries=1)
def load(n: int) -> list:
    return list(range(n))


@step
def total(xs: list) -> int:
    return sum(xs)


@pipeline
def basic(n: int = 3):
    return total(xs=load(n=n))
"""


def test_compiled_spec_is_argosy_v1_with_a_sha256_digest(ws: Workspace) -> None:
    spec = compile_source(ws, BASIC)
    assert spec.apiVersion == "argosy.dev/v1"
    assert spec.kind == "Pipeline"
    assert spec.name == "basic"
    assert spec.digest.startswith("sha256:")
    assert len(spec.digest) == len("sha256:") + 64
    assert set(spec.digest.removeprefix("sha256:")) <= HEX
    assert [n.name for n in spec.root.nodes] == ["load", "total"]
    assert spec.steps["load"].retries == 1
    assert spec.parameters["n"].default == 3
    assert not spec.parameters["n"].required
    # the spec names the code package it runs, and the compile produced its bytes
    (code_ref,) = spec.code
    assert spec.steps["load"].implementation.code == code_ref  # type: ignore[union-attr]


def test_digest_is_stable_and_ignores_provenance(ws: Workspace) -> None:
    path = ws.write(BASIC)
    first = compile_pipeline(load_pipeline(str(path)), cache_dir=ws.home / "cache").spec
    second = compile_pipeline(load_pipeline(str(path)), cache_dir=ws.home / "cache").spec
    assert first.provenance is not None and second.provenance is not None
    assert first.provenance.compiled_at != second.provenance.compiled_at
    assert first.digest == second.digest
    assert first.executable_json() == second.executable_json()

    # provenance (who, when, where from) is stored beside the spec, outside its identity
    assert first.model_copy(update={"provenance": None}).digest == first.digest
    other = first.provenance.model_copy(
        update={
            "compiled_at": "2001-01-01T00:00:00+00:00",
            "compiled_by": "someone-else",
            "source_file": "/elsewhere/pipe.py",
            "git_commit": "0" * 40,
            "git_dirty": True,
            "locations": {},
        }
    )
    assert first.model_copy(update={"provenance": other}).digest == first.digest


def test_digest_covers_executable_content(ws: Workspace) -> None:
    spec = compile_source(ws, BASIC)
    doc = spec.model_dump(mode="json")

    def digest_after(change: Any) -> str:
        changed = json.loads(json.dumps(doc))
        change(changed)
        return PipelineSpec.model_validate(changed).digest

    variants = {
        "cpu": lambda d: d["steps"]["load"]["resources"].update(cpu=2.0),
        "memory": lambda d: d["steps"]["load"]["resources"].update(memory=2**30),
        "retries": lambda d: d["steps"]["load"].update(retries=3),
        "timeout": lambda d: d["steps"]["total"].update(timeout=60.0),
        "env": lambda d: d["steps"]["total"].update(env={"MODE": "fast"}),
        "default": lambda d: d["parameters"]["n"].update(default=4),
        "code": lambda d: d["steps"]["load"]["implementation"].update(code="sha256:" + "0" * 64),
        "node": lambda d: d["root"]["nodes"][1].update(name="sum_up"),
    }
    digests = {name: digest_after(change) for name, change in variants.items()}
    assert spec.digest not in digests.values()
    assert len(set(digests.values())) == len(variants)


CONFIGURED = """
import json
from pathlib import Path

from argosy import pipeline, step

# options and defaults read from a data file, so they can change while the code does not
CONFIG = json.loads((Path(__file__).parent / "settings.json").read_text())


@step(retries=CONFIG["retries"])
def load(n: int) -> list:
    return list(range(n))


@step
def total(xs: list) -> int:
    return sum(xs)


@pipeline
def configured(n: int = CONFIG["n"]):
    return total(xs=load(n=n))
"""


def test_cli_compile_digest_follows_options_defaults_and_code(ws: Workspace) -> None:
    path = ws.write(CONFIGURED, name="configured")
    settings = ws.root / "settings.json"

    def compile_cli(out: str, **config: int) -> tuple[PipelineSpec, str]:
        settings.write_text(json.dumps({"retries": 0, "n": 3, **config}))
        dest = ws.root / out
        res = ws.argosy("compile", str(path), "--out", str(dest))
        assert res.code == 0, res.stderr
        text = dest.read_text()
        doc = json.loads(text) if out.endswith(".json") else yaml.safe_load(text)
        spec = PipelineSpec.model_validate(doc)
        assert f"wrote configured {spec.digest} to {dest}" in res.stderr
        return spec, text

    base, base_json = compile_cli("base.json")
    again, again_yaml = compile_cli("again.yaml")
    assert again_yaml.startswith("apiVersion: argosy.dev/v1\nkind: Pipeline\n")
    assert json.loads(base_json)["apiVersion"] == "argosy.dev/v1"
    # YAML and JSON exports of the same code load back to the same version
    assert again.digest == base.digest
    assert again.provenance is not None and base.provenance is not None
    assert again.provenance.compiled_at != base.provenance.compiled_at

    # without --out the YAML goes to stdout (and nothing else does)
    printed = ws.argosy("compile", str(path))
    assert printed.code == 0, printed.stderr
    assert PipelineSpec.model_validate(yaml.safe_load(printed.stdout)).digest == base.digest

    retried, _ = compile_cli("retried.yaml", retries=2)
    assert retried.digest != base.digest
    assert changed_fields(base, retried) == {"steps.load.retries"}

    defaulted, _ = compile_cli("defaulted.yaml", n=5)
    assert defaulted.digest != base.digest
    assert changed_fields(base, defaulted) == {"parameters.n.default"}

    # any edit of the project's Python files is a new code package, hence a new version
    original = path.read_text()
    path.write_text(original.replace("# options and defaults", "# Options and defaults"))
    commented, _ = compile_cli("commented.yaml")
    assert commented.digest != base.digest
    assert set(commented.code) != set(base.code)

    path.write_text(original.replace("list(range(n))", "list(range(1, n + 1))"))
    recoded, _ = compile_cli("recoded.yaml")
    assert len({base.digest, commented.digest, recoded.digest}) == 3
    assert set(recoded.code) != set(base.code)

    path.write_text(original)
    restored, _ = compile_cli("restored.yaml")
    assert restored.digest == base.digest


NONE_CONSTANT = """
from typing import Optional

from argosy import pipeline, step


@step
def pick(limit: Optional[int] = 10) -> int:
    return -1 if limit is None else limit


@pipeline
def unlimited():
    return pick(limit=None)
"""


def test_exported_spec_with_a_none_constant_loads_back(ws: Workspace) -> None:
    path = ws.write(NONE_CONSTANT)
    spec = compile_pipeline(load_pipeline(str(path)), cache_dir=ws.home / "cache").spec
    assert spec.root.nodes[0].inputs["limit"].constant is None  # type: ignore[union-attr]
    dest = ws.root / "spec.json"
    res = ws.argosy("compile", str(path), "--out", str(dest))
    assert res.code == 0, res.stderr
    doc = json.loads(dest.read_text())
    assert doc["root"]["nodes"][0]["inputs"]["limit"] == {"constant": None}
    assert PipelineSpec.model_validate(doc).digest == spec.digest


# -- named validation checks ---------------------------------------------------------------


def _basic_doc(ws: Workspace) -> dict[str, Any]:
    return compile_source(ws, BASIC).model_dump(mode="json")


def _check_fails(doc: dict[str, Any]) -> ValidationError:
    spec = PipelineSpec.model_validate(doc)  # structurally a valid document ...
    with pytest.raises(ValidationError) as info:
        validate_spec(spec)  # ... that cannot run
    return info.value


def test_a_spec_with_a_cycle_fails_check_no_cycles(ws: Workspace) -> None:
    doc = _basic_doc(ws)
    validate_spec(PipelineSpec.model_validate(doc))  # as compiled: valid
    doc["root"]["nodes"][0]["after"] = ["total"]  # load after total, which reads load's output
    err = _check_fails(doc)
    assert err.check == "check_no_cycles"
    assert "cycle" in str(err)
    assert "load" in str(err) and "total" in str(err)


def test_a_self_loop_fails_check_no_cycles(ws: Workspace) -> None:
    doc = _basic_doc(ws)
    doc["root"]["nodes"][1]["after"] = ["total"]
    assert _check_fails(doc).check == "check_no_cycles"


def test_an_unknown_output_reference_fails_check_references_exist(ws: Workspace) -> None:
    doc = _basic_doc(ws)
    doc["root"]["nodes"][1]["inputs"]["xs"] = {"task_output": {"node": "load", "output": "rows"}}
    err = _check_fails(doc)
    assert err.check == "check_references_exist"
    assert "'rows'" in str(err)
    assert err.where == "total"


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("unknown node", lambda d: d["root"]["nodes"][1]["inputs"].update(
            xs={"task_output": {"node": "ghost", "output": "output"}})),
        ("unknown parameter", lambda d: d["root"]["nodes"][0]["inputs"].update(
            n={"parameter": "rows"})),
        ("unknown after", lambda d: d["root"]["nodes"][1].update(after=["ghost"])),
        ("unknown step", lambda d: d["root"]["nodes"][1].update(step="ghost")),
        ("pipeline output", lambda d: d["root"]["outputs"].update(
            extra={"node": "total", "output": "nope"})),
    ],
)  # fmt: skip
def test_other_dangling_references_fail_check_references_exist(
    ws: Workspace, where: str, change: Any
) -> None:
    doc = _basic_doc(ws)
    change(doc)
    assert _check_fails(doc).check == "check_references_exist", where


def test_a_type_mismatch_in_a_spec_fails_check_types(ws: Workspace) -> None:
    doc = _basic_doc(ws)
    doc["steps"]["total"]["inputs"]["xs"]["type"] = "str"  # but load's output is a list
    err = _check_fails(doc)
    assert err.check == "check_types"
    assert "expects str" in str(err)
    assert "list" in str(err)
    assert err.where == "total"

    doc = _basic_doc(ws)
    doc["root"]["nodes"][0]["inputs"]["n"] = {"constant": "three"}
    err = _check_fails(doc)
    assert err.check == "check_types"
    assert "expects int" in str(err)


def test_a_type_mismatch_while_tracing_fails_check_types(ws: Workspace) -> None:
    source = """
    from argosy import pipeline, step


    @step
    def count() -> int:
        return 3


    @step
    def shout(text: str) -> str:
        return text.upper()


    @pipeline
    def mismatched():
        return shout(text=count())
    """
    with pytest.raises(ValidationError) as info:
        compile_source(ws, source)
    assert info.value.check == "check_types"
    assert "input 'text' of step 'shout' expects str" in str(info.value)
    assert "count.output" in str(info.value)


# -- node paths ----------------------------------------------------------------------------

NODE_PATHS = """
from argosy import pipeline, step


@step
def train(rate: float) -> float:
    return rate


@step
def best(a: float, b: float, c: float, d: float) -> float:
    return max(a, b, c, d)


@pipeline
def sweep():
    a = train(rate=0.1)
    b = train(rate=0.2)
    c = train.options(name="train_slow")(rate=0.01)
    d = train(rate=0.3)
    return best(a=a, b=b, c=c, d=d)
"""


def test_repeated_calls_get_numbered_node_paths_and_options_name_sets_one(
    ws: Workspace,
) -> None:
    spec = compile_source(ws, NODE_PATHS)
    assert [(n.name, n.step) for n in spec.root.nodes] == [
        ("train", "train"),
        ("train-2", "train"),
        ("train_slow", "train"),
        ("train-3", "train"),
        ("best", "best"),
    ]
    assert set(spec.steps) == {"train", "best"}  # one step definition, four nodes
    rates = {n.name: n.inputs["rate"].constant for n in spec.root.nodes if n.step == "train"}  # type: ignore[union-attr]
    assert rates == {"train": 0.1, "train-2": 0.2, "train_slow": 0.01, "train-3": 0.3}
    wired = {k: v.task_output.node for k, v in spec.root.nodes[-1].inputs.items()}  # type: ignore[union-attr]
    assert wired == {"a": "train", "b": "train-2", "c": "train_slow", "d": "train-3"}


def test_duplicate_explicit_node_names_fail_check_node_names(ws: Workspace) -> None:
    source = """
    from argosy import pipeline, step


    @step
    def fit(rate: float) -> float:
        return rate


    @pipeline
    def clash():
        fit.options(name="model")(rate=0.1)
        return fit.options(name="model")(rate=0.2)
    """
    with pytest.raises(ValidationError) as info:
        compile_source(ws, source)
    assert info.value.check == "check_node_names"
    assert "'model'" in str(info.value)
    assert "used twice" in str(info.value)


def test_options_give_one_call_its_own_resources(ws: Workspace) -> None:
    source = """
    from argosy import pipeline, step


    @step
    def train(n: int) -> int:
        return n


    @pipeline
    def sized():
        small = train(n=1)
        big = train.options(name="train_big", cpu=2)(n=2)
        return {"small": small, "big": big}
    """
    spec = compile_source(ws, source)
    assert spec.step_of("train").resources.cpu == 1.0
    assert spec.step_of("train_big").resources.cpu == 2.0


# -- parameters ----------------------------------------------------------------------------

PARAMS = """
from typing import Optional

from argosy import pipeline, step


@step
def show(n: int, rate: float, flag: bool, label: str, items: list, opts: dict,
         limit: Optional[int]) -> dict:
    return {"n": n}


@pipeline
def params(n: int, rate: float = 0.5, flag: bool = False, label: str = "x",
           items: list = [1, 2], opts: dict = {"a": 1}, limit: Optional[int] = None):
    return show(n=n, rate=rate, flag=flag, label=label, items=items, opts=opts, limit=limit)
"""


@pytest.fixture
def params_spec(ws: Workspace) -> PipelineSpec:
    return compile_source(ws, PARAMS)


def test_parameters_are_recorded_with_types_and_defaults(params_spec: PipelineSpec) -> None:
    p = params_spec.parameters
    assert {k: (v.type, v.required, v.default) for k, v in p.items()} == {
        "n": ("int", True, None),
        "rate": ("float", False, 0.5),
        "flag": ("bool", False, False),
        "label": ("str", False, "x"),
        "items": ("list", False, [1, 2]),
        "opts": ("dict", False, {"a": 1}),
        "limit": ("int", False, None),
    }
    assert p["limit"].optional


def test_unset_parameters_take_their_defaults(params_spec: PipelineSpec) -> None:
    assert bind_parameters(params_spec, {"n": "7"}) == {
        "n": 7, "rate": 0.5, "flag": False, "label": "x", "items": [1, 2], "opts": {"a": 1},
        "limit": None,
    }  # fmt: skip


def test_text_values_are_parsed_by_annotation(params_spec: PipelineSpec) -> None:
    bound = bind_parameters(
        params_spec,
        {
            "n": "-3",
            "rate": "2",
            "flag": "true",
            "label": "42",
            "items": '[1, "b", null]',
            "opts": '{"k": [1, 2], "z": null}',
            "limit": "10",
        },
    )
    assert bound == {
        "n": -3, "rate": 2.0, "flag": True, "label": "42", "items": [1, "b", None],
        "opts": {"k": [1, 2], "z": None}, "limit": 10,
    }  # fmt: skip
    assert type(bound["n"]) is int
    assert type(bound["rate"]) is float
    assert type(bound["label"]) is str  # a str parameter is never parsed as JSON
    assert bind_parameters(params_spec, {"n": "1", "rate": "1e-3"})["rate"] == 0.001


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
     ("false", False), ("FALSE", False), ("0", False), ("no", False), ("off", False)],
)  # fmt: skip
def test_bool_parameters_accept_common_spellings(
    params_spec: PipelineSpec, text: str, expected: bool
) -> None:
    assert bind_parameters(params_spec, {"n": "1", "flag": text})["flag"] is expected


@pytest.mark.parametrize("text", ["none", "null", "None"])
def test_optional_parameters_accept_none(params_spec: PipelineSpec, text: str) -> None:
    assert bind_parameters(params_spec, {"n": "1", "limit": text})["limit"] is None


@pytest.mark.parametrize(
    ("name", "text"),
    [("n", "x"), ("n", "1.5"), ("n", ""), ("rate", "fast"), ("flag", "maybe"), ("flag", "2"),
     ("items", '{"a": 1}'), ("items", "[1,"), ("items", "1, 2"), ("opts", "[1]"),
     ("opts", "a=1"), ("limit", "ten")],
)  # fmt: skip
def test_bad_values_are_usage_errors_naming_the_parameter(
    params_spec: PipelineSpec, name: str, text: str
) -> None:
    values = {"n": "1", name: text}
    with pytest.raises(UsageError) as info:
        bind_parameters(params_spec, values)
    message = str(info.value)
    assert f"parameter {name!r}" in message
    assert f"expects {params_spec.parameters[name].type}" in message
    assert repr(text) in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity"])
def test_non_finite_floats_are_rejected(params_spec: PipelineSpec, text: str) -> None:
    with pytest.raises(UsageError, match="parameter 'rate'"):
        bind_parameters(params_spec, {"n": "1", "rate": text})


def test_unknown_parameter_is_a_usage_error_listing_the_known_ones(
    params_spec: PipelineSpec,
) -> None:
    with pytest.raises(UsageError) as info:
        bind_parameters(params_spec, {"n": "1", "rows": "5"})
    message = str(info.value)
    assert "no parameter 'rows'" in message
    assert "n, rate, flag, label, items, opts, limit" in message


def test_missing_required_parameter_is_a_usage_error(params_spec: PipelineSpec) -> None:
    with pytest.raises(UsageError) as info:
        bind_parameters(params_spec, {"rate": "1"})
    assert "parameter 'n' of pipeline 'params' is required" in str(info.value)
    assert "-p n=VALUE" in str(info.value)


def test_typed_values_are_checked_not_parsed(params_spec: PipelineSpec) -> None:
    bound = bind_parameters(params_spec, {}, {"n": 3, "rate": 1, "items": ["a"], "limit": None})
    assert bound["n"] == 3
    assert bound["rate"] == 1.0 and type(bound["rate"]) is float
    assert bound["items"] == ["a"]
    for name, value in [("n", True), ("n", "3"), ("rate", "0.5"), ("flag", 1), ("opts", [])]:
        with pytest.raises(UsageError, match=f"parameter {name!r} expects"):
            bind_parameters(params_spec, {}, {"n": 1, name: value})
    with pytest.raises(UsageError, match="no parameter 'rows'"):
        bind_parameters(params_spec, {}, {"n": 1, "rows": 5})


# -- public surface --------------------------------------------------------------------------


def test_public_api_is_exactly_this() -> None:
    assert argosy.__all__ == [
        "ContainerStep",
        "Elif",
        "Else",
        "If",
        "Metrics",
        "Model",
        "Pipeline",
        "Run",
        "Step",
        "connect",
        "container_step",
        "exit_handler",
        "models",
        "one_of",
        "pipeline",
        "register_model",
        "runs",
        "serializer",
        "step",
    ]
    for name in argosy.__all__:  # each is the object its defining module gives that name
        exported = getattr(argosy, name)
        defined_in = importlib.import_module(exported.__module__)
        assert getattr(defined_in, name) is exported, name


HEAVY = ("pandas", "numpy", "sqlalchemy", "pydantic", "pyarrow", "polars", "alembic")

PROBE = """
import json, sys
args, watched = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["argosy", *args]
import argosy.cli.main as cli
code = None
try:
    cli.main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
print("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(args: list[str], heavy: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(heavy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    help_text, _, tail = proc.stdout.rpartition("\nPROBE ")
    assert tail, proc.stderr
    return help_text, json.loads(tail)


def test_help_imports_no_heavy_library() -> None:
    help_text, result = _probe(["--help"], HEAVY)
    assert result == {"code": 0, "heavy": []}
    assert "run" in help_text and "compile" in help_text and "artifacts" in help_text


def test_command_help_imports_no_data_or_database_library() -> None:
    # (the CLI library itself may use pydantic to convert options; argosy adds nothing heavy)
    heavy = ("pandas", "numpy", "sqlalchemy", "pyarrow", "polars", "alembic")
    for command in (["run"], ["compile"], ["artifacts", "get"]):
        help_text, result = _probe([*command, "--help"], heavy)
        assert result == {"code": 0, "heavy": []}, command
        assert "Usage" in help_text


def test_importing_the_sdk_and_the_step_launcher_stays_cheap() -> None:
    code = (
        # the code package too: the launcher imports it for every Python step
        "import json, sys, argosy, argosy.runtime.launcher, argosy.spec.code_package; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
