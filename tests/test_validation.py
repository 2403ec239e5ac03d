"""Bad pipelines and bad input: one clear line on stderr, exit code 2, and no run created."""

from __future__ import annotations

import pytest

from argosy.stores.metadata import runs as q
from tests.conftest import Workspace, outputs

HEADER = """
import pandas as pd
import numpy as np
from argosy import step, pipeline

@step
def make(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n)})

@step
def array_sum(a: np.ndarray) -> float:
    return float(a.sum())

@step
def use(df: pd.DataFrame, k: int = 1) -> int:
    return len(df) * k
"""

CASES = {
    "unknown_input": (
        """
@pipeline
def p(n: int = 3) -> int:
    return use(df=make(n=n), kk=2)
""",
        ["has no input 'kk'", "its inputs are: df, k", ".py:"],
    ),
    "type_mismatch": (
        """
@pipeline
def p(n: int = 3) -> float:
    return array_sum(a=make(n=n))
""",
        ["expects numpy.ndarray", "output make.output is pandas.DataFrame", ".py:"],
    ),
    "missing_required_input": (
        """
@pipeline
def p() -> int:
    return use(k=2)
""",
        ["required input 'df'", "use:", ".py:"],
    ),
    "parameter_type_mismatch": (
        """
@pipeline
def p(n: str = "3") -> int:
    return use(df=make(n=n))
""",
        ["expects int", "parameter 'n' is str"],
    ),
    "gpu_without_gpus": (
        """
@step(gpu=1)
def train(df: pd.DataFrame) -> int:
    return 1

@pipeline
def p(n: int = 3) -> int:
    return train(df=make(n=n))
""",
        ["gpu=1", "0 GPUs", "train:"],
    ),
    "too_much_memory": (
        """
@step(memory="100Ti")
def big(df: pd.DataFrame) -> int:
    return 1

@pipeline
def p(n: int = 3) -> int:
    return big(df=make(n=n))
""",
        ["memory=100", "--max-memory"],
    ),
    "too_many_cpus": (
        """
@step(cpu=64)
def wide(df: pd.DataFrame) -> int:
    return 1

@pipeline
def p(n: int = 3) -> int:
    return wide(df=make(n=n))
""",
        ["cpu=64", "--max-cpus"],
    ),
    "if_on_a_handle": (
        """
@pipeline
def p(n: int = 3) -> int:
    df = make(n=n)
    if df:
        return use(df=df)
    return use(df=df, k=2)
""",
        ["no value while the pipeline is being defined"],
    ),
    "missing_secret": (
        """
@step(secrets=["ARGOSY_TEST_NO_SUCH_SECRET"])
def needs_secret(df: pd.DataFrame) -> int:
    return 1

@pipeline
def p(n: int = 3) -> int:
    return needs_secret(df=make(n=n))
""",
        ["secret 'ARGOSY_TEST_NO_SUCH_SECRET' is not set", "secrets.env"],
    ),
    "object_output_without_serializer": (
        """
class Model:
    pass

@step
def fit(df: pd.DataFrame) -> Model:
    return Model()

@pipeline
def p(n: int = 3) -> None:
    fit(df=make(n=n))
""",
        ["has no built-in format", "serializer('joblib')"],
    ),
    "bad_step_option": (
        """
@step(retries=-1)
def bad(df: pd.DataFrame) -> int:
    return 1

@pipeline
def p(n: int = 3) -> int:
    return bad(df=make(n=n))
""",
        ["retries must be a whole number >= 0"],
    ),
    "import_error": (
        """
import no_such_module_anywhere
""",
        ["importing", "ModuleNotFoundError", "no_such_module_anywhere"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_pipeline_is_one_line_exit_2_and_no_run(ws: Workspace, case: str) -> None:
    body, expected = CASES[case]
    path = ws.write(HEADER + body)
    res = ws.argosy("run", str(path), "--max-gpus", "0", "--max-cpus", "2")
    assert res.code == 2, (res.code, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    if ws.home.exists():
        with ws.local().metadata.session() as s:
            assert q.list_runs(s, "default") == []


GOOD = (
    HEADER
    + """
@pipeline
def p(n: int = 3, k: int = 1) -> int:
    return use(df=make(n=n), k=k)
"""
)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-p", "n=abc"], "parameter 'n' expects int, got 'abc'"),
        (["-p", "nope=1"], "has no parameter 'nope'; its parameters are: n, k"),
        (["-p", "n"], "is not NAME=VALUE"),
    ],
)
def test_bad_parameters_are_usage_errors(ws: Workspace, args: list[str], fragment: str) -> None:
    path = ws.write(GOOD)
    res = ws.argosy("run", str(path), *args)
    assert res.code == 2
    assert fragment in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unknown_file_and_pipeline_names(ws: Workspace) -> None:
    res = ws.argosy("run", "nowhere.py")
    assert res.code == 2 and "not found" in res.stderr
    path = ws.write(GOOD)
    res = ws.argosy("run", f"{path}:missing")
    assert res.code == 2 and "has no pipeline named 'missing'; pipelines there: p" in res.stderr


def test_unknown_references_are_usage_errors(ws: Workspace) -> None:
    path = ws.write(GOOD)
    ok = ws.argosy("run", str(path), "-p", "n=4", "-p", "k=3", "--output", "json")
    assert ok.code == 0, ok.stderr
    assert outputs(ok.json()) == {"output": 12}
    for args in (
        ["runs", "show", "ZZZZZZ"],
        ["logs", "ZZZZZZ"],
        ["artifacts", "get", "ZZZZZZ", "--out", "x"],
    ):
        res = ws.argosy(*args)
        assert res.code == 2, args
        assert "no run id starts with" in res.stderr or "no artifact id starts with" in res.stderr
    res = ws.argosy("logs", ok.json()["id"], "nonode")
    assert res.code == 2 and "has no node 'nonode'" in res.stderr
