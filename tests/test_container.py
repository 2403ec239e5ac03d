"""Container steps run for real through podman (daemonless, runc), with a locally built image."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Workspace, outputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGE = "localhost/argosy-test-busybox:1"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for podman on these machines, and a busybox image built from scratch."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run 'make test' (it installs the test packages)")
    folder = tmp_path_factory.mktemp("image")
    conf = folder / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    env = {"CONTAINERS_CONF": str(conf), "ARGOSY_EXAMPLE_IMAGE": IMAGE}
    shutil.copy("/bin/busybox", folder / "busybox")
    (folder / "Containerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    subprocess.run(
        ["podman", "build", "-q", "-t", IMAGE, str(folder)],
        check=True, capture_output=True, env={"PATH": "/usr/bin:/usr/sbin:/bin:/sbin", **env},
    )  # fmt: skip
    return env


def test_container_example_runs_and_its_output_feeds_a_python_step(
    ws: Workspace, podman: dict[str, str]
) -> None:
    shutil.copy(EXAMPLES / "container_step.py", ws.root / "container_step.py")
    res = ws.argosy(
        "run", "container_step.py", "-p", "text=hello argosy", "--output", "json", env=podman
    )
    assert res.code == 0, res.stderr
    doc = res.json()
    assert outputs(doc) == {"loud": "HELLO ARGOSY!", "capitals": 11}
    shout = next(s for s in doc["tasks"] if s["node_path"] == "shout")
    assert shout["state"] == "succeeded"
    again = ws.argosy(
        "run", "container_step.py", "-p", "text=hello argosy", "--output", "json", env=podman
    )
    assert {s["node_path"]: s["state"] for s in again.json()["tasks"]}["shout"] == "cached"


def test_a_failing_container_command_fails_its_task(ws: Workspace, podman: dict[str, str]) -> None:
    path = ws.write(f'''
        from argosy import container_step, pipeline

        broken = container_step(
            name="broken", image="{IMAGE}",
            command=["sh", "-c", "echo going wrong >&2; exit 7"],
            outputs={{"never": str}},
        )

        @pipeline
        def p() -> str:
            return broken()
    ''')
    res = ws.argosy("run", str(path), "--output", "json", env=podman)
    assert res.code == 1
    attempt = res.json()["tasks"][0]["attempts"][0]
    assert attempt["reason"] == "exit_code"
    assert "exited with 7" in attempt["error"]
    logs = ws.argosy("logs", res.json()["id"]).stdout
    assert "going wrong" in logs


def test_container_gets_env_and_secrets_and_dies_with_its_timeout(
    ws: Workspace, podman: dict[str, str]
) -> None:
    path = ws.write(f'''
        from argosy import container_step, pipeline

        show = container_step(
            name="show", image="{IMAGE}",
            command=["sh", "-c",
                     "echo mode=$MODE token=$(cat /run/secrets/API_TOKEN) > {{{{outputs.out.path}}}}"],
            outputs={{"out": str}}, env={{"MODE": "fast"}}, secrets=["API_TOKEN"],
        )
        hang = container_step(
            name="hang", image="{IMAGE}", command=["sh", "-c", "sleep 300"],
            outputs={{"never": str}}, timeout=2,
        )

        @pipeline
        def p() -> str:
            hang()
            return show()
    ''')
    res = ws.argosy("run", str(path), "--output", "json", env={**podman, "API_TOKEN": "t0k3n"})
    assert res.code == 1
    doc = res.json()
    steps = {s["node_path"]: s for s in doc["tasks"]}
    assert steps["show"]["state"] == "succeeded"
    assert steps["hang"]["attempts"][0]["reason"] == "timeout"
    out_file = ws.root / "out.txt"
    got = ws.argosy("artifacts", "get", f"{doc['id']}/show/out", "--out", str(out_file))
    assert got.code == 0, got.stderr
    assert json.loads(out_file.read_text()) == "mode=fast token=t0k3n\n"
    assert not containers_of(ws, podman)


def containers_of(ws: Workspace, podman: dict[str, str]) -> list[str]:
    """The containers left of this workspace's attempts (the machine's podman storage is
    shared with other tests and other test processes)."""
    listing = subprocess.run(
        ["podman", "ps", "--all", "--format", "{{.Names}}"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/usr/sbin:/bin:/sbin", **podman},
        check=True,
    ).stdout  # fmt: skip
    database = ws.home / "argosy.db"
    if not database.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(database)) as db:
            ours = {f"argosy-{row[0].lower()}" for row in db.execute("SELECT id FROM attempts")}
    except sqlite3.OperationalError:  # the CLI has not made its tables yet: no attempt
        return []
    return [name for name in listing.split() if name in ours]
