"""Rootful containers run in a user namespace in which no id is the host's root; rootless
containers refuse a memory limit the host cannot enforce (``runtime/container.py``).

- a root launcher without task users: the container's ids 0-65535 are the unprivileged host
  ids from ``ARGOSY_CONTAINER_UID_BASE`` (1 000 000 000), its processes host uid BASE+65534;
- a root server with task users: the namespace holds only the tenant's task uid and gid, so
  the container's processes (seen from the host, in ``/proc/PID/status``) are that uid, and
  its memory limit still ends an over-limit step with ``memory_limit``;
- a launcher that is not root (rootless podman) on this cgroup v1 host: a step with a memory
  limit fails at start with one line naming the reason and the fix.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from argosy.client.client import Client
from argosy.runtime import container
from argosy.runtime.launcher import StepFailed
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.conftest import Workspace
from tests.server_fixture import start_server
from tests.test_container import IMAGE, containers_of
from tests.test_container import podman as podman  # the fixture: the image, CONTAINERS_CONF
from tests.test_task_isolation import TASK_USER
from tests.test_task_isolation import open_home as open_home  # a state folder tasks can enter
from tests.test_task_isolation import task_python as task_python  # a Python the task user runs
from tests.test_task_isolation import task_user as task_user  # argosy-task (created if missing)

BASE = container.DEFAULT_UID_BASE
HUNGRY = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x} > {{outputs.n.path}}"


def _probe(marker: str) -> str:
    """A container command that reports its ids, then waits for the test's gate file (the
    test looks at its process from the host meanwhile)."""
    return (
        f"cat /proc/self/uid_map > {{{{outputs.uid_map.path}}}}; "
        f"cat /proc/self/gid_map > {{{{outputs.gid_map.path}}}}; "
        f"id -u > {{{{outputs.uid.path}}}}; "
        f"until [ -e /argosy/gate ]; do sleep 0.05; done; echo {marker} > /dev/null"
    )


def _host_process(marker: str, deadline: float, alive: Iterator[bool]) -> int:
    """The pid of the container's process running the probe with ``marker`` (its ``sh``)."""
    mine = os.readlink("/proc/self/ns/user")
    while True:
        assert next(alive), "the run ended before its container started"
        assert time.monotonic() < deadline, "the container's process did not appear"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                other_ns = os.readlink(entry / "ns/user") != mine
            except OSError:
                continue
            if marker.encode() in cmdline and b"until" in cmdline and other_ns:
                return int(entry.name)
        time.sleep(0.05)


def _ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of host process ``pid`` as the host sees them."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])


def _open_gates(attempts: Path) -> None:
    for scratch in attempts.glob("*/scratch"):
        (scratch / "gate").touch()


def _map(text: str) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in text.strip().splitlines()]


def test_a_root_launchers_container_gets_unprivileged_ids(
    ws: Workspace, podman: dict[str, str]
) -> None:
    if os.geteuid() != 0:
        pytest.fail("rootful podman needs root: CI runs the tests as root")
    marker = f"probe-{uuid.uuid4().hex}"
    path = ws.write(f'''
        from argosy import container_step, pipeline

        probe = container_step(
            name="probe", image="{IMAGE}", command=["sh", "-c", {_probe(marker)!r}],
            outputs={{"uid_map": str, "gid_map": str, "uid": int}},
        )
        hungry = container_step(
            name="hungry", image="{IMAGE}", memory="24Mi",
            command=["sh", "-c", {HUNGRY!r}], outputs={{"n": str}},
        )

        @pipeline
        def p():
            probe()
            hungry()
    ''')
    proc = ws.spawn("run", str(path), "--output", "json", env=podman)
    try:

        def alive() -> Iterator[bool]:
            while True:
                yield proc.poll() is None

        pid = _host_process(marker, time.monotonic() + 90, alive())
        host_ids = _ids(pid)
        seen_map = Path(f"/proc/{pid}/uid_map").read_text()
        _open_gates(ws.home / "attempts")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert host_ids == (BASE + 65534, BASE + 65534)  # nobody of the namespace, not the host's
    assert _map(seen_map) == [[0, BASE, 65536]]
    run = json.loads(stdout)
    tasks = {t["node_path"]: t for t in run["tasks"]}
    assert tasks["probe"]["state"] == "succeeded", stderr
    hungry = tasks["hungry"]["attempts"][0]
    assert hungry["reason"] == "memory_limit", hungry  # the limit holds in the namespace
    values = {}
    for name in ("uid_map", "gid_map", "uid"):
        out = ws.root / f"{name}.json"
        got = ws.argosy("artifacts", "get", f"{run['id']}/probe/{name}", "--out", str(out))
        assert got.code == 0, got.stderr
        values[name] = json.loads(out.read_text())
    # container root is host id BASE, never 0; the step runs as nobody of the namespace
    assert _map(values["uid_map"]) == [[0, BASE, 65536]]
    assert _map(values["gid_map"]) == [[0, BASE, 65536]]
    assert values["uid"] == 65534
    log = ws.argosy("logs", run["id"], "probe").stdout
    assert f"container mode rootful: user namespace 0:{BASE}:65536" in log
    assert not containers_of(ws, podman)


