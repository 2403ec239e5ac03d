"""Task processes run as an unprivileged OS user (``ARGOSY_TASK_USER``): from inside a running
step, the server's state folder, database file, key file and other attempts are out of reach.

Needs root (the server switches users) and the ``argosy-task`` user (created here if missing,
as ``scripts/install-test-deps.sh`` does); skipped otherwise, with the reason.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from argosy.client.client import Client
from argosy.server.environments import see_server_packages
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import start_server
from tests.test_container import IMAGE as BUSYBOX
from tests.test_container import podman as podman  # the fixture: CONTAINERS_CONF, busybox image
from tests.test_image_steps import python_image as python_image  # the fixture: Debian Python

TASK_USER = "argosy-task"


def _task_user() -> pwd.struct_passwd:
    """The task user (created if missing), or a skip saying why it cannot be used here."""
    if os.geteuid() != 0:
        pytest.skip("running tasks as another OS user needs root (CI runs the tests as root)")
    try:
        return pwd.getpwnam(TASK_USER)
    except KeyError:
        pass
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TASK_USER],
        capture_output=True,
        check=False,
    )
    try:
        return pwd.getpwnam(TASK_USER)
    except KeyError:
        pytest.skip(f"cannot create the user {TASK_USER}: {made.stderr.decode().strip()}")


def _reaches(python: str, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can run ``python`` and import Argosy's launcher with it."""
    src = str(Path(__file__).resolve().parent.parent / "src")
    try:
        probe = subprocess.run(
            [python, "-c", "import argosy.runtime.launcher"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src},
            cwd="/", user=user.pw_uid, group=user.pw_gid, extra_groups=[],
            capture_output=True, check=False,
        )  # fmt: skip
    except PermissionError:  # the interpreter itself is out of its reach
        return False
    return probe.returncode == 0


def _reachable_venv(user: pwd.struct_passwd) -> str | None:
    """A throw-away virtualenv on the system's Python of the same version, seeing this venv's
    packages — for when this interpreter lives where the task user cannot go (pyenv under
    /root, mode 0700). None if there is no such Python."""
    system = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin"
    )
    if system is None or Path(system).resolve() == Path(sys.executable).resolve():
        return None
    folder = Path(tempfile.mkdtemp(prefix="argosy-task-python-"))
    os.chmod(folder, 0o755)
    subprocess.run([system, "-m", "venv", "--without-pip", str(folder)], check=True)
    see_server_packages(folder / "bin" / "python")
    python = str(folder / "bin" / "python")
    return python if _reaches(python, user) else None


@pytest.fixture(scope="session")
def task_python() -> str:
    """A Python the task user can run (this one, or a throw-away venv), or a skip."""
    user = _task_user()
    if _reaches(sys.executable, user):
        return sys.executable
    python = _reachable_venv(user)
    if python is None:
        pytest.skip(
            f"{TASK_USER} cannot run this Python ({sys.executable}) with Argosy, e.g. because "
            "it is installed under /root (mode 0700), and no system Python of the same version "
            "was found: install Python and the venv elsewhere"
        )
    return python


@pytest.fixture
def task_user(task_python: str) -> pwd.struct_passwd:
    return _task_user()


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A state folder whose parents the task user may enter (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="argosy-isolation-"))
    os.chmod(root, 0o711)
    try:
        yield root / "server"
    finally:
        shutil.rmtree(root, ignore_errors=True)


