"""The metadata schema's Alembic migrations: they build exactly the models' schema, they
upgrade an older database in place, and opening the database is durable and idempotent."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from argosy.stores.metadata import db
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore, alembic_config, open_engine, upgrade
from argosy.stores.metadata.tables import Base


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'argosy.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (PostgreSQL: the session's test server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'argosy.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def script_head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def revision_chain(url: str) -> list[str]:
    """Revisions from the first to head."""
    script = ScriptDirectory.from_config(alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_migrations_form_one_linear_chain_ending_at_the_head_open_checks_for(url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(url))
    assert len(script.get_bases()) == 1
    assert len(script.get_heads()) == 1
    # open_engine skips Alembic when the database is at db.HEAD: it must be the newest revision
    assert script_head(url) == db.HEAD


def test_upgrade_from_empty_to_head_builds_exactly_the_models_schema(any_url: str) -> None:
    url = any_url
    engine = open_engine(url, migrate=False)
    try:
        assert inspect(engine).get_table_names() == []
        assert db.current_revision(engine) is None
        upgrade(engine)
        assert db.current_revision(engine) == script_head(url)
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert tables - set(Base.metadata.tables) == {"alembic_version"}
        # autogenerate would write an empty migration: models and migrations agree
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_each_revision_applies_in_turn_and_downgrades_to_empty(any_url: str) -> None:
    url = any_url
    engine = open_engine(url, migrate=False)
    cfg = alembic_config(url)
    try:
        for revision in revision_chain(url):
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            assert db.current_revision(engine) == revision
        assert schema_differences(engine) == []
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert db.current_revision(engine) == script_head(url)
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_opening_an_older_database_upgrades_it_and_keeps_its_rows(url: str) -> None:
    first = revision_chain(url)[0]
    engine = open_engine(url, migrate=False)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, first)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, tenant, name, created_at, created_by) "
                "VALUES ('01TENANT00000000000000000A', 'team-a', 'team-a', :now, 'alice')"
            ),
            {"now": datetime.now(UTC)},
        )
    engine.dispose()

    store = MetadataStore.open(url)  # what every CLI command does
    try:
        assert db.current_revision(store.engine) == script_head(url)
        assert schema_differences(store.engine) == []
        with store.session() as s:
            rows = s.execute(text("SELECT name, created_by FROM tenants")).all()
        assert [tuple(r) for r in rows] == [("team-a", "alice")]
    finally:
        store.close()


def test_database_opens_in_wal_mode_with_full_synchronous_writes(url: str) -> None:
    store = MetadataStore.open(url)
    try:
        with store.session() as s:
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert s.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        store.close()
    # WAL is a property of the file: any other client sees it too
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_opening_twice_is_idempotent(url: str) -> None:
    first = MetadataStore.open(url)
    try:
        with first.session() as s:
            q.ensure_tenant(s, "default", "alice")
        before = sorted(inspect(first.engine).get_table_names())
    finally:
        first.close()

    second = MetadataStore.open(url)
    try:
        assert db.current_revision(second.engine) == script_head(url)
        assert sorted(inspect(second.engine).get_table_names()) == before
        with second.session() as s:
            assert s.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                script_head(url)
            ]
            assert s.execute(text("SELECT name FROM tenants")).scalars().all() == ["default"]
        assert schema_differences(second.engine) == []
    finally:
        second.close()


def test_foreign_keys_are_enforced(url: str) -> None:
    store = MetadataStore.open(url)
    try:
        with pytest.raises(Exception, match="FOREIGN KEY"), store.session() as s:
            s.execute(
                text(
                    "INSERT INTO pipeline_versions (id, tenant, pipeline_id, digest, spec, "
                    "created_at, created_by) VALUES ('01VERSION0000000000000000A', 'default', "
                    "'01NOSUCHPIPELINE0000000000', 'sha256:x', '{}', :now, 'alice')"
                ),
                {"now": datetime.now(UTC)},
            )
    finally:
        store.close()