CONTAINERS = """
from argosy import container_step, pipeline

probe = container_step(
    name="probe", image="BUSYBOX_IMAGE", command=["sh", "-c", PROBE],
    outputs={"uid_map": str, "gid_map": str, "uid": int},
)
hungry = container_step(
    name="hungry", image="BUSYBOX_IMAGE", memory="24Mi",
    command=["sh", "-c", HUNGRY], outputs={"n": str},
)


@pipeline
def userns():
    probe()
    hungry()
"""


def test_a_servers_container_is_the_tenants_task_uid_on_the_host(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path,
    podman: dict[str, str],
) -> None:  # fmt: skip
    marker = f"probe-{uuid.uuid4().hex}"
    folder = tmp_path / "project"
    folder.mkdir()
    source = CONTAINERS.replace("BUSYBOX_IMAGE", IMAGE).replace("PROBE", repr(_probe(marker)))
    source = source.replace("HUNGRY", repr(HUNGRY))
    (folder / "userns_probe.py").write_text(source)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'userns_probe.py'}:userns"))
    env = {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_TASK_USER": TASK_USER,
           "ARGOSY_TASK_UID_BASE": "720000", **podman}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as admin:
            admin.create_tenant("team-u")
        with Client(server.url, tenant="team-u") as c:
            c.push_pipeline(compiled)
            run_id = c.create_run("userns").id

            def alive() -> Iterator[bool]:
                while True:
                    yield c.get_run(run_id).status in ("pending", "running")

            pid = _host_process(marker, time.monotonic() + 120, alive())
            host_ids = _ids(pid)
            seen_map = Path(f"/proc/{pid}/uid_map").read_text()
            _open_gates(open_home / "attempts")
            run = c.wait(run_id, poll=0.2, timeout=180)
            values = {(x.node_path, x.output_name): x.value for x in c.artifacts(run_id)}
            tasks = {t.node_path: t for t in c.tasks(run_id)}
            log = server.log()
    finally:
        server.stop()
    uid, gid = host_ids
    assert 720000 <= uid < 720000 + 65536, host_ids  # the tenant's task uid, on the host
    assert gid == task_user.pw_gid
    # the namespace holds that uid only: "root" in the container is the task uid
    assert _map(seen_map) == [[0, uid, 1]]
    assert _map(values[("probe", "uid_map")]) == [[0, uid, 1]]
    assert _map(values[("probe", "gid_map")]) == [[0, gid, 1]]
    assert values[("probe", "uid")] == 0
    assert tasks["probe"].state == "succeeded", (tasks["probe"].attempts, log[-3000:])
    hungry = tasks["hungry"].attempts[-1]
    assert run.status == "failed"
    assert hungry.reason == "memory_limit", (hungry, log[-3000:])


