"""Log search latency on PostgreSQL: p50/p99 of ``service.search``'s index query over N lines.

    .venv/bin/python benchmarks/ops_log_search.py                  # 1,000,000 lines
    .venv/bin/python benchmarks/ops_log_search.py --lines 10000000 # the issue's 10 million
    .venv/bin/python benchmarks/ops_log_search.py --database-url postgresql+psycopg://... --json

Starts a throw-away PostgreSQL cluster of this machine (tests/pg_fixture.py) unless
``--database-url``, creates the index (``stores/logindex.py``: ``argosy_search.log_lines``,
a generated ``to_tsvector('simple', message)`` column under GIN) and fills it with COPY:
lines of 100 tenants, 1,000 runs each, of realistic log words (epochs, losses, shapes,
warnings) plus one rare token per 100,000 lines. ``ANALYZE`` follows, as autovacuum would.

Then it asks, through ``PostgresLogIndex.search`` as the API does (tenant filter, newest 50
first), each query ``--queries`` times: a rare token (a needle), a common word (thousands of
hits: the newest page), two words together, and a common word within one run. Prints a
Markdown table, or one JSON document with ``--json``. Target: p99 under 100 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORDS = ("epoch", "loss", "accuracy", "batch", "step", "train", "validate", "shape", "tensor",
         "warning", "deprecated", "reading", "writing", "rows", "columns", "fold", "model",
         "saved", "checkpoint", "learning", "rate", "gradient", "norm", "memory", "cuda")  # fmt: skip
TENANTS = 100


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def fill(url: str, lines: int) -> float:
    """Create the index and COPY ``lines`` lines into it; seconds taken."""
    import psycopg
    from sqlalchemy.engine import make_url

    from argosy.stores.logindex import PG_SCHEMA, PostgresLogIndex
    from argosy.stores.metadata.db import MetadataStore

    store = MetadataStore.open(url)
    PostgresLogIndex(store.engine)  # the schema, as a server creates it
    store.close()
    u = make_url(url)
    conninfo = f"host={u.query.get('host') or u.host} port={u.port or 5432} dbname={u.database} user={u.username or 'postgres'}"
    rng = random.Random(17)
    started = time.monotonic()
    columns = (
        "tenant, run_id, pipeline, node_path, step_name, attempt_id, attempt, n, t, stream, message"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY {PG_SCHEMA}.log_lines ({columns}) FROM STDIN") as copy:
            buf = io.StringIO()
            for i in range(lines):
                tenant = f"tenant-{i % TENANTS:03d}"
                run = f"run{(i // TENANTS) % 1000:05d}{i % TENANTS:03d}".ljust(26, "0")
                words = " ".join(rng.choice(WORDS) for _ in range(8))
                if i % 100_000 == 50_000:
                    words += f" needle-{i // 100_000:04d}"
                message = f"{words} value={rng.random():.4f}"
                stamp = f"2026-12-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}+00:00"
                buf.write(
                    f"{tenant}\t{run}\tpipe\ttrain\ttrain\t{run}\t1\t{i}\t{stamp}\tout\t{message}\n"
                )
                if i % 50_000 == 49_999:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        conn.execute(f"ANALYZE {PG_SCHEMA}.log_lines")
    return time.monotonic() - started


def measure(url: str, lines: int, queries: int) -> dict[str, Any]:
    from argosy.stores.logindex import Filters, PostgresLogIndex
    from argosy.stores.metadata.db import MetadataStore

    store = MetadataStore.open(url)
    index = PostgresLogIndex(store.engine)
    needle_line = 50_000
    needle_tenant = f"tenant-{needle_line % TENANTS:03d}"
    one_run = f"run{(needle_line // TENANTS) % 1000:05d}{needle_line % TENANTS:03d}".ljust(26, "0")
    cases = {
        "rare token (1 hit)": (needle_tenant, "needle-0000", Filters()),
        "common word, newest 50": ("tenant-007", "gradient", Filters()),
        "two words, newest 50": ("tenant-042", "loss epoch", Filters()),
        "common word in one run": (needle_tenant, "memory", Filters(run_ids=[one_run])),
    }
    rows = []
    for name, (tenant, query, filters) in cases.items():
        times = []
        hits = 0
        for _ in range(queries):
            t0 = time.perf_counter()
            hits = len(index.search(tenant, query, filters, before=None, limit=50))
            times.append((time.perf_counter() - t0) * 1000)
        rows.append({"query": name, "hits": hits, "p50_ms": statistics.median(times),
                     "p99_ms": percentile(times, 99)})  # fmt: skip
    store.close()
    return {"lines": lines, "queries": queries, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cluster = None
    url = args.database_url
    if url is None:
        sys.path.insert(0, str(HERE.parent))
        from tests.pg_fixture import PostgresCluster, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("no PostgreSQL server binaries (apt-get install postgresql)", file=sys.stderr)
            return 2
        cluster = PostgresCluster(bin_dir)
        cluster.init()
        cluster.start()
        url = cluster.url(cluster.create_database())
    try:
        fill_s = fill(url, args.lines)
        result = measure(url, args.lines, args.queries)
        result["fill_seconds"] = round(fill_s, 1)
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.remove()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"log search on PostgreSQL: {result['lines']:,} lines of {TENANTS} tenants "
          f"(filled in {result['fill_seconds']} s), {args.queries} queries each\n")  # fmt: skip
    print("| query | hits | p50 | p99 |\n|---|---|---|---|")
    for row in result["rows"]:
        print(
            f"| {row['query']} | {row['hits']} | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
