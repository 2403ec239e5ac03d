"""Lifecycle job throughput: artifacts archived, and runs deleted (rows and bytes), per second.

    .venv/bin/python benchmarks/ops_lifecycle.py                 # 2,000 artifacts of 64 KiB
    .venv/bin/python benchmarks/ops_lifecycle.py --artifacts 10000 --size 4096 --json

Builds a state folder (SQLite, a folder store: the cold tier is gzip files) with runs that
ended 40 days ago, each of 2 tasks with one artifact of its own blob (``--size`` bytes of
random data, so compression has nothing to win), then times one pass of the lifecycle job
(``ops/retention.run_lifecycle``) archiving them all (each: a ``blob_tiers`` row written
before the copy, the cold copy, the hot copy removed, the row marked, an audit event), and
a second pass deleting the runs past 35 days (journaled: intent, blobs in both tiers, log
records, rows). Prints a Markdown table, or one JSON document with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def fill(home: Path, artifacts: int, size: int) -> Any:
    from sqlalchemy import insert

    from argosy.ids import new_id
    from argosy.stores.artifacts.blobs import open_artifact_store
    from argosy.stores.metadata.db import MetadataStore
    from argosy.stores.metadata.tables import (
        Artifact,
        Attempt,
        Pipeline,
        PipelineVersion,
        Run,
        Task,
    )

    metadata = MetadataStore.open(f"sqlite:///{home / 'argosy.db'}")
    store = open_artifact_store(str(home / "blobs"), "default")
    old = datetime.now(UTC) - timedelta(days=40)
    with metadata.session() as s:
        pid, vid = new_id(), new_id()
        s.add(Pipeline(id=pid, tenant="default", name="bench", created_at=old, created_by="b"))
        s.flush()
        s.add(PipelineVersion(id=vid, tenant="default", pipeline_id=pid, digest="sha256:0",
                              spec={}, provenance=None, created_at=old, created_by="b"))  # fmt: skip
        s.flush()
        runs, tasks, attempts, arts = [], [], [], []
        for _n in range(artifacts // 2):
            rid = new_id()
            runs.append({"id": rid, "tenant": "default", "pipeline_id": pid,
                         "pipeline_version_id": vid, "status": "succeeded", "parameters": {},
                         "options": {}, "cancel_requested": False, "created_at": old,
                         "created_by": "b", "started_at": old, "finished_at": old})  # fmt: skip
            for k in range(2):
                tid, aid = new_id(), new_id()
                tasks.append({"id": tid, "tenant": "default", "run_id": rid, "node_path": f"s{k}",
                              "step_name": f"s{k}", "state": "succeeded", "attempt_count": 1,
                              "failures": 0, "created_at": old, "created_by": "b"})  # fmt: skip
                attempts.append({"id": aid, "tenant": "default", "run_id": rid, "task_id": tid,
                                 "number": 1, "state": "succeeded", "cause": "first",
                                 "resources": {}, "created_at": old, "created_by": "b"})  # fmt: skip
                info = store.put_bytes(os.urandom(size))
                arts.append({"id": new_id(), "tenant": "default", "run_id": rid, "task_id": tid,
                             "attempt_id": aid, "node_path": f"s{k}", "output_name": "output",
                             "type": "bytes", "format": "file", "sha256": info.sha256,
                             "size": info.size, "created_at": old, "created_by": "b"})  # fmt: skip
        for table, rows in ((Run, runs), (Task, tasks), (Attempt, attempts), (Artifact, arts)):
            s.execute(insert(table), rows)
    return metadata, store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from argosy.ops.retention import Policy, run_lifecycle

    with tempfile.TemporaryDirectory() as tmp:
        metadata, store = fill(Path(tmp), args.artifacts, args.size)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        archived = run_lifecycle(metadata, store, Policy(30, None, 7), now=now)
        archive_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        deleted = run_lifecycle(metadata, store, Policy(30, 35, 7), now=now)
        delete_s = time.perf_counter() - t0
        metadata.close()
    result = {
        "artifacts": args.artifacts, "size": args.size,
        "archived": archived.archived, "archive_seconds": round(archive_s, 2),
        "archived_per_second": round(archived.archived / archive_s, 1),
        "deleted_runs": deleted.deleted_runs, "deleted_blobs": deleted.deleted_blobs,
        "delete_seconds": round(delete_s, 2),
        "deleted_artifacts_per_second": round(deleted.deleted_blobs / delete_s, 1),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"lifecycle job, {args.artifacts} artifacts of {args.size // 1024} KiB "
          "(SQLite, folder store)\n")  # fmt: skip
    print("| pass | done | seconds | per second |\n|---|---|---|---|")
    print(f"| archive | {result['archived']} artifacts | {result['archive_seconds']} | "
          f"{result['archived_per_second']} |")  # fmt: skip
    print(f"| delete | {result['deleted_runs']} runs, {result['deleted_blobs']} blobs | "
          f"{result['delete_seconds']} | {result['deleted_artifacts_per_second']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