def test_rootless_on_a_host_without_memory_delegation_refuses_a_memory_limit(
    task_user: pwd.struct_passwd, task_python: str, podman: dict[str, str]
) -> None:
    """A launcher that is not root runs rootless podman (``auto``); this host has cgroup v1,
    so a step that asks for memory fails at start instead of running without its limit."""
    assert not container.memory_delegated(task_user.pw_uid), (
        "this host delegates cgroup v2 memory to the task user: this test expects a host "
        "that does not (cgroup v1, as the CI machines)"
    )
    root = Path(tempfile.mkdtemp(prefix="argosy-rootless-"))
    os.chmod(root, 0o711)
    project = root / "project"
    project.mkdir()
    (project / "hungry.py").write_text(
        textwrap.dedent(f'''
            from argosy import container_step, pipeline

            limited = container_step(
                name="limited", image="{IMAGE}", memory="24Mi",
                command=["sh", "-c", "echo hi > {{{{outputs.n.path}}}}"], outputs={{"n": str}},
            )

            @pipeline
            def p():
                limited()
        ''')
    )
    os.chown(project, task_user.pw_uid, task_user.pw_gid)
    os.chown(project / "hungry.py", task_user.pw_uid, task_user.pw_gid)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src,
           "HOME": str(project), "ARGOSY_HOME": str(project / ".argosy"), **podman}  # fmt: skip
    try:
        res = subprocess.run(
            [task_python, "-m", "argosy.cli.main", "run", "hungry.py:p", "--output", "json"],
            cwd=project, env=env, user=task_user.pw_uid, group=task_user.pw_gid,
            extra_groups=[], capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    assert res.returncode == 1, (res.stdout, res.stderr)
    attempt = json.loads(res.stdout)["tasks"][0]["attempts"][0]
    assert attempt["reason"] == "container_error", attempt
    error = attempt["error"]
    assert "\n" not in error.strip()
    assert error.startswith("rootless containers cannot enforce this step's memory limit (24")
    assert f"does not delegate the cgroup v2 memory controller to uid {task_user.pw_uid}" in error
    assert "enable that delegation, or run the server as root" in error


def test_memory_delegation_is_read_from_cgroup_v2(tmp_path: Path) -> None:
    uid = os.getuid()
    assert not container.memory_delegated(uid, root=tmp_path)  # no cgroup.controllers: v1
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    service = tmp_path / f"user.slice/user-{uid}.slice/user@{uid}.service"
    service.mkdir(parents=True)
    (service / "cgroup.controllers").write_text("cpu pids\n")
    assert not container.memory_delegated(uid, root=tmp_path)  # v2, memory not delegated
    (service / "cgroup.controllers").write_text("cpu memory pids\n")
    assert container.memory_delegated(uid, root=tmp_path)
    assert not container.memory_delegated(uid + 1, root=tmp_path)  # another user's


def test_the_mode_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    root = os.getuid() == 0
    monkeypatch.delenv(container.MODE_ENV, raising=False)
    assert container.container_mode() == ("rootful" if root else "rootless")
    monkeypatch.setenv(container.MODE_ENV, "rootful" if root else "rootless")
    assert container.container_mode() == ("rootful" if root else "rootless")
    monkeypatch.setenv(container.MODE_ENV, "rootless" if root else "rootful")
    with pytest.raises(StepFailed) as refused:
        container.container_mode()
    assert refused.value.reason == "container_error"
    monkeypatch.setenv(container.MODE_ENV, "sideways")
    with pytest.raises(StepFailed, match="not a container mode: use auto, rootful or rootless"):
        container.container_mode()
    monkeypatch.setenv(container.UID_BASE_ENV, "0")  # the host's root: refused
    with pytest.raises(StepFailed, match="not a safe first host id"):
        container.uid_base()
    monkeypatch.setenv(container.UID_BASE_ENV, "2000000000")
    assert container.uid_base() == 2_000_000_000


def test_the_mode_comes_from_the_settings_file_and_no_step_env_changes_it(
    ws: Workspace, podman: dict[str, str], tmp_path: Path
) -> None:
    """``container_mode`` in the ``ARGOSY_CONFIG`` file reaches the launcher (the executor
    passes the setting, not its own environment), and a step's ``env`` naming another mode
    changes nothing: as root, ``rootless`` is refused at start with its one line."""
    if os.geteuid() != 0:
        pytest.fail("the refusal of rootless mode is a root launcher's: CI runs as root")
    config = tmp_path / "argosy-settings.toml"
    config.write_text('container_mode = "rootless"\n')
    path = ws.write(f"""
        from argosy import container_step, pipeline

        echo = container_step(name="echo", image="{IMAGE}", command=["true"],
                              env={{"ARGOSY_CONTAINER_MODE": "rootful"}})

        @pipeline
        def p():
            echo()
    """)
    res = ws.argosy("run", str(path), "--output", "json",
                    env={**podman, "ARGOSY_CONFIG": str(config)})  # fmt: skip
    (task,) = json.loads(res.stdout)["tasks"]
    attempt = task["attempts"][0]
    assert attempt["reason"] == "container_error", attempt
    assert (
        "ARGOSY_CONTAINER_MODE=rootless needs a server that does not run as root"
        in (attempt["error"])
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
