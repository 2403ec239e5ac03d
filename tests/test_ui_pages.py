"""The web UI in process: the graph of a spec (fan-out, sub-pipelines, conditions, exit
handlers, collapsing) and its layout, the launch form's parsing, the run's event stream
(task and run events), error pages versus problem documents, and the response headers.

One local state folder with two finished runs (the control-flow example and a failing
pipeline) is served by the application itself (``create_app`` on that state, every request
the local user) through Starlette's test client. The browser tests are test_ui_browser.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from argosy.config import load_settings
from argosy.server.app import create_app
from argosy.server.context import ServerContext
from argosy.server.ui import graph
from argosy.server.ui.pipelines import form_fields, parse_form
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline

with warnings.catch_warnings():  # Starlette asks for httpx2, which is not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
PIPE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def boom(rate: float, tags: list, verbose: bool = False) -> int:
        print("<i>about to fail</i>")
        raise RuntimeError("boom <b>")

    @pipeline
    def failing(rate: float, tags: list = [], verbose: bool = False, note: str = "x"):
        boom(rate=rate, tags=tags, verbose=verbose)
    """
)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("ui-pages")
    (work / "failing_pipe.py").write_text(PIPE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(work / ".argosy")
    runs = {}
    for target, params in ((f"{ROOT}/examples/control_flow.py:model_selection", ["folds=2"]),
                           ("failing_pipe.py:failing", ["rate=0.5"])):  # fmt: skip
        args = [sys.executable, "-m", "argosy", "run", target, "--output", "json"]
        for p in params:
            args += ["-p", p]
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, timeout=300,
                              check=False)  # fmt: skip
        import json

        doc = json.loads(done.stdout)
        runs[doc["pipeline"]] = doc
    settings = load_settings(home=work / ".argosy", insecure_dev=True, encryption=False)
    context = ServerContext.open(settings)
    with TestClient(create_app(context)) as client:
        yield {"client": client, "runs": runs, "work": work}
    context.metadata.close()


HTML = {"Accept": "text/html"}


def test_the_graph_of_control_flow() -> None:
    spec = compile_pipeline(load_pipeline(f"{ROOT}/examples/control_flow.py:model_selection")).spec
    nodes, edges, groups, subpipelines = graph.pipeline_graph(spec)
    keys = {n.key for n in nodes}
    assert keys == {"make_folds", "fold/fit", "fold/check", "mean", "notify", "promote",
                    "review", "reject"}  # fmt: skip
    assert groups == ("fold",) and subpipelines == ("fold",)
    kinds = {(e.source, e.target): e.kind for e in edges}
    assert kinds["make_folds", "fold/fit"] == "data"  # the fan-out's items reach the inner step
    assert kinds["fold/fit", "fold/check"] == "data"
    assert kinds["fold/check", "mean"] == "data"  # the sub-pipeline's output
    assert kinds["mean", "notify"] == "exit"
    by_key = {n.key: n for n in nodes}
    assert by_key["fold/fit"].mapped and not by_key["mean"].mapped
    assert by_key["promote"].condition == "mean.output >= threshold"
    assert "not (mean.output >= threshold)" in (by_key["reject"].condition or "")
    assert by_key["notify"].exit_handler
    collapsed, edges2, groups2, _ = graph.pipeline_graph(spec, ["fold"])
    assert "fold" in {n.key for n in collapsed} and groups2 == ()
    assert ("make_folds", "fold") in {(e.source, e.target) for e in edges2}
    drawing = graph.layout(nodes, edges)
    boxes = {b.node.key: b for b in drawing.boxes}
    assert boxes["make_folds"].x < boxes["fold/fit"].x < boxes["fold/check"].x < boxes["mean"].x
    assert len(drawing.lines) == len(edges) and all(
        line.d.startswith("M") for line in drawing.lines
    )
    assert graph.layout(nodes, edges) is drawing  # cached by structure


def test_states_of_a_box() -> None:
    assert graph.node_key("fold[12]/fit") == "fold/fit" and graph.node_key("train[3]") == "train"
    assert graph.aggregate(["succeeded", "cached"]) == "succeeded"
    assert graph.aggregate(["cached"]) == "cached"
    assert graph.aggregate(["succeeded", "running", "failed"]) == "failed"
    assert graph.aggregate(["succeeded", "pending"]) == "running"
    assert graph.aggregate(["skipped"]) == "skipped"
    assert graph.aggregate([]) == "pending"


