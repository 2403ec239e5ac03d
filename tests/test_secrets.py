"""Tenant secrets on a server: set by owners, received by the steps that declare them, never
returned by the API, encrypted at rest, redacted from captured logs.

"At rest" is checked while the secret is set, everywhere its bytes could land: the SQLite
file (with its WAL), PostgreSQL's rows, the server's state folder, a backup and an export.
The search looks for the value itself and for its base64 and hex spellings, so a store that
merely encodes the value is caught too."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, select

from argosy.client.client import Client
from argosy.errors import IntegrityError
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from argosy.stores.keys import LocalKeyProvider, TenantKeys
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.secrets import TenantSecrets
from tests.server_fixture import new_kek, start_server

VALUE = "hf_s3cr3t-VALUE-42"
PIPELINE = textwrap.dedent(
    """
    import os
    from argosy import pipeline, step

    @step(secrets=["HF_TOKEN"])
    def use_token() -> int:
        print("the token is", os.environ["HF_TOKEN"])
        return len(os.environ["HF_TOKEN"])

    @pipeline
    def uses_secret():
        use_token()
    """
)


def spellings(value: str) -> list[bytes]:
    """``value`` as bytes, in hex, and in base64 at each of the three alignments it can take
    inside a longer base64 text (standard and URL-safe alphabets)."""
    data = value.encode()
    found = [data, data.hex().encode()]
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * shift + data)
            # drop the characters that mix in the neighbouring bytes
            found.append(text[{0: 0, 1: 2, 2: 3}[shift] : -3])
    return found


def assert_not_in(data: bytes, where: str, value: str = VALUE) -> None:
    for spelling in spellings(value):
        assert spelling not in data, f"the secret is readable in {where} (as {spelling!r})"


def test_the_search_finds_encoded_values() -> None:
    """The check above would see a value stored plainly, base64-encoded or hex-encoded."""
    for stored in (
        VALUE.encode(),
        b"x" + base64.b64encode(VALUE.encode()),
        base64.b64encode(b"ab" + VALUE.encode() + b"cd"),
        base64.urlsafe_b64encode(b"a" + VALUE.encode()),
        VALUE.encode().hex().encode(),
    ):
        with pytest.raises(AssertionError, match="readable"):
            assert_not_in(b"header" + stored + b"trailer", "a sample")


def files_under(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def admin(home: Path, *args: str, database_url: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOSY_")}
    env["ARGOSY_HOME"] = str(home)
    if database_url:
        env["ARGOSY_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-m", "argosy.cli.main", "admin", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_secret_reaches_its_step_and_nowhere_else(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "secret_user.py").write_text(PIPELINE)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'secret_user.py'}:uses_secret"))
    home = tmp_path / "server"
    server = start_server(home, {"ARGOSY_INSECURE_DEV": "true"})
    try:
        with Client(server.url) as client:
            info = client.set_secret("HF_TOKEN", VALUE)
            assert info.name == "HF_TOKEN"
            raw = httpx.get(f"{server.api}/secrets").text
            assert "HF_TOKEN" in raw and VALUE not in raw  # names only

            # at rest, while it is set: the database file (and its WAL) ...
            db = sqlite3.connect(home / "argosy.db")
            try:
                (stored,) = db.execute("SELECT ciphertext FROM secrets WHERE name = 'HF_TOKEN'")
                dumped = "\n".join(db.iterdump()).encode()
            finally:
                db.close()
            assert_not_in(dumped, "the SQLite rows")
            for path, data in files_under(home):
                assert_not_in(data, str(path))
            sealed = base64.b64decode(stored[0])
            assert len(sealed) == 12 + len(VALUE) + 16  # nonce, ciphertext, GCM tag
            # ... a backup and an export (folders, so nothing is hidden by compression)
            admin(home, "backup", str(tmp_path / "backup"), "--blobs")
            admin(home, "export", str(tmp_path / "export"))
            for dest in ("backup", "export"):
                files = list(files_under(tmp_path / dest))
                assert any(b"HF_TOKEN" in data for _, data in files), f"no secret row in {dest}"
                for path, data in files:
                    assert_not_in(data, str(path))

            client.push_pipeline(compiled)
            run = client.wait(client.create_run("uses_secret").id, poll=0.2, timeout=120)
            assert run.status == "succeeded", run.error
            outputs = {a.node_path: a.value for a in client.artifacts(run.id)}
            assert outputs["use_token"] == len(VALUE)  # the step received the value
            lines = [entry.line for entry in client.logs(run.id).items]
            assert "the token is ***" in lines and not any(VALUE in line for line in lines)
            # after a run: not in blobs, logs or records either
            for path, data in files_under(home):
                assert_not_in(data, str(path))

            client.delete_secret("HF_TOKEN")
            again = client.wait(
                client.create_run("uses_secret", no_cache=True).id, poll=0.2, timeout=120
            )
            assert again.status == "failed"
            task = client.tasks(again.id)[0]
            assert "HF_TOKEN not set" in (task.reason or "") and "argosy secrets set" in (
                task.reason or ""
            )
    finally:
        server.stop()


def test_secrets_in_postgresql_rows_and_backups_are_sealed(
    pg_migrated_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL: no row of any table holds the value (or its encodings) while it is
    set, nor does a backup; the ciphertext opens only under its own tenant and name."""
    store = MetadataStore.open(pg_migrated_url)
    try:
        keys = TenantKeys(store, LocalKeyProvider(env_value=new_kek()))
        secrets = TenantSecrets(store, keys)
        secrets.put("default", "HF_TOKEN", VALUE, "olga")
        assert secrets.open("default", ["HF_TOKEN"]) == {"HF_TOKEN": VALUE}
        meta = MetaData()
        with store.engine.connect() as conn:
            meta.reflect(conn)
            rows = {
                name: [tuple(row) for row in conn.execute(select(table))]
                for name, table in meta.tables.items()
            }
        assert any("HF_TOKEN" in row for row in rows["secrets"])
        assert_not_in(repr(rows).encode(), "PostgreSQL rows")
        # a ciphertext copied to another name does not open
        with store.session() as s:
            from argosy.stores.metadata.tables import Secret

            row = s.scalars(select(Secret).where(Secret.name == "HF_TOKEN")).one()
            s.add(Secret(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", tenant="default", name="COPIED",
                         ciphertext=row.ciphertext, key_id=row.key_id, created_at=row.created_at,
                         created_by="x", updated_at=row.updated_at, updated_by="x"))  # fmt: skip
        with pytest.raises(IntegrityError, match="does not decrypt"):
            secrets.open("default", ["COPIED"])
    finally:
        store.close()
    admin(tmp_path / "home", "backup", str(tmp_path / "backup"), database_url=pg_migrated_url)
    files = list(files_under(tmp_path / "backup"))
    assert any(b"HF_TOKEN" in data for _, data in files)
    for path, data in files:
        assert_not_in(data, str(path))


def test_secret_names_and_values_are_checked(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", {"ARGOSY_INSECURE_DEV": "true"})
    try:
        bad_name = httpx.put(f"{server.api}/secrets/not-a-var", json={"value": "x"})
        assert bad_name.status_code == 422
        unknown_field = httpx.put(f"{server.api}/secrets/OK", json={"value": "x", "extra": 1})
        assert unknown_field.status_code == 422
        missing = httpx.delete(f"{server.api}/secrets/NEVER_SET")
        assert missing.status_code == 404 and "no secret" in missing.json()["detail"]
    finally:
        server.stop()
