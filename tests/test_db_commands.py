"""``argosy db upgrade/current/history``: Alembic on the configured database, never an
implicit migration, clear answers about head; and every migration is expand/contract."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from argosy.stores.metadata.db import alembic_config, open_engine
from tests.conftest import Workspace

if TYPE_CHECKING:
    from tests.pg_fixture import PostgresCluster


def chain(url: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_db_commands_move_a_new_database_to_head_step_by_step(ws: Workspace) -> None:
    db = ws.home / "argosy.db"
    revisions = chain(f"sqlite:///{db}")
    head = revisions[-1]

    res = ws.argosy("db", "current")
    assert (
        res.code == 0 and f"no schema yet (head is {head}): run 'argosy db upgrade'" in res.stdout
    )
    assert ws.argosy("db", "current", "--check").code == 1
    doc = ws.argosy("db", "current", "-o", "json").json()
    assert doc == {"database": f"sqlite:///{db}", "current": None, "head": head,
                   "at_head": False, "known": True}  # fmt: skip
    assert not db.exists()  # looking does not create a database

    res = ws.argosy("db", "upgrade", "--to", revisions[1], "-o", "json")
    assert res.code == 0, res.stderr
    assert res.json() == {"database": f"sqlite:///{db}", "from": None, "to": revisions[1],
                          "head": head, "changed": True}  # fmt: skip
    doc = ws.argosy("db", "current", "-o", "json").json()
    assert (doc["current"], doc["at_head"]) == (revisions[1], False)
    behind = len(revisions) - 2
    assert f"{revisions[1]}: {behind} revision" in ws.argosy("db", "current").stdout
    history = ws.argosy("db", "history", "-o", "json").json()
    assert [r["revision"] for r in history["revisions"]] == revisions
    assert [r["revision"] for r in history["revisions"] if r["current"]] == [revisions[1]]
    assert [r["revision"] for r in history["revisions"] if r["head"]] == [head]
    assert all(r["description"] for r in history["revisions"])

    res = ws.argosy("db", "upgrade")
    assert res.code == 0, res.stderr
    assert f"upgraded from {revisions[1]} to {head} (head)" in res.stdout
    res = ws.argosy("db", "current", "--check")
    assert res.code == 0 and f"{head} (head): up to date" in res.stdout
    assert "already at" in ws.argosy("db", "upgrade").stdout
    text_history = ws.argosy("db", "history").stdout.splitlines()
    assert text_history[-1].startswith(head) and text_history[-1].endswith("(current, head)")
    with closing(sqlite3.connect(db)) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]


def test_db_upgrade_refuses_to_go_back_or_to_an_unknown_revision(ws: Workspace) -> None:
    assert ws.argosy("db", "upgrade").code == 0
    first = chain(f"sqlite:///{ws.home / 'argosy.db'}")[0]
    res = ws.argosy("db", "upgrade", "--to", first)
    assert res.code == 2 and "only moves forward" in res.stderr
    res = ws.argosy("db", "upgrade", "--to", "nope")
    assert res.code == 2 and "unknown revision 'nope'; the revisions are" in res.stderr


def test_a_database_migrated_by_a_newer_argosy_is_reported_not_touched(ws: Workspace) -> None:
    assert ws.argosy("db", "upgrade").code == 0
    db = ws.home / "argosy.db"
    with closing(sqlite3.connect(db)) as raw, raw:
        raw.execute("UPDATE alembic_version SET version_num = '0099'")
    res = ws.argosy("db", "current")
    assert res.code == 0 and "0099: newer than this Argosy knows" in res.stdout
    assert ws.argosy("db", "current", "--check").code == 1
    res = ws.argosy("db", "upgrade")
    assert res.code == 2 and "upgrade Argosy instead" in res.stderr
    with closing(sqlite3.connect(db)) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0099",)]


def test_db_commands_on_postgresql_hide_the_password(
    ws: Workspace, pg_cluster: PostgresCluster, pg_url: str
) -> None:
    url = pg_url.replace("://argosy@", "://argosy:s3cret@")
    env = {"ARGOSY_DATABASE_URL": url}
    assert ws.argosy("db", "current", "-o", "json", env=env).json()["current"] is None
    res = ws.argosy("db", "upgrade", env=env)
    assert res.code == 0, res.stderr
    res = ws.argosy("db", "current", "--check", env=env)
    assert res.code == 0 and "(head): up to date" in res.stdout
    assert "argosy:***@" in res.stdout and "s3cret" not in res.stdout + res.stderr


# -- expand/contract -------------------------------------------------------------------------------


def _schema(engine: Any) -> dict[str, dict[str, dict[str, Any]]]:
    insp = inspect(engine)
    return {t: {c["name"]: c for c in insp.get_columns(t)}
            for t in insp.get_table_names() if t != "alembic_version"}  # fmt: skip


def test_every_migration_is_expand_only_unless_it_declares_itself_a_contraction(
    tmp_path: Path,
) -> None:
    """A migration may add tables, nullable columns and columns with a server default; one
    that drops or tightens something says ``contract = True`` (see docs/operations.md): it
    ships only after every server version still running has stopped using what it removes."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = open_engine(url, migrate=False)
    cfg = alembic_config(url)
    try:
        before: dict[str, dict[str, dict[str, Any]]] = {}
        for revision in chain(url):
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            after = _schema(engine)
            if getattr(script.get_revision(revision).module, "contract", False):
                before = after
                continue
            for table, columns in before.items():
                assert table in after, f"{revision} drops table {table}"
                for name, col in columns.items():
                    assert name in after[table], f"{revision} drops column {table}.{name}"
                    assert col["nullable"] <= after[table][name]["nullable"], (
                        f"{revision} makes {table}.{name} NOT NULL"
                    )
                for name, col in after[table].items():
                    if name not in columns:
                        assert col["nullable"] or col.get("default") is not None, (
                            f"{revision} adds {table}.{name} NOT NULL without a server default: "
                            "the previous version's inserts would fail"
                        )
            before = after
    finally:
        engine.dispose()