PROBE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import httpx
    from argosy import pipeline, step

    def attempt(fn):
        try:
            fn()
            return "allowed"
        except Exception as exc:
            return type(exc).__name__

    def launcher_invocation():  # a malicious step can always find its own token
        frame = sys._getframe()
        while frame is not None:
            inv = frame.f_locals.get("inv")
            if hasattr(inv, "to_json"):  # the launcher's typed Invocation
                inv = inv.to_json()
            if isinstance(inv, dict) and "store" in inv:
                return inv
            frame = frame.f_back
        raise RuntimeError("no invocation")

    def other_tasks():  # processes of the task user other than this one
        me, found = os.getpid(), []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid = next(l.split()[1] for l in status.splitlines() if l.startswith("Uid:"))
            if int(uid) == os.getuid():
                found.append(int(entry.name))
        return found

    @step
    def make() -> str:
        return "payload"

    @step
    def holder() -> str:
        Path("held.txt").write_text("another attempt's data")
        time.sleep(8)
        return "held"

    @step
    def probe(value: str) -> dict:
        scratch = Path(os.environ["HOME"])
        home = scratch.parents[2]
        deadline = time.monotonic() + 6
        others = other_tasks()
        while not others and time.monotonic() < deadline:
            time.sleep(0.2)
            others = other_tasks()
        other = others[0] if others else None
        inv = launcher_invocation()

        def replace_log():
            (scratch / "fake.jsonl").write_text("forged")
            os.replace(scratch / "fake.jsonl", scratch.parent / "log.jsonl")

        base = inv["store"]["url"].removeprefix("argosy-task+") + "/api/v1/task-store/"
        auth = {"Authorization": "Bearer " + inv["store"]["options"]["token"]}
        foreign = f"tenants/{inv['tenant']}/blobs/sha256/00/" + "0" * 64
        return {
            "value": value,
            "uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
            "home": str(home), "scratch": str(scratch), "cwd": os.getcwd(),
            "attempt": os.environ["ARGOSY_ATTEMPT_ID"],
            "env_home": os.environ["HOME"], "user": os.environ.get("USER"),
            "read_database": attempt(lambda: open(home / "argosy.db", "rb").read(1)),
            "read_key_file": attempt(lambda: open(home / "keys" / "kek", "rb").read(1)),
            "list_keys": attempt(lambda: os.listdir(home / "keys")),
            "list_home": attempt(lambda: os.listdir(home)),
            "write_home": attempt(lambda: open(home / "planted", "w").write("x")),
            "list_attempts": attempt(lambda: os.listdir(home / "attempts")),
            "write_attempts": attempt(lambda: (home / "attempts" / "planted").mkdir()),
            "read_own_invocation": attempt(lambda: open("../invocation.json").read(1)),
            "replace_own_log": attempt(replace_log),
            "write_own_stdout": attempt(lambda: open("../stdout", "a").write("x")),
            "read_cache": attempt(lambda: os.listdir(home / "cache")),
            "other_task": other is not None,
            "other_cwd": attempt(lambda: os.readlink(f"/proc/{other}/cwd")),
            "other_folder": attempt(lambda: os.listdir(f"/proc/{other}/cwd")),
            "other_environ": attempt(lambda: open(f"/proc/{other}/environ").read()),
            "other_cmdline": open(f"/proc/{other}/cmdline").read() if other else "",
            "write_scratch": attempt(lambda: (scratch / "mine.txt").write_text("ok")),
            "task_store_foreign_blob": httpx.get(base + foreign, headers=auth).status_code,
        }

    @pipeline
    def isolated():
        holder()
        probe(make())
    """
)


def test_a_task_cannot_reach_the_servers_files_or_other_attempts(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "isolation_probe.py").write_text(PROBE)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'isolation_probe.py'}:isolated"))
    server = start_server(
        open_home, {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_TASK_USER": TASK_USER},
        python=task_python,
    )  # fmt: skip
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("isolated").id, poll=0.2, timeout=120)
            assert run.status == "succeeded", (run.error, server.log()[-3000:])
            values = {a.node_path: a.value for a in client.artifacts(run.id)}
        seen = values["probe"]
        audit = httpx.get(
            f"{server.url}/api/v1/audit",
            params={"actor": f"task:{seen['attempt']}", "outcome": "denied"},
            timeout=30,
        )
        assert audit.status_code == 200, audit.text
        denials = audit.json()["items"]
    finally:
        server.stop()
    # the server's state is private (checked from outside)
    assert stat.S_IMODE(open_home.stat().st_mode) == 0o711  # enterable, never listable
    assert stat.S_IMODE((open_home / "argosy.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((open_home / "keys").stat().st_mode) == 0o700
    assert (open_home / "keys" / "kek").is_file()
    assert not (open_home / "planted").exists()
    # the task ran as the task user, in its own scratch, with its inputs and outputs working
    assert values["holder"] == "held"
    assert seen["value"] == "payload"
    assert seen["uid"] == seen["euid"] == task_user.pw_uid != 0
    assert set(seen["groups"]) <= {task_user.pw_gid}
    assert seen["home"] == str(open_home)
    assert seen["env_home"] == seen["scratch"] == seen["cwd"] and seen["user"] == TASK_USER
    assert seen["write_scratch"] == "allowed"
    # and nothing of the server's is within its reach
    for what in (
        "read_database", "read_key_file", "list_keys", "list_home", "write_home",
        "list_attempts", "write_attempts", "read_own_invocation", "replace_own_log",
        "write_own_stdout", "read_cache",
    ):  # fmt: skip
        assert seen[what] == "PermissionError", (what, seen[what])
    # another attempt (same OS user) running at the same time cannot be looked into
    assert seen["other_task"], "the holder step was not running while the probe looked"
    for what in ("other_cwd", "other_folder", "other_environ"):
        assert seen[what] == "PermissionError", (what, seen[what])
    assert "attempts/" not in seen["other_cmdline"]  # its invocation's path is not shown
    # a task-store request outside its grant is refused and audited with the task as actor
    assert seen["task_store_foreign_blob"] == 403
    assert denials, "the task store's denial is not in the audit log"
    assert all(d["actor"] == f"task:{seen['attempt']}" for d in denials)
    assert any("blobs/sha256/00/" + "0" * 64 in (d["resource"] or "") for d in denials)


def test_the_server_refuses_a_task_user_it_cannot_use(open_home: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the check runs as root (CI runs the tests as root)")
    own = pwd.getpwuid(os.geteuid()).pw_name
    with pytest.raises(RuntimeError, match="ARGOSY_TASK_USER must be an unprivileged user"):
        start_server(open_home / "own", {"ARGOSY_TASK_USER": own})
    with pytest.raises(RuntimeError, match="ARGOSY_TASK_USER names 'no-such-argosy-user'"):
        start_server(open_home / "missing", {"ARGOSY_TASK_USER": "no-such-argosy-user"})


STUCK = textwrap.dedent(
    """
    import subprocess, time
    from argosy import pipeline, step

    @step(timeout=2)
    def stuck() -> int:
        subprocess.Popen(["sleep", "300"], start_new_session=True)  # escapes its group
        time.sleep(300)
        return 0

    @pipeline
    def stuck_run():
        stuck()
    """
)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


def test_a_task_users_process_tree_is_still_killed_at_its_timeout(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "stuck_steps.py").write_text(STUCK)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'stuck_steps.py'}:stuck_run"))
    server = start_server(
        open_home, {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_TASK_USER": TASK_USER},
        python=task_python,
    )  # fmt: skip
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("stuck_run").id, poll=0.2, timeout=60)
            tasks = client.tasks(run.id)
    finally:
        server.stop()
    assert run.status == "failed"
    assert [(t.reason or "").split(":")[0] for t in tasks] == ["timeout"], tasks
    deadline = time.monotonic() + 5
    while _processes_of(task_user.pw_uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(task_user.pw_uid) == []  # the escaped 'sleep' included


TENANTS = textwrap.dedent(
    """
    import os, subprocess, time
    from pathlib import Path
    from argosy import pipeline, step

    @step
    def hold(seconds: float) -> int:
        # a process the step starts itself: after exec it is dumpable again, so only a
        # different uid keeps another tenant's task out of its environment
        child = subprocess.Popen(["sleep", "41.75"], env={"SECRET_OF_A": "a-secret-value"})
        time.sleep(seconds)
        child.kill()
        return os.getuid()

    @step
    def pry() -> dict:
        seen = {"uid": os.getuid(), "found": 0, "environ": [], "cwd": []}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd != b"sleep\\x0041.75\\x00":
                continue
            seen["found"] += 1
            for what in ("environ", "cwd"):
                try:
                    data = (proc / what).read_bytes() if what == "environ" else os.listdir(proc / what)
                    seen[what].append("a-secret-value" in str(data) and "READ" or "read-no-secret")
                except PermissionError:
                    seen[what].append("PermissionError")
        return seen

    @pipeline
    def holding(seconds: float = 8.0):
        hold(seconds)

    @pipeline
    def prying():
        pry()
    """
)


def test_tasks_of_different_tenants_run_as_different_uids_and_cannot_look_into_each_other(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "tenant_probe.py").write_text(TENANTS)
    holding = compile_pipeline(load_pipeline(f"{folder / 'tenant_probe.py'}:holding"))
    prying = compile_pipeline(load_pipeline(f"{folder / 'tenant_probe.py'}:prying"))
    env = {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_TASK_USER": TASK_USER,
           "ARGOSY_TASK_UID_BASE": "700000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as admin:
            admin.create_tenant("team-a")
            admin.create_tenant("team-b")
        with Client(server.url, tenant="team-a") as a, Client(server.url, tenant="team-b") as b:
            a.push_pipeline(holding)
            b.push_pipeline(prying)
            held = a.create_run("holding")
            deadline = time.monotonic() + 60
            while not any(t.attempts for t in a.tasks(held.id)) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.5)  # the holder's child is up
            pried = b.wait(b.create_run("prying").id, poll=0.2, timeout=60)
            assert pried.status == "succeeded", (pried.error, server.log()[-2000:])
            seen = {x.node_path: x.value for x in b.artifacts(pried.id)}["pry"]
            done = a.wait(held.id, poll=0.2, timeout=60)
            assert done.status == "succeeded", done.error
            uid_a = {x.node_path: x.value for x in a.artifacts(held.id)}["hold"]
    finally:
        server.stop()
    assert uid_a >= 700000 and seen["uid"] >= 700000 and uid_a != seen["uid"]
    assert seen["found"] == 1, seen  # it saw team-a's process in /proc ...
    assert seen["environ"] == ["PermissionError"]  # ... but not its secrets
    assert seen["cwd"] == ["PermissionError"]


CONTAINERS = """
import os

