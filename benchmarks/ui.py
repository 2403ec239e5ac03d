"""Web UI server time: the run page of a 200-step run, and the run list over 100,000 runs.

    .venv/bin/python benchmarks/ui.py                    # 100,000 runs, 200 requests per page
    .venv/bin/python benchmarks/ui.py --runs 20000 --requests 50 --json
    .venv/bin/python benchmarks/ui.py --database-url postgresql+psycopg://...   # an empty DB

Builds a metadata database (SQLite in a temporary folder unless ``--database-url``) with one
tenant holding ``--runs`` finished runs of 10 pipelines (bulk insert, as api.py does) and one
run of a 200-step pipeline (a layered DAG: each step reads one to three of the ten steps
before it) with its 200 tasks in a mix of states. Then it serves the real application
(``create_app``: admission, authorization, audit, security headers, templates) in process and
asks, as a viewer holding an API token (every request authenticated and authorized for
real), each page ``--requests`` times one after the other:

- ``GET /t/bench/runs``: the first page of 50, filtered by status, filtered by pipeline, and
  the 20th page by cursor;
- ``GET /t/bench/runs/RUN`` of the 200-step run: **warm** (its graph's layout cached, as for
  every view after the first of a pipeline version) and **cold** (the layout cache cleared
  before each request: the first view of a version);
- ``GET /t/bench/runs/RUN/steps/NODE?fragment=true``: one step's panel.

Statistics are gathered after the fill (``ANALYZE``), as PostgreSQL's autovacuum does; on
SQLite, which keeps none unless asked, the unfiltered run list is several times slower
without them (``--no-analyze`` shows it).

"Server time" is from the request entering the application to the last byte of its answer,
measured in the same process (no network). Target: p99 under 100 ms for the run list and for
the warm run page. Prints a Markdown table, or one JSON document with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

TENANT = "bench"
STEPS = 200
STATUSES = ["succeeded", "failed", "cancelled", "succeeded", "succeeded"]
TASK_STATES = ["succeeded"] * 6 + ["running", "queued", "pending", "failed", "skipped", "cached"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def big_spec(steps: int) -> Any:
    """A pipeline of ``steps`` Python steps, each reading 1-3 of the 10 before it."""
    from argosy.spec.models import (
        DagSpec,
        InputSpec,
        NodeSpec,
        OutputReference,
        PipelineSpec,
        PythonImplementation,
        StepSpec,
        TaskOutputInput,
        TypeSpec,
    )

    rng = random.Random(7)
    fake = "sha256:" + "0" * 64
    impl = PythonImplementation(module="bench", function="f", code=fake, environment=fake,
                                python="3.11.7", returns="single")  # fmt: skip
    step_specs = {}
    nodes = []
    for i in range(steps):
        parents = sorted(rng.sample(range(max(0, i - 10), i), k=min(i, rng.randint(1, 3))))
        inputs = {f"x{p}": InputSpec(type="int") for p in parents}
        step_specs[f"s{i}"] = StepSpec(name=f"s{i}", implementation=impl, inputs=inputs,
                                       outputs={"output": TypeSpec(type="int")})  # fmt: skip
        bindings = {
            f"x{p}": TaskOutputInput(task_output=OutputReference(node=f"step_{p}", output="output"))
            for p in parents
        }
        nodes.append(NodeSpec(name=f"step_{i}", step=f"s{i}", inputs=bindings))
    return PipelineSpec(name="big", steps=step_specs, root=DagSpec(nodes=nodes))


def fill(url: str, count: int, analyze: bool = True) -> tuple[str, str]:
    """The database: ``count`` runs of 10 pipelines and one 200-step run; (run id, token)."""
    from sqlalchemy import insert, text

    from argosy.auth import bindings, tokens
    from argosy.auth.policy import Role
    from argosy.ids import new_id
    from argosy.stores.metadata import runs as q
    from argosy.stores.metadata.db import MetadataStore
    from argosy.stores.metadata.tables import Pipeline, PipelineVersion, Run, Task

    store = MetadataStore.open(url)
    now = datetime.now(UTC)
    with store.session() as s:
        bindings.create_tenant(s, TENANT, display_name="Benchmark", created_by="bench", now=now)
        bindings.add_binding(s, TENANT, role=Role.owner, subject_kind="user", subject="bench",
                             created_by="bench", now=now)  # fmt: skip
        _, token = tokens.create_token(
            s, tenant=TENANT, name="bench", role=Role.viewer, lifetime=timedelta(days=1),
            created_by="bench", creator_role=Role.owner, now=now,
        )  # fmt: skip
        pipelines = []
        for i in range(10):
            pid, vid = new_id(), new_id()
            s.add(Pipeline(id=pid, tenant=TENANT, name=f"p{i}", created_at=now,
                           created_by="bench"))  # fmt: skip
            s.flush()
            s.add(PipelineVersion(id=vid, tenant=TENANT, pipeline_id=pid,
                                  digest=f"sha256:{i:064x}", spec={}, provenance=None,
                                  created_at=now, created_by="bench"))  # fmt: skip
            pipelines.append((pid, vid))
        s.flush()
        batch: list[dict[str, Any]] = []
        for n in range(count):
            pid, vid = pipelines[n % 10]
            created = now - timedelta(seconds=count - n)
            batch.append({
                "id": new_id(), "tenant": TENANT, "pipeline_id": pid, "pipeline_version_id": vid,
                "status": STATUSES[(n // 10) % len(STATUSES)], "parameters": {"x": n},
                "options": {}, "cancel_requested": False, "created_at": created,
                "created_by": f"user{n % 7}", "started_at": created, "finished_at": created,
            })  # fmt: skip
            if len(batch) == 5000:
                s.execute(insert(Run), batch)
                batch = []
        if batch:
            s.execute(insert(Run), batch)
        version = q.ensure_pipeline_version(s, TENANT, big_spec(STEPS), "bench")
        run_id = new_id()
        s.add(Run(id=run_id, tenant=TENANT, pipeline_id=version.pipeline_id,
                  pipeline_version_id=version.id, status="running", parameters={},
                  options={}, cancel_requested=False, created_at=now, created_by="bench",
                  started_at=now))  # fmt: skip
        s.flush()
        s.execute(insert(Task), [
            {"id": new_id(), "tenant": TENANT, "run_id": run_id, "node_path": f"step_{i}",
             "step_name": f"s{i}", "state": TASK_STATES[i % len(TASK_STATES)],
             "attempt_count": 1, "failures": 0, "created_at": now, "created_by": "bench",
             "started_at": now, "cache": {"status": "miss", "reason": "no earlier run"}}
            for i in range(STEPS)
        ])  # fmt: skip
        # statistics, as PostgreSQL's autovacuum keeps them (SQLite keeps none until ANALYZE or
        # PRAGMA optimize: without them it sorts a tenant's runs instead of walking the id index)
        if analyze:
            s.execute(text("ANALYZE"))
    store.engine.dispose()
    return run_id, token


def measure(client: Any, path: str, n: int, before: Any = None) -> list[float]:
    times = []
    for _ in range(n):
        if before is not None:
            before()
        t0 = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - t0)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite)")
    parser.add_argument(
        "--postgres", action="store_true",
        help="on a throw-away PostgreSQL cluster of this machine (tests/pg_fixture.py)",
    )  # fmt: skip
    parser.add_argument("--no-analyze", action="store_true", help="no ANALYZE after the fill")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cluster = None
    if args.postgres and not args.database_url:
        sys.path.insert(0, str(HERE.parent))
        from tests.pg_fixture import PostgresCluster, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("no PostgreSQL server binaries (apt-get install postgresql)", file=sys.stderr)
            return 2
        cluster = PostgresCluster(bin_dir)
        cluster.init()
        cluster.start()
        args.database_url = cluster.url(cluster.create_database())
    try:
        return _run(args)
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.remove()


def _run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from argosy.config import Settings
    from argosy.server.app import create_app
    from argosy.server.context import ServerContext
    from argosy.server.ui import graph

    with tempfile.TemporaryDirectory(prefix="argosy-ui-bench-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/argosy.db"
        started = time.perf_counter()
        from argosy.stores.metadata.db import MetadataStore

        MetadataStore.open(url).engine.dispose()  # the schema
        run_id, token = fill(url, args.runs, analyze=not args.no_analyze)
        fill_s = time.perf_counter() - started
        settings = Settings(home=Path(tmp), database_url=url, encryption=False,
                            rate_limit_per_minute=0)  # fmt: skip
        context = ServerContext.open(settings)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/html"}
        rows: list[dict[str, Any]] = []
        with TestClient(create_app(context), headers=headers) as client:
            first = client.get(f"/t/{TENANT}/runs").text
            cursor_path = f"/t/{TENANT}/runs"
            for _ in range(19):  # the 20th page
                found = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
                cursor_path = found
                first = client.get(found).text
            n = args.requests
            cases = [
                (f"run list, first page (50 of {args.runs} runs)", f"/t/{TENANT}/runs", None),
                ("run list, status=failed", f"/t/{TENANT}/runs?status=failed", None),
                ("run list, pipeline=p3", f"/t/{TENANT}/runs?pipeline=p3", None),
                ("run list, 20th page (cursor)", cursor_path, None),
                (f"run page, {STEPS} steps (layout cached)", f"/t/{TENANT}/runs/{run_id}", None),
                (f"run page, {STEPS} steps (first view: layout computed)",
                 f"/t/{TENANT}/runs/{run_id}", graph.layout.cache_clear),
                ("step panel (fragment)", f"/t/{TENANT}/runs/{run_id}/steps/step_120?fragment=true",
                 None),
            ]  # fmt: skip
            for name, path, before in cases:
                count = n if before is None else max(5, n // 10)
                measure(client, path, 3, before)  # warm-up
                times = measure(client, path, count, before)
                rows.append({
                    "page": name, "requests": count,
                    "p50_ms": round(statistics.median(times) * 1000, 1),
                    "p99_ms": round(percentile(times, 99) * 1000, 1),
                    "max_ms": round(max(times) * 1000, 1),
                })  # fmt: skip
        context.metadata.close()
    database = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    doc = {"runs": args.runs, "steps": STEPS, "database": database,
           "fill_seconds": round(fill_s, 1), "rows": rows, "target_p99_ms": 100}  # fmt: skip
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Web UI server time ({database}, {args.runs} runs, one {STEPS}-step run; "
          f"in process, a viewer's API token)\n")  # fmt: skip
    print("| page | requests | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['page']} | {r['requests']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
