"""Promises the documentation makes that no other test checked (docs/testing.md maps every
documented promise to its test). One test per promise, named for it, through the real CLI
or a real server where the promise is about them."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.metadata.attempts import finish_if_current
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Attempt, ServerInstance, Task
from tests.conftest import Workspace, alive
from tests.server_fixture import start_server


def run_json(ws: Workspace, target: str, *args: str, **env: str) -> dict[str, Any]:
    res = ws.argosy("run", target, *args, "--output", "json", env=env)
    assert res.stdout, res.stderr
    doc: dict[str, Any] = res.json()
    return doc


def task(doc: dict[str, Any], node: str) -> dict[str, Any]:
    return next(t for t in doc["tasks"] if t["node_path"] == node)


# -- caching.md --------------------------------------------------------------------------------
TIMES = """
from argosy import pipeline, step
FACTOR = {factor}

@step
def times(x: int) -> int:
    return x * FACTOR

@pipeline
def tp(x: int = 3) -> int:
    return times(x)
"""


def test_caches_never_cross_tenants(ws: Workspace) -> None:
    """caching.md: "caches never cross tenants"."""
    path = ws.write(TIMES.format(factor=2), "times_tenants")
    first = run_json(ws, f"{path}:tp", ARGOSY_TENANT="team-a")
    other = run_json(ws, f"{path}:tp", ARGOSY_TENANT="team-b")
    again = run_json(ws, f"{path}:tp", ARGOSY_TENANT="team-a")
    assert task(first, "times")["cache"]["status"] == "miss"
    assert task(other, "times")["state"] == "succeeded"  # ran: team-a's result is not used
    assert task(other, "times")["cache"]["status"] == "miss"
    assert task(again, "times")["state"] == "cached"  # the cache itself works


def test_a_changed_module_constant_invalidates_the_cache(ws: Workspace) -> None:
    """caching.md: the code fingerprint includes "the repr of module-level constants it
    reads"."""
    path = ws.write(TIMES.format(factor=2), "times_constant")
    assert task(run_json(ws, f"{path}:tp"), "times")["state"] == "succeeded"
    assert task(run_json(ws, f"{path}:tp"), "times")["state"] == "cached"
    path.write_text(path.read_text().replace("FACTOR = 2", "FACTOR = 5"))
    changed = run_json(ws, f"{path}:tp")
    assert task(changed, "times")["state"] == "succeeded"
    assert task(changed, "times")["cache"]["status"] == "miss"
    assert "times_constant.py" in task(changed, "times")["cache"]["reason"]
    assert changed["outputs"]["output"]["value"] == 15


# -- sdk.md ------------------------------------------------------------------------------------
def test_non_finite_metrics_fail_with_output_error(ws: Workspace) -> None:
    """sdk.md: "A non-finite value fails the attempt with output_error"."""
    path = ws.write(
        """
        from argosy import Metrics, pipeline, step

        @step
        def m() -> Metrics:
            return Metrics({"auc": float("nan"), "loss": 0.5})

        @pipeline
        def mp():
            m()
        """
    )
    doc = run_json(ws, f"{path}:mp")
    assert doc["status"] == "failed"
    (attempt,) = task(doc, "m")["attempts"]
    assert attempt["reason"] == "output_error"
    assert "'auc' is nan" in attempt["error"] and "finite numbers" in attempt["error"]


