"""Clean-up on a laptop's state folder: ``argosy runs delete`` removes a run's rows and bytes
together (blobs another run still uses stay), ``argosy gc`` frees exactly what it reported
(unreferenced blobs, records of deleted runs, leftover attempt folders, cached downloads),
and a later cached run still works."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import func, select

from argosy.stores.metadata.tables import Artifact, Attempt, Run, Task
from tests.conftest import Workspace

PIPE = """
from argosy import pipeline, step

@step
def make(n: int) -> str:
    print(f"making {n}")
    return ("x%d" % n) * 200_000

@step
def size(text: str) -> int:
    return len(text)

@pipeline
def sized(n: int = 1) -> int:
    return size(make(n))
"""


def _disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _run(ws: Workspace, path: Path, n: int) -> dict:  # type: ignore[type-arg]
    done = ws.argosy("run", f"{path}:sized", "-p", f"n={n}", "-q", "-o", "json")
    assert done.code == 0, done.stderr
    return done.json()  # type: ignore[no-any-return]


def test_delete_then_gc_frees_what_it_reported_and_the_cache_still_works(ws: Workspace) -> None:
    path = ws.write(PIPE, "sized")
    first = _run(ws, path, 1)
    second = _run(ws, path, 1)  # cached: the same blobs
    assert {t["state"] for t in second["tasks"]} == {"cached"}
    third = _run(ws, path, 2)
    blobs = ws.home / "blobs"
    # leftovers a crash could leave: an unreferenced old blob, an attempt folder, a download
    data = b"orphan" * 100_000
    sha = hashlib.sha256(data).hexdigest()
    orphan = blobs / "tenants" / "default" / "blobs" / "sha256" / sha[:2] / sha
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(data)
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    leftover = ws.home / "attempts" / "01ARZ3NDEKTSV4RRFFQ69G5FAV" / "scratch"
    leftover.mkdir(parents=True)
    (leftover / "tmp.bin").write_bytes(b"y" * 50_000)

    # deleting a run: its own blobs go with its rows; shared ones stay
    deleted = ws.argosy("runs", "delete", third["id"], "-o", "json")
    assert deleted.code == 0, deleted.stderr
    # its text is its own; its length (400000, as the first run's) is shared
    assert deleted.json()["runs"] == [third["id"]] and deleted.json()["blobs_freed"] == 1
    assert ws.argosy("runs", "show", third["id"]).code != 0
    gone = ws.argosy("runs", "delete", first["id"], "-o", "json").json()
    assert gone["blobs_freed"] == 0  # the cached second run still uses them
    local = ws.local()
    with local.metadata.session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 1
        for table in (Task, Attempt, Artifact):
            assert not s.scalars(
                select(table.id).where(table.run_id.in_([first["id"], third["id"]]))
            ).all()
    assert not list(blobs.glob(f"tenants/default/runs/{first['id']}/**/*.jsonl"))

    report = ws.argosy("gc", "--dry-run", "-o", "json").json()
    assert report["dry_run"] and report["blobs"] == 1 and report["blob_bytes"] == len(data)
    assert report["attempt_folders"] == 1 and report["attempt_folder_bytes"] == 50_000
    assert orphan.exists() and leftover.exists()  # a dry run removes nothing
    before = _disk(ws.home / "blobs") + _disk(ws.home / "attempts") + _disk(ws.home / "cache")
    done = ws.argosy("gc", "-o", "json").json()
    after = _disk(ws.home / "blobs") + _disk(ws.home / "attempts") + _disk(ws.home / "cache")
    assert done["total_bytes"] == report["total_bytes"] == before - after
    assert not orphan.exists() and not leftover.exists()
    assert ws.argosy("gc", "-o", "json").json()["total_bytes"] == 0

    # the run that is left still reads, and a new run is answered from the cache
    assert ws.argosy("runs", "show", second["id"]).code == 0
    again = _run(ws, path, 1)
    assert again["status"] == "succeeded"
    assert {t["state"] for t in again["tasks"]} == {"cached"}
    assert again["outputs"]["output"]["value"] == 400_000


def test_a_running_run_is_not_deleted(ws: Workspace) -> None:
    path = ws.write(PIPE, "sized")
    run = _run(ws, path, 3)
    local = ws.local()
    with local.metadata.session() as s:
        s.get_one(Run, run["id"]).status = "running"
    refused = ws.argosy("runs", "delete", run["id"])
    assert refused.code != 0 and "cancel it" in refused.stderr
    with local.metadata.session() as s:
        assert s.get(Run, run["id"]) is not None
