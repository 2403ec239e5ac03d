"""Operations through one live server (SQLite, a folder store) that authenticates tokens of the
test OIDC issuer: log search among 50 runs, only for members of the tenant; ``/metrics``
scraped by a real Prometheus, the dashboard's queries against what the server exports; the
cost report through the API. Tenant ``ops-a`` (group ``a-team`` viewer, ``a-owners`` owner) ran 50
runs; tenant ``ops-b`` (group ``b-team``) ran one.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from argosy.api import API_PREFIX
from argosy.api.ops import LogSearchPage
from argosy.client.client import Client
from argosy.client.http import HttpBackend
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.oidc_issuer import OidcIssuer
from tests.oidc_issuer import oidc_issuer as oidc_issuer  # the fixture
from tests.server_fixture import ServerProcess, oidc_env, start_server

ADMIN = {"sub": "root-admin", "groups": ["platform-admins"]}
A_VIEWER = {"sub": "ann", "groups": ["a-team"]}
A_OWNER = {"sub": "olga", "groups": ["a-owners"]}
A_OWNER_2 = {"sub": "oscar", "groups": ["a-owners"]}
B_VIEWER = {"sub": "ben", "groups": ["b-team"]}
NEEDLE = "zebra-quokka-4242"
SCRAPE = "scrape-token-for-prometheus-0123"
NEEDLE_RUN = 37
RUNS = 50

PIPES = textwrap.dedent(
    f"""
    from argosy import pipeline, step


    @step
    def prep(i: int) -> int:
        print(f"preparing item {{i}}")
        if i == {NEEDLE_RUN}:
            print("found the {NEEDLE} in the data")
        print(f"training on {{i}}", flush=True)
        return i * 2


    @pipeline
    def sweep(i: int = 0) -> int:
        return prep(i)
    """
)


@dataclass
class Ops:
    server: ServerProcess
    tokens: dict[str, str]
    runs: list[str]  # of ops-a, in the order of i
    b_run: str

    def client(self, who: str, tenant: str = "ops-a") -> Client:
        return Client(self.server.url, token=self.tokens[who], tenant=tenant)

    def search(self, who: str, query: str, tenant: str = "ops-a", **kw: Any) -> LogSearchPage:
        return HttpBackend(self.client(who, tenant)).search_logs(query, **kw)

    def get(self, who: str, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            self.server.url + path, params=params, timeout=30,
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        )  # fmt: skip


@pytest.fixture(scope="module")
def ops(oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    home = tmp_path_factory.mktemp("ops-server")
    env = oidc_env(oidc_issuer.issuer, ARGOSY_SERVER_MAX_RUNS="8", ARGOSY_METRICS_TOKEN=SCRAPE)
    server = start_server(home, env)
    try:
        people = {"admin": ADMIN, "a_viewer": A_VIEWER, "a_owner": A_OWNER,
                  "a_owner_2": A_OWNER_2, "b_viewer": B_VIEWER}  # fmt: skip
        tokens = {k: oidc_issuer.token(**v) for k, v in people.items()}  # type: ignore[arg-type]
        admin = Client(server.url, token=tokens["admin"], tenant="ops-a")
        for tenant in ("ops-a", "ops-b"):
            admin.create_tenant(tenant)
        admin.add_member("viewer", "group", "a-team")
        admin.add_member("owner", "group", "a-owners")
        Client(server.url, token=tokens["admin"], tenant="ops-b").add_member(
            "viewer", "group", "b-team"
        )
        (home / "ops_pipes.py").write_text(PIPES)
        compiled = compile_pipeline(load_pipeline(f"{home / 'ops_pipes.py'}:sweep"))
        admin.push_pipeline(compiled)
        runs = [admin.create_run("sweep", parameters={"i": i}).id for i in range(RUNS)]
        admin_b = Client(server.url, token=tokens["admin"], tenant="ops-b")
        admin_b.push_pipeline(compiled)
        b_run = admin_b.create_run("sweep", parameters={"i": NEEDLE_RUN}).id  # the same line
        for run_id in runs:
            assert admin.wait(run_id, poll=0.3, timeout=300).status == "succeeded"
        assert admin_b.wait(b_run, poll=0.3, timeout=120).status == "succeeded"
        yield Ops(server, tokens, runs, b_run)
    finally:
        server.stop(timeout=30)


def test_search_finds_the_line_of_one_step_among_50_runs_for_members_only(ops: Ops) -> None:
    page = ops.search("a_viewer", NEEDLE)
    assert [h.run_id for h in page.items] == [ops.runs[NEEDLE_RUN]]
    hit = page.items[0]
    assert (hit.node_path, hit.step_name, hit.attempt, hit.pipeline) == ("prep", "prep", 1, "sweep")
    assert NEEDLE in hit.line and hit.stream == "out" and hit.line_number == 2
    # the hit links to its run's logs: that line is there
    lines = ops.client("a_viewer").logs(hit.run_id, node="prep").items
    assert any(NEEDLE in line.line for line in lines)
    # another tenant's member: refused in ops-a, and their own tenant's search sees only theirs
    refused = ops.get("b_viewer", f"{API_PREFIX}/tenants/ops-a/logs/search", q=NEEDLE)
    assert refused.status_code == 403
    theirs = ops.search("b_viewer", NEEDLE, "ops-b")
    assert [h.run_id for h in theirs.items] == [ops.b_run]
    anonymous = httpx.get(f"{ops.server.url}{API_PREFIX}/tenants/ops-a/logs/search?q=x")
    assert anonymous.status_code == 401


def test_search_filters_and_pages(ops: Ops) -> None:
    everything = ops.search("a_viewer", "training", limit=500)
    assert len(everything.items) == RUNS and everything.next_cursor is None
    assert {h.step_name for h in everything.items} == {"prep"}
    # pages: newest first, no line twice, the same lines in all
    seen: list[str] = []
    cursor = None
    while True:
        page = ops.search("a_viewer", "training", limit=20, cursor=cursor)
        seen += [f"{h.attempt_id}:{h.line_number}" for h in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == RUNS
    one = ops.search("a_viewer", "item", run=ops.runs[3])
    assert [h.line for h in one.items] == ["preparing item 3"]
    assert [h.line_number for h in ops.search("a_viewer", "training", run=ops.runs[3]).items] == [2]
    assert len(ops.search("a_viewer", "training", step="prep", limit=500).items) == RUNS
    assert not ops.search("a_viewer", "training", step="train").items
    assert not ops.search("a_viewer", "training", stream="err").items
    assert not ops.search("a_viewer", "training", pipeline="other").items
    later = ops.search("a_viewer", "training", since=datetime(2999, 1, 1, tzinfo=UTC))
    assert not later.items
    bad = ops.get("a_viewer", f"{API_PREFIX}/tenants/ops-a/logs/search", q="x", cursor="nope")
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"


def test_cli_search_through_the_server(ops: Ops, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env.update(ARGOSY_HOME=str(tmp_path / "state"), ARGOSY_SERVER=ops.server.url,
               ARGOSY_TOKEN=ops.tokens["a_viewer"], ARGOSY_TENANT="ops-a")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "logs", "--search", NEEDLE, "-o", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [h["run_id"] for h in json.loads(done.stdout)["items"]] == [ops.runs[NEEDLE_RUN]]


# -- metrics ------------------------------------------------------------------------------------
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_metrics_are_protected(ops: Ops) -> None:
    url = f"{ops.server.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert ops.get("a_owner", "/metrics").status_code == 403
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-scrape-token"})
    assert wrong.status_code == 401
    for headers in ({"Authorization": f"Bearer {SCRAPE}"},
                    {"Authorization": f"Bearer {ops.tokens['admin']}"}):  # fmt: skip
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 200 and "argosy_runs" in answer.text


def _exported(ops: Ops) -> set[str]:
    """The series names /metrics can hold (a histogram's _bucket/_sum/_count, a counter's _total)."""
    text = httpx.get(
        f"{ops.server.url}/metrics", headers={"Authorization": f"Bearer {SCRAPE}"}
    ).text
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {
                "counter": {name + "_total", name},
                "histogram": {name + "_bucket", name + "_sum", name + "_count"},
            }.get(kind, {name})
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    return names


def test_every_dashboard_query_names_a_series_the_server_exports(ops: Ops) -> None:
    import json
    import re

    dashboard = json.loads((DEPLOY / "grafana" / "argosy.json").read_text())
    exported = _exported(ops)
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bargosy_[a-z_]+", target["expr"]))
    assert used and used <= exported, sorted(used - exported)
    rules = (DEPLOY / "prometheus" / "alerts.yaml").read_text()
    in_rules = set(re.findall(r"\bargosy_[a-z_]+", rules))
    assert in_rules <= exported, sorted(in_rules - exported)


@pytest.fixture(scope="module")
def prometheus(ops: Ops, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus (Debian's) scraping the server every second with the scrape token."""
    import shutil
    import socket
    import subprocess
    import time
    from urllib.parse import urlsplit

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    target = urlsplit(ops.server.url).netloc
    (folder / "prometheus.yml").write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        rule_files: ["{DEPLOY / 'prometheus' / 'alerts.yaml'}"]
        scrape_configs:
          - job_name: argosy
            authorization: {{credentials: "{SCRAPE}"}}
            static_configs: [{{targets: ["{target}"]}}]
        """))  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(folder / "prometheus.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (folder / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_a_real_prometheus_scrapes_the_series(ops: Ops, prometheus: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while not _query(prometheus, 'argosy_runs{tenant="ops-a", status="succeeded"}'):
        assert time.monotonic() < deadline, _query(prometheus, "up")
        time.sleep(0.5)
    runs = _query(prometheus, 'argosy_runs{tenant="ops-a", status="succeeded"}')
    assert [(r["metric"]["pipeline"], r["value"][1]) for r in runs] == [("sweep", str(RUNS))]
    assert _query(prometheus, 'up{job="argosy"}')[0]["value"][1] == "1"
    for expr in (
        "argosy_scheduler_leader == 1",
        'argosy_tasks{tenant="ops-a", state="succeeded"}',
        'argosy_task_attempts_total{tenant="ops-a", outcome="succeeded"}',
        "argosy_http_requests_total",
        "argosy_db_query_duration_seconds_count",
        'argosy_executor_capacity{resource="cpu"}',
        "argosy_scheduler_lease_changes_total",
    ):
        assert _query(prometheus, expr), expr
    # no run id in any label: the number of series stays bounded by tenants and pipelines
    labels = httpx.get(f"{prometheus}/api/v1/labels", timeout=10).json()["data"]
    assert "run_id" not in labels and "run" not in labels
    routes = {r["metric"]["route"] for r in _query(prometheus, "argosy_http_requests_total")}
    assert all("{" in r or r.count("/") < 6 for r in routes), routes  # templates, not paths


def test_the_alert_rules_check_and_pass_their_unit_tests() -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    folder = DEPLOY / "prometheus"
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]):
        done = subprocess.run([promtool, *args], cwd=folder, capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


# -- cost ---------------------------------------------------------------------------------------
def test_cost_by_tenant_equals_the_sum_by_run(ops: Ops) -> None:
    import math

    admin = HttpBackend(ops.client("admin"))
    by_run = ops.client("a_viewer")
    runs = HttpBackend(by_run).cost_report("run")
    assert len(runs.items) == RUNS and {line.key for line in runs.items} == set(ops.runs)
    assert all(line.cost > 0 and line.attempts == 1 for line in runs.items)
    tenants = {line.key: line.cost for line in admin.cost_report("tenant", all_tenants=True).items}
    assert math.isclose(tenants["ops-a"], sum(line.cost for line in runs.items), rel_tol=1e-9)
    assert math.isclose(tenants["ops-a"], runs.total, rel_tol=1e-9)
    one = HttpBackend(by_run).cost_report("task", run=ops.runs[5])
    assert [line.key for line in one.items] == [f"{ops.runs[5]}/prep"]
    refused = ops.get("a_viewer", f"{API_PREFIX}/costs")
    assert refused.status_code == 403
    budget = HttpBackend(by_run).budget()
    assert budget.state == "none" and budget.month_to_date > 0