# -- concepts.md -------------------------------------------------------------------------------
def test_exponential_retry_backoff_beyond_the_first_retry(ws: Workspace) -> None:
    """concepts.md: before retry n the task waits retry_backoff * 2 ** (n - 1) seconds. The
    gaps are read from the attempts' recorded times (lower bounds: a busy machine only makes
    them longer)."""
    path = ws.write(
        """
        from argosy import pipeline, step

        @step(retries=3, retry_backoff=0.5)
        def flaky() -> int:
            raise RuntimeError("always")

        @pipeline
        def fl():
            flaky()
        """
    )
    doc = run_json(ws, f"{path}:fl")
    attempts = task(doc, "flaky")["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4]
    assert [a["cause"] for a in attempts] == ["first", "retry", "retry", "retry"]
    gaps = [
        datetime.fromisoformat(later["started_at"]) - datetime.fromisoformat(earlier["finished_at"])
        for earlier, later in itertools.pairwise(attempts)
    ]
    for n, gap in enumerate(gaps, start=1):
        assert gap.total_seconds() >= 0.5 * 2 ** (n - 1) - 0.05, (n, gaps)
    assert gaps[2] > gaps[0]  # it grows (2 s vs 0.5 s)


def test_leftover_processes_are_killed_when_a_step_returns_normally(
    ws: Workspace, tmp_path: Path
) -> None:
    """concepts.md: each attempt has its own session and process group, and the launcher is a
    child subreaper, so even a detached grandchild (setsid) is ended with the attempt."""
    pids = tmp_path / "pids.json"
    path = ws.write(
        f"""
        import json, subprocess
        from argosy import pipeline, step

        @step
        def spawn() -> int:
            child = subprocess.Popen(["sleep", "300"])
            detached = subprocess.Popen(["sleep", "301"], start_new_session=True)
            open({str(pids)!r}, "w").write(json.dumps([child.pid, detached.pid]))
            return 1  # returns normally, leaving both running

        @pipeline
        def leaves():
            spawn()
        """
    )
    doc = run_json(ws, f"{path}:leaves")
    assert doc["status"] == "succeeded"
    left = json.loads(pids.read_text())
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in left):
        assert time.monotonic() < deadline, f"still running: {[p for p in left if alive(p)]}"
        time.sleep(0.05)
    for pid in left:  # do not leave them behind if the promise were broken
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- server.md ---------------------------------------------------------------------------------
def test_a_stale_attempt_is_fenced(ws: Workspace) -> None:
    """server.md/concepts.md: outputs commit only for a task's current attempt number; the
    fence is ``finish_if_current`` (an older number, or an attempt already settled, is stale:
    nothing of it is written)."""
    path = ws.write(TIMES.format(factor=2), "times_fence")
    doc = run_json(ws, f"{path}:tp")
    (first,) = task(doc, "times")["attempts"]
    store = MetadataStore.open(f"sqlite:///{ws.home / 'argosy.db'}")

    def finish(s: Session, attempt_id: str, task_id: str) -> bool:
        return finish_if_current(s, attempt_id, task_id, error="stale write")

    try:
        with store.session() as s:
            row = s.get_one(Attempt, first["id"])
            attempt_id, task_id = row.id, row.task_id
            assert not finish(s, attempt_id, task_id)  # settled: stale
            s.execute(update(Attempt).where(Attempt.id == attempt_id).values(state="running"))
            assert finish(s, attempt_id, task_id)  # as if still live: written
            s.execute(update(Attempt).where(Attempt.id == attempt_id).values(error=None))
            s.execute(update(Task).where(Task.id == task_id).values(attempt_count=2))
            assert not finish(s, attempt_id, task_id)  # ... but a newer attempt exists
            error = s.execute(select(Attempt.error).where(Attempt.id == attempt_id)).scalar_one()
            assert error is None  # the stale write wrote nothing
            s.rollback()
    finally:
        store.close()


BLOCKING = """
import time
from argosy import pipeline, step

@step
def wait_long() -> int:
    time.sleep(300)
    return 0

@pipeline
def blocking():
    wait_long()
"""


