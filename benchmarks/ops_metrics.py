"""``/metrics`` scrape time with 100 tenants.

    .venv/bin/python benchmarks/ops_metrics.py                 # 100 tenants x 200 runs
    .venv/bin/python benchmarks/ops_metrics.py --tenants 100 --runs 500 --json

Builds a metadata database (SQLite in a temporary folder unless ``--database-url``) with
``--tenants`` tenants, each with 5 pipelines and ``--runs`` finished runs of 3 tasks and 3
attempts (bulk insert), then serves the real application in process and scrapes
``/metrics`` with the scrape token ``--scrapes`` times: **cold** (the database state read
at every scrape, as with a 5 s cache and a 15 s scrape interval; the month-to-date cost per
tenant is cached 60 s, and the first line recomputes it too) and **warm** (within the cache). Prints a Markdown table (and the body's size and series count), or JSON.
Target: a cold scrape under 1 s at 100 tenants.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TOKEN = "bench-scrape-token-0123456789"


def fill(url: str, tenants: int, runs: int) -> None:
    from sqlalchemy import insert

    from argosy.ids import new_id
    from argosy.stores.metadata.db import MetadataStore
    from argosy.stores.metadata.tables import Attempt, Pipeline, PipelineVersion, Run, Task, Tenant

    store = MetadataStore.open(url)
    now = datetime.now(UTC)
    statuses = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")
    with store.session() as s:
        for t in range(tenants):
            tenant = f"tenant-{t:03d}"
            s.add(Tenant(id=new_id(), tenant=tenant, name=tenant, created_at=now,
                         created_by="bench", display_name=None, archived_at=None,
                         settings={"budget": {"monthly": 100}}, quotas=None, task_uid=None))  # fmt: skip
            pipes = []
            for p in range(5):
                pid, vid = new_id(), new_id()
                s.add(Pipeline(id=pid, tenant=tenant, name=f"p{p}", created_at=now, created_by="b"))
                s.flush()
                s.add(PipelineVersion(id=vid, tenant=tenant, pipeline_id=pid,
                                      digest=f"sha256:{t:032x}{p:032x}", spec={}, provenance=None,
                                      created_at=now, created_by="b"))  # fmt: skip
                pipes.append((pid, vid))
            s.flush()
            run_rows, task_rows, attempt_rows = [], [], []
            for n in range(runs):
                pid, vid = pipes[n % 5]
                rid = new_id()
                at = now - timedelta(minutes=n)
                run_rows.append({"id": rid, "tenant": tenant, "pipeline_id": pid,
                                 "pipeline_version_id": vid, "status": statuses[n % 5],
                                 "parameters": {}, "options": {}, "cancel_requested": False,
                                 "created_at": at, "created_by": "b", "started_at": at,
                                 "finished_at": at})  # fmt: skip
                for k in range(3):
                    tid = new_id()
                    task_rows.append({"id": tid, "tenant": tenant, "run_id": rid,
                                      "node_path": f"s{k}", "step_name": f"s{k}",
                                      "state": "cached" if k == 2 else "succeeded",
                                      "attempt_count": 1, "failures": 0, "created_at": at,
                                      "created_by": "b", "queued_at": at, "started_at": at,
                                      "finished_at": at})  # fmt: skip
                    attempt_rows.append({"id": new_id(), "tenant": tenant, "run_id": rid,
                                         "task_id": tid, "number": 1, "state": "succeeded",
                                         "cause": "first", "resources": {"cpu": 1, "memory": 2**30},
                                         "wall_time": 60.0, "cpu_time": 30.0,
                                         "peak_memory": 2**29, "created_at": at,
                                         "created_by": "b", "started_at": at,
                                         "finished_at": at})  # fmt: skip
            s.execute(insert(Run), run_rows)
            s.execute(insert(Task), task_rows)
            s.execute(insert(Attempt), attempt_rows)
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200, help="runs per tenant")
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from fastapi.testclient import TestClient

    from argosy.config import Settings
    from argosy.server import metrics
    from argosy.server.app import create_app
    from argosy.server.context import ServerContext

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'argosy.db'}"
        started = time.monotonic()
        fill(url, args.tenants, args.runs)
        fill_s = time.monotonic() - started
        settings = Settings(home=Path(tmp), database_url=url, insecure_dev=True,
                            metrics_token=TOKEN, encryption=False)  # fmt: skip
        context = ServerContext.open(settings)
        app = create_app(context)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        result: dict[str, Any] = {"tenants": args.tenants, "runs_per_tenant": args.runs,
                                  "fill_seconds": round(fill_s, 1)}  # fmt: skip
        with TestClient(app) as client:
            for name, ttl, cost_ttl in (("cold, cost recomputed", 0.0, 0.0),
                                        ("cold", 0.0, 3600.0), ("warm", 3600.0, 3600.0)):  # fmt: skip
                metrics.STATE_TTL, metrics.COST_TTL = ttl, cost_ttl
                client.get("/metrics", headers=headers)  # the first fills the warm cache
                times = []
                for _ in range(args.scrapes):
                    t0 = time.perf_counter()
                    answer = client.get("/metrics", headers=headers)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert answer.status_code == 200, answer.text
                body = answer.text
                result[name] = {"p50_ms": statistics.median(times), "max_ms": max(times)}
            result["bytes"] = len(body)
            result["series"] = sum(1 for line in body.splitlines() if line and line[0] != "#")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"/metrics with {args.tenants} tenants x {args.runs} runs (x3 tasks, x3 attempts); "
          f"{result['series']} series, {result['bytes'] / 1024:.0f} KiB\n")  # fmt: skip
    print("| scrape | p50 | max |\n|---|---|---|")
    for name in ("cold, cost recomputed", "cold", "warm"):
        print(f"| {name} | {result[name]['p50_ms']:.1f} ms | {result[name]['max_ms']:.1f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