from argosy import container_step, pipeline, step

if not os.path.isdir("/argosy"):  # imported outside a container: say by which process
    with open("MARKER_FILE", "a") as marker:
        marker.write(f"{os.getpid()} {os.getuid()}\\n")

whoami = container_step(
    name="whoami", image="BUSYBOX_IMAGE",
    command=["sh", "-c", "id -u > {{outputs.uid.path}}; id -g > {{outputs.gid.path}}; "
             "cat /proc/self/uid_map > {{outputs.uid_map.path}}; "
             "cat /proc/self/gid_map > {{outputs.gid_map.path}}; "
             "cat /run/secrets/HOOK_TOKEN > {{outputs.secret.path}}; "
             "ls -A /argosy | tr '\\\\n' ' ' > {{outputs.seen.path}}"],
    outputs={"uid": int, "gid": int, "uid_map": str, "gid_map": str, "secret": str, "seen": str},
    secrets=["HOOK_TOKEN"],
    env={"ARGOSY_CONTAINER_USER": "0:0"},  # a step naming another user changes nothing
)


@step(image="PYTHON_IMAGE")
def in_image(n: int) -> list:
    import json, os
    store = json.loads(open("/argosy/invocation.json").read())["store"]
    mapped = open("/proc/self/uid_map").read().split()
    return [os.getuid(), os.getgid(), sorted(os.listdir("/argosy")), n, store, mapped]