def test_an_instance_abandons_a_run_owned_elsewhere(tmp_path: Path) -> None:
    """server.md: "An instance that finds one of its runs owned by someone else (its heartbeat
    was late) abandons that run at once"."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "abandon_blocking.py").write_text(BLOCKING)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'abandon_blocking.py'}:blocking"))
    home = tmp_path / "server"
    server = start_server(home, {"ARGOSY_HEARTBEAT_SECONDS": "0.3",
                                 "ARGOSY_POLL_INTERVAL": "0.2"})  # fmt: skip
    db = sqlite3.connect(home / "argosy.db", timeout=30)
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.create_run("blocking")
            deadline = time.monotonic() + 60
            while (
                client.get_run(run.id).status != "running" or not client.tasks(run.id)[0].attempts
            ):
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            # the other owner is a live instance (a dead one's runs the leader would release,
            # and this instance would claim the run back)
            store = MetadataStore.open(f"sqlite:///{home / 'argosy.db'}")
            try:
                with store.session() as s:
                    later = datetime.now(UTC) + timedelta(hours=1)
                    s.add(ServerInstance(id="another-instance", host="elsewhere", pid=1,
                                         state="serving", started_at=later, heartbeat_at=later,
                                         capacity={}))  # fmt: skip
            finally:
                store.close()
            with db:
                db.execute("UPDATE runs SET owner = 'another-instance' WHERE id = ?", (run.id,))
            while "abandoning it here" not in server.log():
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            assert f"run {run.id} is now owned elsewhere" in server.log()
            (owner,) = db.execute("SELECT owner FROM runs WHERE id = ?", (run.id,)).fetchone()
            assert owner == "another-instance"  # it did not take the run back
    finally:
        db.close()
        server.stop(timeout=30)


# -- security.md -------------------------------------------------------------------------------
def test_an_archived_tenant_refuses_changes_with_409_and_stays_readable(tmp_path: Path) -> None:
    """security.md: "Archived tenants stay readable and refuse changes (409 tenant_archived)"."""
    server = start_server(tmp_path / "server")
    try:
        api = f"{server.url}/api/v1"
        assert httpx.post(f"{api}/tenants", json={"name": "old-team"}).status_code == 201
        assert httpx.put(f"{api}/tenants/old-team/secrets/KEEP", json={"value": "x"}).is_success
        assert httpx.post(f"{api}/tenants/old-team/archive").json()["archived"] is True
        for method, path, body in (
            ("PUT", "/secrets/NEW", {"value": "x"}),
            ("DELETE", "/secrets/KEEP", None),
            ("POST", "/members", {"role": "viewer", "subject_kind": "user", "subject": "u"}),
            ("PATCH", "/settings", {"settings": {"a": 1}}),
            ("POST", "/runs", {"pipeline": "p", "parameters": {}}),
        ):
            refused = httpx.request(method, f"{api}/tenants/old-team{path}", json=body)
            assert refused.status_code == 409, (method, path, refused.text)
            assert refused.json()["code"] == "tenant_archived", refused.text
        assert [s["name"] for s in httpx.get(f"{api}/tenants/old-team/secrets").json()] == ["KEEP"]
        assert httpx.get(f"{api}/tenants/old-team/runs").status_code == 200
    finally:
        server.stop(timeout=30)


def test_an_unreachable_issuer_gives_503_never_a_pass(tmp_path: Path) -> None:
    """security.md: an identity provider that cannot be reached makes token checks answer 503
    (retry), never a pass."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    issuer = f"http://127.0.0.1:{port}"
    env = {"ARGOSY_OIDC_ISSUER": issuer, "ARGOSY_OIDC_AUDIENCE": "argosy",
           "ARGOSY_INSECURE_DEV": "false"}  # fmt: skip
    server = start_server(tmp_path / "server", env)
    try:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        token = jwt.encode(
            {"iss": issuer, "sub": "eve", "aud": "argosy", "iat": now, "exp": now + 300},
            key, algorithm="RS256", headers={"kid": "k1", "typ": "at+jwt"},
        )  # fmt: skip
        for path in ("/api/v1/me", "/api/v1/tenants/default/runs"):
            answer = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"},
                               timeout=60)  # fmt: skip
            assert answer.status_code == 503, (path, answer.status_code, answer.text)
            assert answer.headers.get("retry-after")
        assert httpx.get(f"{server.url}/api/v1/me", timeout=30).status_code == 401  # no token
    finally:
        server.stop(timeout=30)


