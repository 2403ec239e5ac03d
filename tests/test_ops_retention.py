"""Retention with the simulated clock (``ARGOSY_CLOCK_FILE``) on a local state folder (the
cold tier: a folder of gzip files) and on S3 (moto: a cold storage class and the restore
API): artifacts past 30 days are archived (gone from the hot tier, in the cold one); a read
is refused with the retrieval hint; the requester cannot approve their own request; another
owner's approval makes it readable for the window, then it is archived again; a held run is
never archived or deleted; a deletion removes rows and bytes together, and a SIGKILL in the
middle of the job is finished by the next pass without leaving either half."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from argosy.stores.metadata.tables import Artifact, BlobTier, Deletion, Run
from tests.conftest import Workspace

PIPE = """
from argosy import pipeline, step

@step
def make(n: int) -> str:
    return f"payload {n} " * 1000

@step
def head(text: str) -> str:
    return text[:10]

@pipeline
def kept(n: int = 1) -> str:
    return head(make(n))
"""


class Clock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = datetime.now(UTC)
        self.path.write_text(self.now.isoformat())

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)
        self.path.write_text(self.now.isoformat())


def _cli(ws: Workspace, clock: Clock, *args: str, user: str = "alice") -> Any:
    env = {"ARGOSY_CLOCK_FILE": str(clock.path), "ARGOSY_USER": user}
    return ws.argosy(*args, env=env)


def _blob_files(ws: Workspace, sha: str) -> tuple[bool, bool]:
    base = ws.home / "blobs" / "tenants" / "default"
    hot = base / "blobs" / "sha256" / sha[:2] / sha
    cold = base / "archive" / "blobs" / "sha256" / sha[:2] / sha
    return hot.exists(), cold.exists()


def test_archive_retrieve_rearchive_hold_and_delete(ws: Workspace, tmp_path: Path) -> None:
    clock = Clock(tmp_path / "clock")
    path = ws.write(PIPE, "kept")
    runs = {}
    for n in (1, 2):
        done = _cli(ws, clock, "run", f"{path}:kept", "-p", f"n={n}", "-q", "-o", "json")
        assert done.code == 0, done.stderr
        runs[n] = done.json()["id"]
    held = _cli(ws, clock, "holds", "place", runs[2], "--reason", "litigation 42", "-o", "json")
    assert held.code == 0, held.stderr
    local = ws.local()
    with local.metadata.session() as s:
        shas = {n: sorted(s.scalars(select(Artifact.sha256).where(Artifact.run_id == r)))
                for n, r in runs.items()}  # fmt: skip
    # 29 days: nothing is due
    clock.advance(29)
    assert _cli(ws, clock, "retention", "run", "-o", "json").json()["archived"] == 0
    # 31 days: run 1's blobs go to the cold tier; the held run's stay hot
    clock.advance(2)
    report = _cli(ws, clock, "retention", "run", "-o", "json").json()
    assert report["archived"] == len(shas[1]) and report["held"] >= 1
    assert all(_blob_files(ws, sha) == (False, True) for sha in shas[1])
    assert all(_blob_files(ws, sha) == (True, False) for sha in shas[2])
    refused = _cli(
        ws, clock, "artifacts", "get", f"{runs[1]}/make/output", "--out", str(tmp_path / "a")
    )
    assert refused.code != 0
    assert "archived" in refused.stderr and "argosy retrievals request" in refused.stderr
    assert _cli(ws, clock, "artifacts", "get", f"{runs[2]}/make/output", "--out",
                str(tmp_path / "b")).code == 0  # fmt: skip
    # a retrieval: the requester cannot approve it; another owner can
    asked = _cli(ws, clock, "retrievals", "request", runs[1], "--reason", "audit", "-o", "json")
    assert asked.code == 0, asked.stderr
    request = asked.json()
    assert request["state"] == "pending" and request["blobs"] == len(shas[1])
    own = _cli(ws, clock, "retrievals", "approve", request["id"])
    assert own.code != 0 and "cannot decide it" in own.stderr
    ok = _cli(ws, clock, "retrievals", "approve", request["id"], "-o", "json", user="bob")
    assert ok.code == 0, ok.stderr
    assert ok.json()["state"] == "approved" and ok.json()["readable_until"]
    got = _cli(
        ws, clock, "artifacts", "get", f"{runs[1]}/make/output", "--out", str(tmp_path / "c")
    )
    assert got.code == 0, got.stderr
    assert (tmp_path / "c").read_text().startswith('"payload 1')
    # the window (7 days) ends: archived again
    clock.advance(6)
    _cli(ws, clock, "retention", "run")
    assert all(_blob_files(ws, sha) == (True, True) for sha in shas[1])
    clock.advance(2)
    assert _cli(ws, clock, "retention", "run", "-o", "json").json()["rearchived"] == len(shas[1])
    assert all(_blob_files(ws, sha) == (False, True) for sha in shas[1])
    listed = _cli(ws, clock, "retrievals", "list", "-o", "json").json()["items"]
    assert [r["state"] for r in listed] == ["expired"]
    # delete after 60 days: run 1 goes, rows and bytes (hot and cold); the held run stays
    assert _cli(ws, clock, "retention", "set", "--delete-after-days", "60").code == 0
    clock.advance(30)
    report = _cli(ws, clock, "retention", "run", "-o", "json").json()
    assert report["deleted_runs"] == 1
    with local.metadata.session() as s:
        assert s.get(Run, runs[1]) is None and s.get(Run, runs[2]) is not None
        assert not s.scalars(select(Artifact.id).where(Artifact.run_id == runs[1])).all()
        assert not s.scalars(select(BlobTier.id).where(BlobTier.sha256.in_(shas[1]))).all()
    assert all(_blob_files(ws, sha) == (False, False) for sha in set(shas[1]) - set(shas[2]))
    assert all(_blob_files(ws, sha) == (True, False) for sha in shas[2])
    # released, the old run goes on the next pass
    hold_id = held.json()["id"]
    assert _cli(ws, clock, "holds", "release", hold_id).code == 0
    assert _cli(ws, clock, "retention", "run", "-o", "json").json()["deleted_runs"] == 1


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime
    from argosy.client.local import open_local
    from argosy.config import load_settings
    from argosy.ops import retention
    from argosy.ops.cleanup import plan_deletion, resume_deletions
    from sqlalchemy import select
    from argosy.stores.metadata.tables import Run

    local = open_local(load_settings())
    seen = []

    def checkpoint(step):
        seen.append(step)
        if seen.count("blob") == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-job: some bytes gone, rows still there

    with local.metadata.session() as s:
        ids = [r.id for r in s.scalars(select(Run))]
    plan_deletion(local.metadata, "default", ids, why="retention", actor="test")
    resume_deletions(local.metadata, local.store, checkpoint=checkpoint)
    """
)


