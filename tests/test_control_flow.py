"""Control flow: conditions, dynamic fan-out, exit handlers and sub-pipelines, locally."""

from __future__ import annotations

import itertools
import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace, outputs

BRANCHES = """
from argosy import step, pipeline, If, Elif, Else, one_of

@step
def accuracy(x: float) -> float:
    return x

@step
def deploy(acc: float) -> str:
    return f"deploy {acc}"

@step
def retrain(acc: float) -> str:
    return f"retrain {acc}"

@step
def alert(acc: float) -> str:
    return f"alert {acc}"

@step
def report(action: str) -> str:
    return action.upper()

@pipeline
def branches(x: float = 0.5, threshold: float = 0.9) -> str:
    acc = accuracy(x=x)
    with If(acc >= threshold):
        done = deploy(acc=acc)
    with Elif((acc >= 0.5) & (acc < threshold)):
        again = retrain(acc=acc)
    with Else():
        warned = alert(acc=acc)
    return report(action=one_of(done, again, warned))
"""


def _states(doc: dict[str, Any]) -> dict[str, str]:
    return {s["node_path"]: s["state"] for s in doc["tasks"]}


@pytest.mark.parametrize(
    ("x", "ran", "output"),
    [(0.95, "deploy", "DEPLOY 0.95"), (0.7, "retrain", "RETRAIN 0.7"), (0.2, "alert", "ALERT 0.2")],
)
def test_if_elif_else_runs_one_branch_and_one_of_merges(
    ws: Workspace, x: float, ran: str, output: str
) -> None:
    res = ws.argosy("run", str(ws.write(BRANCHES)), "-p", f"x={x}", "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    states = _states(doc)
    branches = {"deploy", "retrain", "alert"}
    assert states[ran] == "succeeded"
    for other in branches - {ran}:
        assert states[other] == "skipped"
    reasons = {s["node_path"]: s["reason"] for s in doc["tasks"]}
    assert all(reasons[b].startswith("condition_false: ") for b in branches - {ran})
    if ran != "deploy":
        assert f"accuracy.output >= 0.9 ({x} >= 0.9)" in reasons["deploy"]
    assert states["report"] == "succeeded"
    assert outputs(doc) == {"output": output}
    assert doc["status"] == "succeeded"


def test_a_step_that_needs_a_skipped_branch_is_skipped_with_the_reason(ws: Workspace) -> None:
    path = ws.write("""
        from argosy import step, pipeline, If

        @step
        def flag(on: bool) -> bool:
            return on

        @step
        def only_when_on() -> str:
            return "on"

        @step
        def uses(value: str) -> str:
            return value + "!"

        @pipeline
        def p(on: bool = False) -> str:
            with If(flag(on=on)):
                v = only_when_on()
            return uses(value=v)
    """)
    doc = ws.argosy("run", str(path), "--output", "json").json()
    assert doc["status"] == "succeeded"  # a branch not taken is not a failure
    steps = {s["node_path"]: s for s in doc["tasks"]}
    assert steps["only_when_on"]["state"] == "skipped"
    assert steps["uses"]["state"] == "skipped"
    assert steps["uses"]["reason"] == "upstream_skipped: only_when_on was skipped"
    on = ws.argosy("run", str(path), "-p", "on=true", "--output", "json").json()
    assert outputs(on) == {"output": "on!"}


FAN_OUT = """
import time
from argosy import step, pipeline

@step
def make_items(n: int) -> list:
    return [i * 10 for i in range(n)]

@step(cpu=0.25)
def work(item: int, fail_at: int = -1) -> int:
    time.sleep(0.6 if (item // 10) % 3 == 0 else 0.1)  # so iterations finish out of order
    if item == fail_at:
        raise RuntimeError(f"item {item} is bad")
    return item + 1

@step
def collect(results: list) -> list:
    return results

@pipeline
def fan(n: int = 20, fail_at: int = -1) -> list:
    results = work.map(make_items(n=n), parallelism=3, fail_at=fail_at)
    return collect(results=results)
"""


def _intervals(doc: dict[str, Any], prefix: str) -> list[tuple[float, float]]:
    spans = []
    for s in doc["tasks"]:
        if s["node_path"].startswith(prefix):
            for a in s["attempts"]:
                spans.append(
                    (
                        datetime.fromisoformat(a["started_at"]).timestamp(),
                        datetime.fromisoformat(a["finished_at"]).timestamp(),
                    )
                )
    return spans


def test_fan_out_over_an_upstream_list_respects_parallelism_and_keeps_order(ws: Workspace) -> None:
    res = ws.argosy(
        "run", str(ws.write(FAN_OUT)), "--max-cpus", "8", "--output", "json", timeout=240
    )
    assert res.code == 0, res.stderr
    doc = res.json()
    assert outputs(doc) == {"output": [i * 10 + 1 for i in range(20)]}
    nodes = [s["node_path"] for s in doc["tasks"]]
    assert {f"work[{i}]" for i in range(20)} <= set(nodes)
    spans = _intervals(doc, "work[")
    assert len(spans) == 20
    events = sorted({t for span in spans for t in span})
    most = max(
        sum(1 for s, e in spans if s <= (a + b) / 2 < e) for a, b in itertools.pairwise(events)
    )
    assert most == 3, f"{most} iterations ran at once; parallelism is 3"
    # they finished out of order (item 0 sleeps longest), yet the output keeps the item order
    finished = {
        int(s["node_path"][5:-1]): datetime.fromisoformat(s["attempts"][-1]["finished_at"])
        for s in doc["tasks"]
        if s["node_path"].startswith("work[")
    }
    assert finished[1] < finished[0] and finished[2] < finished[0]
    shown = ws.argosy("runs", "show", doc["id"])
    assert "work[19]" in shown.stdout


def test_one_failing_iteration_fails_the_map_after_the_others_finish(ws: Workspace) -> None:
    res = ws.argosy("run", str(ws.write(FAN_OUT)), "-p", "n=6", "-p", "fail_at=30",
                    "--max-cpus", "8", "--output", "json", timeout=240)  # fmt: skip
    assert res.code == 1
    doc = res.json()
    states = _states(doc)
    assert states["work[3]"] == "failed"
    assert all(states[f"work[{i}]"] == "succeeded" for i in (0, 1, 2, 4, 5))
    assert states["work"] == "failed"
    assert states["collect"] == "skipped"
    assert "work[3]" in doc["error"]
    assert "item 30 is bad" in json.dumps(doc)


EXIT = """
import time
from pathlib import Path
from argosy import step, pipeline, exit_handler

@step
def work(mode: str, gate: str) -> int:
    Path(gate, "started").write_text("x")
    if mode == "fail":
        raise RuntimeError("work failed")
    if mode == "hang":
        time.sleep(60)
    return 1

@step
def after_work(x: int) -> int:
    return x + 1

@step
def notify(status: dict, channel: str, gate: str) -> str:
    Path(gate, "status.json").write_text(__import__("json").dumps(status))
    return f"{channel}: {status['status']}"

@pipeline
def guarded(mode: str = "ok", gate: str = "/tmp") -> None:
    with exit_handler(notify, channel="ops", gate=gate):
        after_work(x=work(mode=mode, gate=gate))
"""


@pytest.mark.parametrize("mode", ["ok", "fail", "cancel"])
def test_exit_handler_runs_after_success_failure_and_cancel(
    ws: Workspace, tmp_path: Path, mode: str
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(EXIT)
    args = ["run", str(path), "-p", f"mode={'hang' if mode == 'cancel' else mode}",
            "-p", f"gate={gate}", "--output", "json"]  # fmt: skip
    if mode == "cancel":
        proc = ws.spawn(*args)
        deadline = time.monotonic() + 60
        while not (gate / "started").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: cancel the run
        out, _ = proc.communicate(timeout=60)
        doc = json.loads(out)
    else:
        doc = ws.argosy(*args).json()
    states = _states(doc)
    assert states["notify"] == "succeeded"
    status = json.loads((gate / "status.json").read_text())
    expected = {"ok": "succeeded", "fail": "failed", "cancel": "cancelled"}[mode]
    assert status["status"] == expected
    assert set(status["tasks"]) == {"work", "after_work"}
    if mode == "ok":
        assert status["tasks"]["work"]["state"] == "succeeded"
        assert doc["status"] == "succeeded"
    elif mode == "fail":
        assert status["tasks"]["work"]["state"] == "failed"
        assert "work failed" in status["tasks"]["work"]["reason"]
        assert status["tasks"]["after_work"]["state"] == "skipped"
        assert doc["status"] == "failed"
    else:
        assert status["tasks"]["work"]["state"] == "cancelled"
        assert doc["status"] == "cancelled"


def test_a_sub_pipeline_used_twice_with_different_inputs(ws: Workspace) -> None:
    path = ws.write("""
        from argosy import step, pipeline

        @step
        def clean(x: int) -> int:
            return x * 10

        @step
        def add(a: int, b: int) -> int:
            return a + b

        @pipeline
        def prep(x: int) -> int:
            return add(a=clean(x=x), b=1)

        @pipeline
        def outer(a: int = 1, b: int = 2) -> int:
            return add(a=prep(x=a), b=prep(x=b))
    """)
    res = ws.argosy("run", f"{path}:outer", "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert outputs(doc) == {"output": (10 + 1) + (20 + 1)}
    assert {"prep/clean", "prep/add", "prep-2/clean", "prep-2/add", "add"} == set(_states(doc))
    spec = ws.argosy("compile", f"{path}:outer", "--out", str(ws.root / "spec.json"))
    assert spec.code == 0
    compiled = json.loads((ws.root / "spec.json").read_text())
    assert [n["pipeline"] for n in compiled["root"]["nodes"]][:2] == ["prep", "prep"]
    assert [n["name"] for n in compiled["pipelines"]["prep"]["root"]["nodes"]] == ["clean", "add"]


def test_a_mapped_sub_pipeline_nests_node_paths(ws: Workspace) -> None:
    path = ws.write("""
        from argosy import step, pipeline

        @step
        def fit(fold: int) -> float:
            return fold / 2

        @step
        def score(model: float) -> float:
            return model + 1

        @pipeline
        def fold(fold: int) -> float:
            return score(model=fit(fold=fold))

        @pipeline
        def cv(folds: list = [0, 1, 2]) -> list:
            return fold.map(folds)
    """)
    res = ws.argosy("run", f"{path}:cv", "--output", "json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert outputs(doc) == {"output": [1.0, 1.5, 2.0]}
    assert {"fold[2]/fit", "fold[2]/score", "fold[0]/fit"} <= set(_states(doc))


def test_sigkill_during_a_fan_out_resumes_without_redoing_finished_iterations(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = ws.write(f"""
        import os, time
        from pathlib import Path
        from argosy import step, pipeline

        GATE = Path({str(gate)!r})

        @step(cpu=0.25)
        def work(item: int) -> int:
            Path(GATE, f"ran-{{item}}-{{os.getpid()}}").write_text("x")
            if item >= 4:
                while not (GATE / "release").exists():
                    time.sleep(0.05)
            return item * 2

        @pipeline
        def fan(items: list = [0, 1, 2, 3, 4, 5]) -> list:
            return work.map(items, parallelism=2)
    """)
    engine = ws.spawn("run", str(path), "--max-cpus", "4")
    deadline = time.monotonic() + 60
    while not list(gate.glob("ran-4-*")):
        assert time.monotonic() < deadline, "the fan-out never reached item 4"
        time.sleep(0.05)
    engine.send_signal(signal.SIGKILL)
    engine.wait(timeout=30)
    finished_before = {p.name.split("-")[1] for p in gate.glob("ran-*")} - {"4", "5"}
    assert finished_before == {"0", "1", "2", "3"}
    (gate / "release").write_text("go")
    runs = ws.argosy("runs", "list", "--output", "json").json()["runs"]
    res = ws.argosy("runs", "resume", runs[0]["id"], "--output", "json", timeout=120)
    assert res.code == 0, res.stderr
    doc = res.json()
    assert outputs(doc) == {"output": [0, 2, 4, 6, 8, 10]}
    runs_per_item = {}
    for p in gate.glob("ran-*"):
        item = p.name.split("-")[1]
        runs_per_item[item] = runs_per_item.get(item, 0) + 1
    for item in "0123":
        assert runs_per_item[item] == 1, f"finished iteration {item} was re-run"
    attempts = {s["node_path"]: s["attempts"] for s in doc["tasks"]}
    assert all(len(attempts[f"work[{i}]"]) == 1 for i in range(4))


BAD = {
    "condition_on_missing_output": (
        """
@step
def pair() -> Pair:
    return Pair(1, 2)

@pipeline
def p() -> None:
    with If(pair().third > 1):
        use(x=1)
""",
        "has no output 'third'",
    ),
    "fan_out_over_non_list": (
        """
@step
def one() -> int:
    return 1

@pipeline
def p() -> None:
    use.map(one())
""",
        "map() iterates over output one.output, which is int, not a list",
    ),
    "python_if_on_a_condition": (
        """
@step
def one() -> int:
    return 1

@pipeline
def p() -> None:
    if one() > 0:
        use(x=1)
""",
        "write `with If(condition):`",
    ),
    "else_without_if": (
        """
@pipeline
def p() -> None:
    with Else():
        use(x=1)
""",
        "Else must directly follow an If or Elif",
    ),
}

BAD_HEADER = """
from typing import NamedTuple
from argosy import step, pipeline, If, Else, exit_handler

class Pair(NamedTuple):
    first: int
    second: int

@step
def use(x: int) -> int:
    return x
"""


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_control_flow_is_rejected_before_anything_runs(ws: Workspace, case: str) -> None:
    body, fragment = BAD[case]
    res = ws.argosy("run", str(ws.write(BAD_HEADER + body)))
    assert res.code == 2, res.stderr
    assert fragment in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_exit_handler_reading_its_own_group_is_rejected(ws: Workspace) -> None:
    """The SDK cannot even express it (the handler's inputs come before its block), so the
    check guards specs written or edited by hand."""
    from argosy.errors import ValidationError
    from argosy.spec.models import PipelineSpec
    from argosy.spec.validate import validate_spec

    path = ws.write("""
        from argosy import step, pipeline, exit_handler

        @step
        def one() -> int:
            return 1

        @step
        def notify(status: dict, x: int = 0) -> None:
            pass

        @pipeline
        def p() -> None:
            with exit_handler(notify):
                one()
    """)
    assert ws.argosy("compile", str(path), "--out", str(ws.root / "spec.json")).code == 0
    doc = json.loads((ws.root / "spec.json").read_text())
    handler = next(n for n in doc["root"]["nodes"] if n["exit_handler"])
    assert handler["exit_handler"]["group"] == ["one"]
    handler["inputs"]["x"] = {"task_output": {"node": "one", "output": "output"}}
    with pytest.raises(ValidationError) as caught:
        validate_spec(PipelineSpec.model_validate(doc))
    assert caught.value.check == "check_exit_handlers"
    assert "comes from 'one', a step of its own group" in str(caught.value)