# -- cli.md ------------------------------------------------------------------------------------
def _shown(text: str) -> dict[str, tuple[str, str]]:
    """``argosy config show``'s table: setting -> (value, where from)."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] != "setting":
            rows[parts[0]] = (parts[1], " ".join(parts[2:]))
    return rows


def test_config_show_and_the_order_settings_are_read_in(ws: Workspace, tmp_path: Path) -> None:
    """cli.md: first found wins: a command-line option, an ARGOSY_<NAME> variable, the TOML
    file named by ARGOSY_CONFIG, the default; 'config show' says where each came from."""
    config = tmp_path / "argosy.toml"
    config.write_text('tenant = "from-file"\nmax_cpus = 3\n')
    shown = ws.argosy("config", "show", env={"ARGOSY_CONFIG": str(config)})
    assert shown.code == 0, shown.stderr
    rows = _shown(shown.stdout)
    assert rows["tenant"][0] == "from-file" and "config file" in rows["tenant"][1]
    assert rows["max_cpus"][0] == "3.0" and "config file" in rows["max_cpus"][1]
    assert rows["user"][1] == "default"
    both = _shown(ws.argosy("config", "show", env={"ARGOSY_CONFIG": str(config),
                                                   "ARGOSY_TENANT": "from-env"}).stdout)  # fmt: skip
    assert both["tenant"] == ("from-env", "environment (ARGOSY_TENANT)")
    assert both["max_cpus"][0] == "3.0"  # the file still gives what the environment lacks


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ARGOSY_MAX_CPUS": "0"}, "ARGOSY_MAX_CPUS"),
        ({"ARGOSY_CONFIG": "{missing}"}, "ARGOSY_CONFIG"),
        ({"ARGOSY_CONFIG": "{unknown_key}"}, "no_such_setting"),
    ],
    ids=["invalid value", "missing file", "unknown key"],
)
def test_an_invalid_setting_exits_2_naming_it(
    ws: Workspace, tmp_path: Path, env: dict[str, str], named: str
) -> None:
    """cli.md: an invalid value, an unknown key in the config file or a missing config file
    is a usage error (exit 2) naming the key."""
    (tmp_path / "unknown.toml").write_text("no_such_setting = 1\n")
    filled = {k: v.format(missing=tmp_path / "nope.toml", unknown_key=tmp_path / "unknown.toml")
              for k, v in env.items()}  # fmt: skip
    res = ws.argosy("config", "show", env=filled)
    assert res.code == 2, (res.stdout, res.stderr)
    assert named in res.stderr and len(res.stderr.strip().splitlines()) == 1


# -- operations.md -----------------------------------------------------------------------------
def test_backup_folders_are_owner_only_and_a_newer_export_is_refused(
    ws: Workspace, tmp_path: Path
) -> None:
    """operations.md: "The folder is created with owner-only permissions"; "An export from a
    newer Argosy is refused"."""
    path = ws.write(TIMES.format(factor=2), "times_backup")
    run_json(ws, f"{path}:tp")
    res = ws.argosy("admin", "backup", str(tmp_path / "backup"))
    assert res.code == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "backup").stat().st_mode) == 0o700
    res = ws.argosy("admin", "export", str(tmp_path / "export"))
    assert res.code == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o700
    index = tmp_path / "export" / "backup.json"
    doc = json.loads(index.read_text())
    doc["alembic_revision"] = "9999"  # a schema this Argosy does not know
    index.write_text(json.dumps(doc))
    other = Workspace(ws.root, tmp_path / "other-home")
    refused = other.argosy("admin", "import", str(tmp_path / "export"))
    assert refused.code == 2, (refused.stdout, refused.stderr)
    assert "9999" in refused.stderr and "newer" in refused.stderr
