"""Server API latency: run listing with 100,000 runs, and submission to first task start.

    .venv/bin/python benchmarks/api.py                 # 100,000 runs, 300 requests per query
    .venv/bin/python benchmarks/api.py --runs 20000 --requests 100

Run by ``make bench`` (``benchmarks/run.py``, section (f), with ``--json``) and on its own:
starts its own PostgreSQL cluster
(``tests/pg_fixture.py``) and a real ``argosy server`` process on loopback, fills the
database with runs of 10 pipelines in every status (bulk insert, as a year of a busy team),
then measures:

- **listing** (target p99 < 50 ms): ``GET /api/v1/tenants/default/runs`` with a page of 50 —
  unfiltered, filtered by status, filtered by pipeline and status, and the 20th page by
  cursor — as the client sees it (HTTP keep-alive, JSON decoded), sequential requests (the
  speed target the test suite used to assert; tests/test_server_api.py checks the pages' rows);
- **submission to first task start** (target: median < 200 ms; the p90 is shown beside it):
  ``POST .../runs`` of a one-step pipeline, then the recorded times: run ``created_at`` to its
  first attempt's ``started_at`` (both stamped by the server).

Prints a Markdown table, or with ``--json`` one JSON document (what ``run.py`` reads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

PIPELINE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def noop(x: int) -> int:
        return x

    @pipeline
    def one_step(x: int = 1):
        noop(x)
    """
)
STATUSES = ["succeeded", "failed", "cancelled", "succeeded", "succeeded"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def fill(url: str, count: int) -> None:
    """Insert ``count`` finished runs of 10 pipelines (one version each), in bulk."""
    from sqlalchemy import insert

    from argosy.ids import new_id
    from argosy.stores.metadata.db import MetadataStore
    from argosy.stores.metadata.tables import Pipeline, PipelineVersion, Run, Tenant

    store = MetadataStore.open(url)
    now = datetime.now(UTC)
    with store.session() as s:
        s.add(
            Tenant(
                id=new_id(), tenant="default", name="default", created_at=now, created_by="bench"
            )
        )
        pipelines = []
        for i in range(10):
            pid, vid = new_id(), new_id()
            s.add(
                Pipeline(id=pid, tenant="default", name=f"p{i}", created_at=now, created_by="bench")
            )
            s.flush()
            s.add(
                PipelineVersion(
                    id=vid, tenant="default", pipeline_id=pid, digest=f"sha256:{i:064x}",
                    spec={}, provenance=None, created_at=now, created_by="bench",
                )
            )  # fmt: skip
            pipelines.append((pid, vid))
        s.flush()
        batch: list[dict[str, Any]] = []
        for n in range(count):
            pid, vid = pipelines[n % 10]
            created = now - timedelta(seconds=count - n)
            batch.append(
                {
                    "id": new_id(),
                    "tenant": "default",
                    "pipeline_id": pid,
                    "pipeline_version_id": vid,
                    "status": STATUSES[(n // 10) % len(STATUSES)],
                    "parameters": {"x": n},
                    "options": {},
                    "cancel_requested": False,
                    "created_at": created,
                    "created_by": "bench",
                    "started_at": created,
                    "finished_at": created,
                }
            )
            if len(batch) == 5000:
                s.execute(insert(Run), batch)
                batch = []
        if batch:
            s.execute(insert(Run), batch)
        s.execute(__import__("sqlalchemy").text("ANALYZE runs"))
    store.engine.dispose()


def time_requests(client: Any, path: str, params: dict[str, Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(path, params=params)
        response.raise_for_status()
        response.json()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    import httpx
    from tests.pg_fixture import PostgresCluster, find_bin_dir
    from tests.server_fixture import start_server

    from argosy.client.client import Client
    from argosy.spec.compile import compile_pipeline
    from argosy.spec.loader import load_pipeline

    bin_dir = find_bin_dir()
    if bin_dir is None:
        print(
            "PostgreSQL server binaries not found; run scripts/install-test-deps.sh",
            file=sys.stderr,
        )
        return 2
    cluster = PostgresCluster(bin_dir)
    cluster.init()
    cluster.start()
    server = None
    try:
        url = cluster.url(cluster.create_database())
        t0 = time.perf_counter()
        fill(url, args.runs)
        print(f"inserted {args.runs} runs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="argosy-api-bench-"))
        server = start_server(work / "server", {"ARGOSY_DATABASE_URL": url})
        rows = []
        base = "/api/v1/tenants/default/runs"
        with httpx.Client(base_url=server.url, timeout=30) as http:
            time_requests(http, base, {"limit": 50}, 20)  # warm-up: connections, plans
            cursor_page = {"limit": 50}
            for _ in range(19):
                page = http.get(base, params=cursor_page).json()
                cursor_page = {"limit": 50, "cursor": page["next_cursor"]}
            queries = {
                "page of 50, unfiltered": {"limit": 50},
                "page of 50, status filter": {"limit": 50, "status": "failed"},
                "page of 50, pipeline + status filter": {"limit": 50, "pipeline": "p3", "status": "failed"},
                "20th page of 50 (cursor)": cursor_page,
            }  # fmt: skip
            for name, params in queries.items():
                times = time_requests(http, base, params, args.requests)
                p50, p99 = statistics.median(times), percentile(times, 99)
                rows.append({
                    "measure": f"list runs: {name}", "p50_ms": round(p50 * 1000, 2),
                    "tail": "p99", "tail_ms": round(p99 * 1000, 2),
                    "target": "p99 < 50 ms", "ok": p99 < 0.050,
                })  # fmt: skip

        folder = work / "project"
        folder.mkdir()
        (folder / "bench_one_step.py").write_text(PIPELINE)
        compiled = compile_pipeline(load_pipeline(f"{folder / 'bench_one_step.py'}:one_step"))
        to_start: list[float] = []
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            for i in range(args.submissions):
                run = client.create_run("one_step", parameters={"x": i})
                client.wait(run.id, poll=0.05, timeout=60)
                tasks = client.tasks(run.id)
                attempt = tasks[0].attempts[0]
                assert attempt.started_at is not None
                to_start.append((attempt.started_at - run.created_at).total_seconds())
        med, p90 = statistics.median(to_start), percentile(to_start, 90)
        rows.append({
            "measure": f"submission to first attempt started ({args.submissions} runs)",
            "p50_ms": round(med * 1000, 1), "tail": "p90", "tail_ms": round(p90 * 1000, 1),
            "target": "p50 <= 30 ms", "ok": med <= 0.030,
        })  # fmt: skip
        doc = {"runs": args.runs, "requests": args.requests, "submissions": args.submissions,
               "rows": rows}  # fmt: skip
        if args.json:
            print(json.dumps(doc, indent=2))
            return 0
        print(
            textwrap.dedent(f"""
            ### (f) Server API (`benchmarks/api.py`, {args.runs:,} runs in PostgreSQL, {args.requests} sequential requests each)

            | measure | p50 | tail | target | result |
            |---|---|---|---|---|""")
        )
        for row in rows:
            verdict = "**pass**" if row["ok"] else "**FAIL**"
            print(f"| {row['measure']} | {row['p50_ms']} ms | {row['tail']} {row['tail_ms']} ms "
                  f"| {row['target']} | {verdict} |")  # fmt: skip
        return 0
    finally:
        if server is not None:
            server.kill()
        cluster.stop()
        cluster.remove()
        os.environ.pop("ARGOSY_DATABASE_URL", None)


if __name__ == "__main__":
    sys.exit(main())
