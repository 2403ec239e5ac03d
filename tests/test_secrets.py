"""Tenant secrets on a server: set by owners, received by the steps that declare them, never
returned by the API, encrypted at rest, redacted from captured logs."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import httpx

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import start_server

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


def test_a_secret_reaches_its_step_and_nowhere_else(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "secret_user.py").write_text(PIPELINE)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'secret_user.py'}:uses_secret"))
    server = start_server(tmp_path / "server", {"ARGOSY_INSECURE_DEV": "true"})
    try:
        with Client(server.url) as client:
            info = client.set_secret("HF_TOKEN", VALUE)
            assert info.name == "HF_TOKEN"
            raw = httpx.get(f"{server.api}/secrets").text
            assert "HF_TOKEN" in raw and VALUE not in raw  # names only
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("uses_secret").id, poll=0.2, timeout=120)
            assert run.status == "succeeded", run.error
            outputs = {a.node_path: a.value for a in client.artifacts(run.id)}
            assert outputs["use_token"] == len(VALUE)  # the step received the value
            lines = [entry.line for entry in client.logs(run.id).items]
            assert "the token is ***" in lines and not any(VALUE in line for line in lines)

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
    db = sqlite3.connect(tmp_path / "server" / "argosy.db")
    dumped = "\n".join(db.iterdump())
    assert VALUE not in dumped  # encrypted at rest (and deleted since)
    everything = b"".join(p.read_bytes() for p in (tmp_path / "server").rglob("*") if p.is_file())
    assert VALUE.encode() not in everything  # not in blobs, logs or records either


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
