"""Run-queue wake-ups (stores/metadata/wakeups.py): PostgreSQL LISTEN/NOTIFY, delivered at the
queuing transaction's commit only, and still correct when notifications are lost (the claim loop
polls, and looks at once after the listening connection comes back).

The waits below are liveness bounds (generous on a busy machine), not speed measurements: the
submission latency is measured by ``benchmarks/api.py``.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from argosy.engine.submission import SERVER_QUEUE, queue_run
from argosy.spec.compile import CompiledPipeline, compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.metadata import runs as q
from argosy.stores.metadata import wakeups
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import PipelineVersion
from argosy.stores.metadata.wakeups import CHANNEL, RunQueueListener

PIPELINE = textwrap.dedent(
    """
    from argosy import pipeline, step

    @step
    def hello(name: str) -> str:
        return "hello " + name

    @pipeline
    def greet(name: str = "world"):
        hello(name)
    """
)
LONG = 3600.0  # an interval no test waits for: only a wake-up can end a wait


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _until(condition: object, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def metadata(pg_migrated_url: str) -> Iterator[MetadataStore]:
    store = MetadataStore.open(pg_migrated_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledPipeline:
    folder = tmp_path_factory.mktemp("project")
    (folder / "greet_wakeups.py").write_text(PIPELINE)
    return compile_pipeline(load_pipeline(f"{folder / 'greet_wakeups.py'}:greet"))


@pytest.fixture
def version_id(metadata: MetadataStore, compiled: CompiledPipeline) -> str:
    with metadata.session() as s:
        return q.ensure_pipeline_version(s, "default", compiled.spec, "ci").id


@pytest.fixture
def listener(metadata: MetadataStore) -> Iterator[RunQueueListener]:
    found = RunQueueListener(metadata.engine.url, fast=LONG, fallback=LONG)
    found.start()
    assert _until(lambda: found.listening), "the listener never connected"
    assert found.wait(0)  # the wake-up every (re)connection gives: look at the queue now
    yield found
    found.stop()


def test_queuing_a_server_run_notifies_at_commit_and_not_on_rollback(
    metadata: MetadataStore, version_id: str, pg_migrated_url: str
) -> None:
    with psycopg.connect(_libpq(pg_migrated_url), autocommit=True) as watcher:
        watcher.execute(f"LISTEN {CHANNEL}")

        def heard() -> list[str]:
            return [n.payload for n in watcher.notifies(timeout=0.5, stop_after=1)]

        with metadata.session() as s:  # queued for the server, then rolled back
            version = s.get_one(PipelineVersion, version_id)
            queue_run(s, version, {}, "ci", queue=SERVER_QUEUE)
            s.rollback()
        assert heard() == []
        with metadata.session() as s:  # a local run (the creating process runs it)
            queue_run(s, s.get_one(PipelineVersion, version_id), {}, "ci", queue=None)
        assert heard() == []
        with metadata.session() as s:
            queue_run(s, s.get_one(PipelineVersion, version_id), {}, "ci", queue=SERVER_QUEUE)
        assert heard() == ["default"]


def test_a_listener_wakes_on_another_process_s_commit_only(
    listener: RunQueueListener, pg_migrated_url: str
) -> None:
    # another process's transactions (a raw connection: this process's own wake-up is not used)
    with psycopg.connect(_libpq(pg_migrated_url)) as other:
        other.execute("SELECT pg_notify(%s, 'default')", (CHANNEL,))
        other.rollback()
        assert not listener.wait(1.0)
        other.execute("SELECT pg_notify(%s, 'default')", (CHANNEL,))
        other.commit()
    assert listener.wait(20.0)


def test_lost_notifications_the_listener_reconnects_looks_at_once_and_polls_meanwhile(
    listener: RunQueueListener, pg_migrated_url: str
) -> None:
    with psycopg.connect(_libpq(pg_migrated_url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE %s AND pid <> pg_backend_pid()",
            (f"LISTEN {CHANNEL}%",),
        ).fetchall()
    assert killed == [(True,)]
    # notifications sent while it is away are lost: until it is back it polls at the fast
    # interval, and its first act when back is a wake-up (the claim loop looks at the queue)
    assert _until(lambda: listener.connects >= 2), "the listener did not reconnect"
    assert listener.listening and listener.interval == LONG
    assert listener.wait(20.0)


def test_without_a_listening_connection_the_claim_loop_polls_at_the_fast_interval() -> None:
    unreachable = make_url("postgresql+psycopg://argosy@127.0.0.1:9/none")
    found = RunQueueListener(unreachable, fast=0.05, fallback=LONG)
    found.start()
    try:
        assert not found.listening and found.interval == 0.05
        started = time.monotonic()
        assert not found.wait()
        assert time.monotonic() - started < LONG
    finally:
        found.stop()


def test_a_commit_in_this_process_wakes_its_listeners_on_any_database(
    tmp_path: Path, compiled: CompiledPipeline
) -> None:
    metadata = MetadataStore.open(f"sqlite:///{tmp_path / 'argosy.db'}")
    found = RunQueueListener(metadata.engine.url, fast=LONG)
    found.start()
    try:
        with metadata.session() as s:
            version = q.ensure_pipeline_version(s, "default", compiled.spec, "ci")
            queue_run(s, version, {}, "ci", queue=SERVER_QUEUE)
            assert not found.wait(0)  # not before the commit
        assert found.wait(0)
        assert wakeups._PENDING not in s.info  # the next transaction wakes again
    finally:
        found.stop()
        metadata.close()