def test_the_launch_form_types_and_messages(state: dict[str, Any]) -> None:
    spec = compile_pipeline(load_pipeline(f"{state['work']}/failing_pipe.py:failing")).spec
    fields = {f.name: f for f in form_fields(spec)}
    assert (fields["rate"].kind, fields["rate"].required) == ("number", True)
    assert (fields["tags"].kind, fields["tags"].default) == ("json", "[]")
    assert (fields["verbose"].kind, fields["verbose"].default) == ("checkbox", "false")
    assert fields["note"].kind == "text" and fields["note"].default == "x"
    values, problems = parse_form(spec, {"rate": "0.25", "tags": '["a"]', "verbose": "true"})
    assert values == {"rate": 0.25, "tags": ["a"], "verbose": True} and problems == {}
    _, problems = parse_form(spec, {"rate": "fast", "tags": "{", "bogus": "1"})
    assert set(problems) == {"rate", "tags", "bogus"} and "expects float" in problems["rate"]
    _, problems = parse_form(spec, {})
    assert problems == {"rate": "parameter 'rate' is required"}


def test_the_event_stream_sends_task_states(state: dict[str, Any]) -> None:
    client: TestClient = state["client"]
    run = state["runs"]["model_selection"]
    path = f"/api/v1/tenants/default/runs/{run['id']}/logs/stream"
    text = client.get(path, params={"events": "task"}).text
    events = [block for block in text.split("\n\n") if block.startswith("event:")]
    tasks = [b for b in events if b.startswith("event: task")]
    assert len(tasks) == len(run["tasks"])  # every task once: nothing changes in a done run
    assert '"node_path":"promote"' in text and "condition_false" in text
    assert "event: line" not in text and events[-1].startswith("event: end")
    assert any(b.startswith("event: run") and "succeeded" in b for b in events)
    both = client.get(path).text
    assert "event: line" in both and "event: task" in both
    assert client.get(path, params={"events": "everything"}).status_code == 422


def test_pages_errors_and_headers(state: dict[str, Any]) -> None:
    client: TestClient = state["client"]
    failing = state["runs"]["failing"]
    page = client.get(f"/t/default/runs/{failing['id']}", headers=HTML)
    assert page.status_code == 200
    assert 'data-node="boom"' in page.text and "state-failed" in page.text
    csp = page.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp
        and "unsafe" not in csp
        and page.headers["x-frame-options"] == "DENY"
    )
    assert page.headers["cache-control"] == "no-store"
    panel = client.get(f"/t/default/runs/{failing['id']}/steps/boom?fragment=true", headers=HTML)
    assert "&lt;i&gt;about to fail&lt;/i&gt;" in panel.text and "<i>" not in panel.text
    assert "RuntimeError" in panel.text and "run-error" in panel.text
    log = client.get(f"/t/default/runs/{failing['id']}/log.txt", params={"node": "boom"})
    assert log.headers["content-type"].startswith("text/plain") and "about to fail" in log.text
    # errors: a page for a browser, the API's problem otherwise
    missing = client.get("/t/default/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=HTML)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in missing.headers["content-security-policy"]
    problem = client.get("/t/default/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert problem.status_code == 404
    assert problem.headers["content-type"].startswith("application/problem+json")
    bad = client.get("/t/Not_A_Tenant/runs", headers=HTML)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    # every response has headers, API ones a CSP that allows nothing
    api = client.get("/api/v1/tenants/default/runs")
    assert (
        api.headers["content-security-policy"]
        == "default-src 'none'; frame-ancestors 'none'; sandbox"
    )
    asset = client.get("/static/ui.js")
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/other.js").status_code == 404
    # a run list filtered, and a cursor that is not one
    runs = client.get("/t/default/runs", params={"status": "failed"}, headers=HTML)
    assert (
        failing["id"][:10] in runs.text
        and state["runs"]["model_selection"]["id"][:10] not in runs.text
    )
    assert client.get("/t/default/runs", params={"cursor": "zzz"}, headers=HTML).status_code == 422
    assert (
        client.get("/t/default/runs", params={"since": "yesterday"}, headers=HTML).status_code
        == 422
    )


def test_artifact_previews(state: dict[str, Any]) -> None:
    client: TestClient = state["client"]
    run = state["runs"]["model_selection"]
    artifacts = client.get(f"/api/v1/tenants/default/runs/{run['id']}/artifacts").json()
    by_node = {a["node_path"]: a for a in artifacts}
    mean = client.get(f"/t/default/artifacts/{by_node['mean']['id']}", headers=HTML)
    assert mean.status_code == 200 and 'pre class="json"' in mean.text
    lineage = client.get(f"/t/default/artifacts/{by_node['mean']['id']}/lineage", headers=HTML)
    assert lineage.status_code == 200 and 'data-kind="task"' in lineage.text
    assert f"/t/default/runs/{run['id']}/steps/mean" in lineage.text  # the producing step
    assert 'data-node="task:' in lineage.text
    image = client.get(f"/t/default/artifacts/{by_node['mean']['id']}/image")
    assert image.status_code == 404  # a float is no picture
