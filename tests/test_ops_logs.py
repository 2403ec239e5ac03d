"""Task logs for operations: the per-attempt cap (a 200 MB log keeps its first and last
parts, with the cut marked, and the raw output does not stay on disk), and the log index on
both backends (SQLite FTS5, PostgreSQL full-text search) behind one interface."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from argosy.executors.logcap import TRUNCATED_KEY, CappedLog
from argosy.stores.logindex import AttemptSource, Filters, LogIndex, log_index_for
from argosy.stores.metadata.db import MetadataStore
from tests.conftest import Workspace

LOUD = """
import os, sys, time
from argosy import pipeline, step

@step
def loud(mb: int) -> int:
    line = "x" * 990
    for i in range(mb * 1000):
        print(f"line {i:08d} {line}")
    sys.stdout.flush()
    # the executor reads (and frees) what was written: wait for it to catch up (a loaded
    # machine starves it), up to a minute; a file it never freed stays at 200 MB
    deadline = time.monotonic() + 60
    while os.fstat(1).st_blocks * 512 >= 16 * 2**20 and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"disk={os.fstat(1).st_blocks * 512}", file=sys.stderr, flush=True)
    print("the very last line", flush=True)
    return 1

@pipeline
def noisy(mb: int = 200) -> int:
    return loud(mb)
"""


def test_a_200_mb_log_keeps_its_first_and_last_parts_within_the_cap(ws: Workspace) -> None:
    cap = 2 * 1024 * 1024
    path = ws.write(LOUD, "noisy")
    done = ws.argosy("run", f"{path}:noisy", "-q", "-o", "json",
                     env={"ARGOSY_LOG_CAP_BYTES": str(cap)}, timeout=300)  # fmt: skip
    assert done.code == 0, done.stderr
    run_id = done.json()["id"]
    record = next((ws.home / "blobs").glob(f"tenants/default/runs/{run_id}/loud/1/log.jsonl"))
    size = record.stat().st_size
    assert cap // 2 < size <= cap + 1024
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    assert entries[0]["m"].startswith("line 00000000 ")
    markers = [i for i, e in enumerate(entries) if TRUNCATED_KEY in e]
    assert len(markers) == 1
    marker = entries[markers[0]]
    assert "[log truncated]" in marker["m"] and marker["s"] == "err"
    kept = len(entries) - 1
    assert marker[TRUNCATED_KEY]["lines"] + kept == 200_000 + 2  # every line kept or counted
    assert marker[TRUNCATED_KEY]["bytes"] > 190 * 1024 * 1024
    # first part, the marker, then the last part, in order
    numbers = [int(e["m"].split()[1]) for e in entries if e["m"].startswith("line ")]
    head = [n for n in numbers if n < 100_000]
    assert head == list(range(len(head)))
    tail = numbers[len(head) :]
    assert tail == list(range(tail[0], 200_000)) and markers[0] == len(head)
    assert [e["m"] for e in entries if e["s"] == "out"][-1] == "the very last line"
    # the task's raw stdout no longer held what had been read: its blocks were freed
    disk = next(int(e["m"].split("=")[1]) for e in entries if e["m"].startswith("disk="))
    assert disk < 16 * 1024 * 1024, disk
    # the log shows the cut where a reader sees it
    shown = ws.argosy("logs", run_id)
    assert "[log truncated]" in shown.stdout


def test_capped_log_counts_what_it_cuts(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "log.jsonl", cap=1000)
    records = [
        json.dumps({"t": "x", "s": "out", "m": f"{i:04d}" + "y" * 40}) + "\n" for i in range(100)
    ]
    for r in records:
        log.write(r)
    log.close()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert sum(len(line) + 1 for line in lines if TRUNCATED_KEY not in line) <= 1000
    marker = json.loads(next(line for line in lines if TRUNCATED_KEY in line))
    assert marker[TRUNCATED_KEY]["lines"] + len(lines) - 1 == 100
    assert json.loads(lines[-1])["m"].startswith("0099")
    small = CappedLog(tmp_path / "small.jsonl", cap=10_000)
    small.write(records[0])
    small.close()
    assert (tmp_path / "small.jsonl").read_text() == records[0]


# -- the index, on both backends ----------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogIndex]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'argosy.db'}"
    else:
        url = request.getfixturevalue("pg_migrated_url")
    store = MetadataStore.open(url)
    try:
        yield log_index_for(store.engine)
    finally:
        store.close()


def _source(tenant: str, run: str, node: str, attempt_id: str) -> AttemptSource:
    return AttemptSource(tenant, run, "pipe", node, node.split("[")[0], attempt_id, 1)


def _entries(*messages: str, t: str = "2026-01-01T00:00:00+00:00") -> list[dict[str, str]]:
    return [{"t": t, "s": "out", "m": m} for m in messages]


def test_index_finds_words_within_one_tenant(index: LogIndex) -> None:
    assert index.created
    index.replace(_source("t-a", "R1", "train", "A1"), _entries(
        "epoch 1 loss 0.5", "ValueError: bad shape (3, 4)", "code-1234 happened"))  # fmt: skip
    index.replace(_source("t-a", "R2", "fold[3]", "A2"), _entries("loss went up at epoch 7"))
    index.replace(_source("t-b", "R3", "train", "A3"), _entries("ValueError: bad shape in b"))
    everything = Filters()

    def found(query: str, tenant: str = "t-a", filters: Filters = everything) -> list[str]:
        return [h.message for h in index.search(tenant, query, filters, before=None, limit=50)]

    assert found("ValueError") == ["ValueError: bad shape (3, 4)"]
    assert found("valueerror shape") == ["ValueError: bad shape (3, 4)"]  # words, any case
    assert found("ValueError", "t-b") == ["ValueError: bad shape in b"]
    assert found("loss") == ["loss went up at epoch 7", "epoch 1 loss 0.5"]  # newest first
    assert found("code-1234") == ["code-1234 happened"]
    assert found("epoch 7") == ["loss went up at epoch 7"]
    assert found('"quoted" OR (NEAR') == []  # user text is words, never query syntax
    assert found("loss", filters=Filters(step="fold")) == ["loss went up at epoch 7"]
    assert found("loss", filters=Filters(run_ids=["R1"])) == ["epoch 1 loss 0.5"]
    assert found("loss", filters=Filters(stream="err")) == []
    assert found("loss", filters=Filters(since="2026-01-02")) == []
    # replacing an attempt's lines (indexed again) does not duplicate them
    index.replace(_source("t-a", "R1", "train", "A1"), _entries("epoch 1 loss 0.5"))
    assert found("loss") == ["epoch 1 loss 0.5", "loss went up at epoch 7"]
    first = index.search("t-a", "loss", everything, before=None, limit=1)
    older = index.search("t-a", "loss", everything, before=first[0].id, limit=5)
    assert [h.message for h in older] == ["loss went up at epoch 7"]
    assert index.delete_runs("t-a", ["R2"]) == 1
    assert found("loss") == ["epoch 1 loss 0.5"]
    assert index.count("t-b") == 1
