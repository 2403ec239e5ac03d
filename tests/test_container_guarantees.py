"""Container steps get what process steps get and no more (podman + runc, a busybox image built
locally): secrets as files that ``podman inspect`` never shows, no network unless asked, a
read-only root filesystem with a scratch mount, a non-root user without capabilities, the
memory limit enforced as ``memory_limit``, and no container left after a cancel or a timeout."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tests.conftest import Workspace
from tests.test_container import IMAGE, containers_of
from tests.test_container import podman as podman  # the fixture: the image, CONTAINERS_CONF

SECRET = "s3cr3t-value-0123456789"
PATH = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin"}


def _podman(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, env={**PATH, **env}, check=True
    ).stdout


def _get(ws: Workspace, ref: str) -> Any:
    out = ws.root / "got.json"
    res = ws.argosy("artifacts", "get", ref, "--out", str(out))
    assert res.code == 0, res.stderr
    return json.loads(out.read_text())


def test_a_container_step_is_confined(ws: Workspace, podman: dict[str, str]) -> None:
    probe = (
        "sleep 3; {"
        " echo uid=$(id -u);"
        " echo secret=$(cat /run/secrets/API_TOKEN);"
        " echo secret_dir=$ARGOSY_SECRETS_DIR;"
        " echo env_has_secret=$(env | grep -c s3cr3t);"
        " echo nets=$(ls /sys/class/net | tr '\\n' ,);"
        " touch /root-write 2>/dev/null && echo root=rw || echo root=ro;"
        " touch /tmp/x && echo tmp=rw;"
        " echo caps=$(grep CapEff /proc/self/status | tr -d ' \\t');"
        " echo mode=$MODE;"
        " } > {{outputs.report.path}}"
    )
    path = ws.write(f'''
        from argosy import container_step, pipeline

        confined = container_step(
            name="confined", image="{IMAGE}", command=["sh", "-c", {probe!r}],
            outputs={{"report": str}}, env={{"MODE": "fast"}}, secrets=["API_TOKEN"],
            memory="64Mi",
        )
        online = container_step(
            name="online", image="{IMAGE}", network=True,
            command=["sh", "-c", "ls /sys/class/net | tr '\\\\n' , > {{{{outputs.nets.path}}}}"],
            outputs={{"nets": str}},
        )

        @pipeline
        def p() -> str:
            online()
            return confined()
    ''')
    env = {**podman, "API_TOKEN": SECRET}
    proc = ws.spawn("run", str(path), "--output", "json", env=env)
    try:
        # while it runs: what the engine can tell about the container holds no secret
        deadline = time.monotonic() + 60
        inspected = ""
        while not inspected:  # the confined step's container (online's ends at once)
            assert time.monotonic() < deadline and proc.poll() is None, "no container started"
            for name in containers_of(ws, podman):
                try:
                    found = _podman(podman, "inspect", name)
                except subprocess.CalledProcessError:  # removed meanwhile
                    continue
                if "MODE=fast" in found:
                    inspected = found
            time.sleep(0.1)
        assert SECRET not in inspected
        doc = json.loads(inspected)[0]
        assert doc["HostConfig"]["ReadonlyRootfs"] is True
        assert doc["Config"]["User"] in ("65534:65534", f"{65534}")
        assert not any(SECRET in e for e in doc["Config"]["Env"])
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    run = json.loads(stdout)
    report = dict(
        line.split("=", 1) for line in _get(ws, f"{run['id']}/confined/report").splitlines()
    )
    assert report == {
        "uid": "65534", "secret": SECRET, "secret_dir": "/run/secrets", "env_has_secret": "0",
        "nets": "lo,", "root": "ro", "tmp": "rw", "caps": "CapEff:0000000000000000",
        "mode": "fast",
    }  # fmt: skip
    assert "eth0" in _get(ws, f"{run['id']}/online/nets")  # network=True: the default network
    assert not containers_of(ws, podman)
    assert SECRET not in ws.argosy("logs", run["id"]).stdout


def test_the_memory_limit_kills_with_memory_limit(ws: Workspace, podman: dict[str, str]) -> None:
    path = ws.write(f'''
        from argosy import container_step, pipeline

        hungry = container_step(
            name="hungry", image="{IMAGE}", memory="24Mi",
            command=["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\\\0' a); echo ${{#x}} > {{{{outputs.n.path}}}}"],
            outputs={{"n": str}},
        )

        @pipeline
        def p() -> str:
            return hungry()
    ''')
    res = ws.argosy("run", str(path), "--output", "json", env=podman)
    assert res.code == 1
    attempt = res.json()["tasks"][0]["attempts"][0]
    assert attempt["reason"] == "memory_limit", attempt
    assert "the container used more than its memory limit (24" in attempt["error"]
    assert not containers_of(ws, podman)


def test_cancel_and_timeout_leave_no_container(ws: Workspace, podman: dict[str, str]) -> None:
    path = ws.write(f'''
        from argosy import container_step, pipeline

        forever = container_step(
            name="forever", image="{IMAGE}", command=["sh", "-c", "sleep 600"],
            outputs={{"never": str}},
        )
        slow = container_step(
            name="slow", image="{IMAGE}", command=["sh", "-c", "sleep 600"],
            outputs={{"never": str}}, timeout=2,
        )

        @pipeline
        def cancelled() -> str:
            return forever()

        @pipeline
        def timed_out() -> str:
            return slow()
    ''')
    proc = ws.spawn("run", f"{path}:cancelled", "--output", "json", env=podman)
    deadline = time.monotonic() + 60
    while not containers_of(ws, podman):
        assert time.monotonic() < deadline and proc.poll() is None, "no container started"
        time.sleep(0.1)
    run_id = ws.argosy("runs", "list", "--output", "json").json()["runs"][0]["id"]
    assert ws.argosy("runs", "cancel", run_id, env=podman).code == 0
    proc.communicate(timeout=120)
    assert ws.argosy("runs", "show", run_id, "--output", "json").json()["status"] == "cancelled"
    assert not containers_of(ws, podman)

    res = ws.argosy("run", f"{path}:timed_out", "--output", "json", env=podman)
    assert res.code == 1
    assert res.json()["tasks"][0]["attempts"][0]["reason"] == "timeout"
    assert not containers_of(ws, podman)