@pipeline
def who():
    whoami()
    in_image(n=5)
"""


def test_a_servers_containers_run_as_the_tenants_task_uid(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path,
    podman: dict[str, str], python_image: str,
) -> None:  # fmt: skip
    """Rootful podman in a user namespace that holds only the tenant's task uid and gid
    (``--uidmap 0:UID:1``): a container step and a Python step in an image of a tenant run
    as that tenant's task uid on the host (not root, not nobody, not the server) — inside,
    the namespace's uid 0 without capabilities; they see only their scratch folder (the
    launcher, as the server, reads and writes the artifacts through the task store with the
    attempt's token)."""
    folder = tmp_path / "project"
    folder.mkdir()
    marker = tmp_path / "imported-by"
    source = CONTAINERS.replace("BUSYBOX_IMAGE", BUSYBOX).replace("PYTHON_IMAGE", python_image)
    source = source.replace("MARKER_FILE", str(marker))
    (folder / "container_users.py").write_text(source)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'container_users.py'}:who"))
    env = {"ARGOSY_INSECURE_DEV": "true", "ARGOSY_TASK_USER": TASK_USER,
           "ARGOSY_TASK_UID_BASE": "720000", "ARGOSY_WARM_WORKERS_WAIT": "30", **podman}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as admin:
            admin.create_tenant("team-c")
        with Client(server.url, tenant="team-c") as c:
            c.set_secret("HOOK_TOKEN", "container-secret-42")
            c.push_pipeline(compiled)
            run = c.wait(c.create_run("who").id, poll=0.2, timeout=180)
            assert run.status == "succeeded", (run.error, server.log()[-3000:])
            values = {(x.node_path, x.output_name): x.value for x in c.artifacts(run.id)}
            attempts = {t.node_path: t.attempts[-1].id for t in c.tasks(run.id)}
    finally:
        server.stop()
    # each launcher stored its outputs through the task store, with its own attempt's token
    requests = [
        json.loads(line) for line in server.log().splitlines() if '"event": "request"' in line
    ]
    for node, attempt in attempts.items():
        mine = [r for r in requests if r["principal"] == f"task:{attempt}"]
        paths = [r["path"] for r in mine]
        assert paths and all(p.startswith("/api/v1/task-store") for p in paths), (node, paths)
        assert any(r["method"] in ("PUT", "POST") and r["status"] < 300 for r in mine), node
    # the step's module ran on the host only here, to compile it: never in a server process
    # (a warm parent would run the tenant's code as the server's user)
    assert marker.read_text().split() == [str(os.getpid()), str(os.getuid())]
    assert (values[("whoami", "uid")], values[("whoami", "gid")]) == (0, 0)  # the namespace's
    uid_map, gid_map = values[("whoami", "uid_map")].split(), values[("whoami", "gid_map")].split()
    uid, gid = int(uid_map[1]), int(gid_map[1])  # ... whose only id is the host's task uid
    assert uid_map == ["0", str(uid), "1"] and gid_map == ["0", str(gid), "1"]
    assert 720000 <= uid < 720000 + 65536 and gid == task_user.pw_gid  # the tenant's task uid
    assert values[("whoami", "secret")] == "container-secret-42"  # a file it can read
    # its scratch folder only (.cache: its inputs, decrypted by the launcher)
    assert set(values[("whoami", "seen")].split()) <= {".cache", "inputs", "outputs", "tmp"}
    in_image = values[("in_image", "output")]
    assert in_image[:2] == [0, 0] and in_image[5] == uid_map and in_image[3] == 5
    assert {"invocation.json", "work", "cache"} <= set(in_image[2])  # the staged folder
    assert in_image[4] == {"url": "/argosy/store", "options": {}}  # no task token in there