def test_a_sigkill_mid_deletion_is_finished_by_the_next_pass(ws: Workspace, tmp_path: Path) -> None:
    clock = Clock(tmp_path / "clock")
    path = ws.write(PIPE, "kept")
    for n in range(3):
        assert _cli(ws, clock, "run", f"{path}:kept", "-p", f"n={n + 10}", "-q").code == 0
    local = ws.local()
    with local.metadata.session() as s:
        shas = set(s.scalars(select(Artifact.sha256)))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run([sys.executable, str(script), "3"], env=ws.env(), check=False,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with local.metadata.session() as s:  # half-way: one run gone whole, the next one's bytes
        intents = set(s.scalars(select(Deletion.target_id)))  # partly gone, its rows still here
        assert len(intents) == 2 and set(s.scalars(select(Run.id))) == intents
    gone = [sha for sha in shas if _blob_files(ws, sha) == (False, False)]
    assert 0 < len(gone) < len(shas)
    # the next pass finishes what was recorded
    assert _cli(ws, clock, "retention", "run", "-o", "json").json()["deleted_runs"] == 2
    with local.metadata.session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert s.scalar(select(func.count()).select_from(Artifact)) == 0
        assert s.scalar(select(func.count()).select_from(Deletion)) == 0
    assert all(_blob_files(ws, sha) == (False, False) for sha in shas)
    assert not list((ws.home / "blobs" / "tenants" / "default").glob("runs/*/*/*/*"))


def test_on_s3_archived_bytes_are_in_a_cold_storage_class_and_restored(
    ws: Workspace, tmp_path: Path, s3_env: Any, s3_bucket: str
) -> None:
    """moto: archived objects have the GLACIER class (a direct GET is refused until restored),
    the hot key is gone; an approved retrieval restores them through S3's restore API."""
    clock = Clock(tmp_path / "clock")
    env = {**s3_env.argosy_env(f"s3://{s3_bucket}/argosy"), "ARGOSY_CLOCK_FILE": str(clock.path)}
    path = ws.write(PIPE, "kept")

    def cli(*args: str, user: str = "alice") -> Any:
        return ws.argosy(*args, env={**env, "ARGOSY_USER": user})

    done = cli("run", f"{path}:kept", "-p", "n=7", "-q", "-o", "json")
    assert done.code == 0, done.stderr
    run_id = done.json()["id"]
    s3 = s3_env.client()
    listed = cli("artifacts", "list", run_id, "-o", "json").json()["artifacts"]
    blobs = {a["sha256"] for a in listed}
    assert len(blobs) == 2
    clock.advance(31)
    report = cli("retention", "run", "-o", "json")
    assert report.code == 0, report.stderr
    assert report.json()["archived"] == 2
    for sha in blobs:
        hot = f"argosy/tenants/default/blobs/sha256/{sha[:2]}/{sha}"
        cold = f"argosy/tenants/default/archive/blobs/sha256/{sha[:2]}/{sha}"
        assert s3.list_objects_v2(Bucket=s3_bucket, Prefix=hot)["KeyCount"] == 0
        assert s3.head_object(Bucket=s3_bucket, Key=cold)["StorageClass"] == "GLACIER"
        with pytest.raises(Exception, match="InvalidObjectState"):
            s3.get_object(Bucket=s3_bucket, Key=cold)
    refused = cli("artifacts", "get", f"{run_id}/make/output", "--out", str(tmp_path / "x"))
    assert refused.code != 0 and "argosy retrievals request" in refused.stderr
    request = cli("retrievals", "request", run_id, "--reason", "audit", "-o", "json").json()
    assert cli("retrievals", "approve", request["id"]).code != 0  # not by the requester
    approved = cli("retrievals", "approve", request["id"], "-o", "json", user="bob")
    assert approved.code == 0, approved.stderr
    got = cli("artifacts", "get", f"{run_id}/make/output", "--out", str(tmp_path / "y"))
    assert got.code == 0, got.stderr
    for sha in blobs:
        cold = f"argosy/tenants/default/archive/blobs/sha256/{sha[:2]}/{sha}"
        assert 'ongoing-request="false"' in s3.head_object(Bucket=s3_bucket, Key=cold)["Restore"]
    clock.advance(8)
    assert cli("retention", "run", "-o", "json").json()["rearchived"] == 2
    again = cli("artifacts", "get", f"{run_id}/make/output", "--out", str(tmp_path / "z"))
    assert again.code != 0 and "archived" in again.stderr
