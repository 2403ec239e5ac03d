"""Warm workers on a server (executors/local/warm.py, "sealed parents"): a server's Python tasks
are forked from a parent started as the tenant's own task uid, which holds no token, key or
secret of the server's or of its tasks, never forks another tenant's task, and cannot read
the server's files from the module's top level; ``ARGOSY_WARM_WORKERS=false`` still turns them
off.

Needs root and the ``argosy-task`` user (tests/test_task_isolation.py's fixtures; skipped
otherwise, with the reason).
"""

from __future__ import annotations

import os
import pwd
import stat
import textwrap
import time
import uuid
from pathlib import Path

from argosy.client.client import Client
from argosy.spec.compile import compile_pipeline
from argosy.spec.loader import load_pipeline
from tests.server_fixture import ServerProcess, start_server
from tests.test_task_isolation import (
    TASK_USER,
    _processes_of,
    open_home,
    task_python,
    task_user,
)

__all__ = ["open_home", "task_python", "task_user"]  # fixtures, used by name

# each test's tenants get uids of their own (base + N): with tests in parallel (pytest-xdist),
# no test's "no process of this uid is left" sees another test's tasks
UID_BASE = 750000

MODULE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from argosy import pipeline, step

    HOME = Path(__HOME__)


    def _try(fn):
        try:
            fn()
            return "allowed"
        except Exception as exc:
            return type(exc).__name__


    # the module's top level: in a warm parent, this runs once, in the parent
    AT_IMPORT = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "read_key_file": _try(lambda: open(HOME / "keys" / "kek", "rb").read(1)),
        "list_keys": _try(lambda: os.listdir(HOME / "keys")),
        "read_database": _try(lambda: open(HOME / "argosy.db", "rb").read(1)),
        "list_home": _try(lambda: os.listdir(HOME)),
        "list_warm": _try(lambda: os.listdir(HOME / "warm")),
        "environment": sorted(os.environ),
        "attempt_slot": os.environ.get("ARGOSY_ATTEMPT_ID"),
    }


    def _ids(pid):
        found = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("Uid", "Gid", "Groups"):
                found[name] = [int(v) for v in value.split()]
        return found


    def _invocation():  # what the launcher read on stdin: its task token
        frame = sys._getframe()
        while frame is not None:
            inv = frame.f_locals.get("inv")
            if hasattr(inv, "to_json"):
                return inv.to_json()
            frame = frame.f_back
        raise RuntimeError("no invocation")


    @step(cache=False, secrets=["WARM_SECRET"])
    def probe(n: int) -> dict:
        parent = os.getppid()
        return {
            "n": n,
            "secret": os.environ.get("WARM_SECRET"),
            "pid": os.getpid(),
            "parent": parent,
            "warm": b"argosy.executors.local.warm" in Path(f"/proc/{parent}/cmdline").read_bytes(),
            "at_import": AT_IMPORT,
            "ids": _ids("self"),
            "parent_ids": _ids(parent),
            "umask": os.umask(0o077),
            "token": _invocation()["store"]["options"]["token"],
            "parent_environ": _try(lambda: open(f"/proc/{parent}/environ").read()),
            "parent_memory": _try(lambda: open(f"/proc/{parent}/mem", "rb").read(1)),
            "parent_cwd": _try(lambda: os.readlink(f"/proc/{parent}/cwd")),
            "scratch_is_cwd": os.getcwd() == os.environ["HOME"],
            # the code package: the one the parent imported, not fetched again into scratch
            "fetched_code": (Path.cwd() / ".cache" / "code").exists(),
        }


    @step(cache=False)
    def passed_on(seen: dict) -> int:  # an input read through the task store
        return seen["n"] * 10


    @pipeline
    def warm_probe() -> int:
        first = probe(n=1)
        probe(n=2).after(first)
        return passed_on(probe(n=3).after(first))
    """
)


def _compiled(folder: Path, home: Path, name: str) -> object:
    """The pipeline, in a module of its own name (the test process imports it to compile)."""
    folder.mkdir()
    (folder / f"{name}.py").write_text(MODULE.replace("__HOME__", repr(str(home))))
    return compile_pipeline(load_pipeline(f"{folder / name}.py:warm_probe"))


def _run(server: ServerProcess, tenant: str) -> tuple[list[dict], int]:
    with Client(server.url, tenant=tenant) as client:
        run = client.wait(client.create_run("warm_probe").id, poll=0.2, timeout=120)
        assert run.status == "succeeded", (run.error, server.log()[-3000:])
        values = {a.node_path: a.value for a in client.artifacts(run.id)}
    probes = [v for k, v in values.items() if k.startswith("probe")]
    return sorted(probes, key=lambda p: p["n"]), values["passed_on"]


def _memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """Which of ``needles`` are anywhere in the readable memory of ``pid`` (read as root)."""
    found: set[bytes] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            found.update(n for n in needles if n in data)
    return sorted(found)


def test_tenants_tasks_are_forked_from_parents_of_their_own_uid_that_hold_nothing_of_the_server(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    compiled = _compiled(tmp_path / "project", open_home, "warm_tenant_steps")
    # warm workers: the server's default; every task waits for its parent
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_TASK_UID_BASE": str(UID_BASE),
           "ARGOSY_WARM_WORKERS_WAIT": "60"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as admin:
            admin.create_tenant("team-a")
            admin.create_tenant("team-b")
        secrets = {t: f"secret-of-{t}-{uuid.uuid4().hex}" for t in ("team-a", "team-b")}
        for tenant, value in secrets.items():
            with Client(server.url, tenant=tenant) as client:
                client.set_secret("WARM_SECRET", value)
        seen: dict[str, list[dict]] = {}
        for tenant in ("team-a", "team-b", "team-a"):  # the second team-a run reuses its parent
            with Client(server.url, tenant=tenant) as client:
                client.push_pipeline(compiled)
            probes, passed = _run(server, tenant)
            assert passed == 30  # the task read its input and stored its output as before
            seen.setdefault(tenant, []).extend(probes)
        parents = {p["parent"] for found in seen.values() for p in found}
        tokens = [p["token"].encode() for found in seen.values() for p in found]
        tokens += [value.encode() for value in secrets.values()]
        # looked at from outside (root), while the parents still live
        environs = {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in parents}
        memory = {pid: _memory_holds(pid, tokens) for pid in parents}
        assert _memory_holds(os.getpid(), tokens[:1]) == tokens[:1]  # the scan finds one held
        warm = open_home / "warm"
        folders = [f for f in warm.iterdir() if f.is_dir()]
        modes = {
            "warm": stat.S_IMODE(warm.stat().st_mode),
            "folders": {(stat.S_IMODE(f.stat().st_mode), f.stat().st_uid) for f in folders},
            "code": {(f / "code").stat().st_uid for f in folders},
            "homes": {
                (stat.S_IMODE(h.stat().st_mode), h.stat().st_uid)
                for h in (f / "home" for f in folders)
            },
        }
    finally:
        server.stop()
    uid = {tenant: found[0]["ids"]["Uid"][0] for tenant, found in seen.items()}
    assert uid["team-a"] >= UID_BASE and uid["team-b"] >= UID_BASE
    assert uid["team-a"] != uid["team-b"]
    for tenant, found in seen.items():
        for p in found:
            # forked from a warm parent, which imported the module once (not this process)
            assert p["warm"], p
            assert p["at_import"]["pid"] == p["parent"] != p["pid"]
            # parent and child: the tenant's uid (real, effective, saved, fs), the task
            # user's group, no supplementary groups, umask 077
            for ids in (p["ids"], p["parent_ids"]):
                assert ids["Uid"] == [uid[tenant]] * 4, (tenant, p)
                assert ids["Gid"] == [task_user.pw_gid] * 4, (tenant, p)
                assert ids["Groups"] == [], (tenant, p)
            assert p["umask"] == 0o077
            assert p["scratch_is_cwd"] and not p["fetched_code"]
            assert p["token"]  # it has its task token, which its parent never saw
            assert p["secret"] == secrets[tenant]  # and its secret, likewise
            # the module's top level, run in the parent as the tenant's uid, cannot reach the
            # server's key file, database or state folder
            at_import = p["at_import"]
            for what in ("read_key_file", "list_keys", "read_database", "list_home", "list_warm"):
                assert at_import[what] == "PermissionError", (what, at_import)
            assert at_import["uid"] == uid[tenant]
            # nor given anything of the server's or of a task's: only a slot for the attempt id
            given = [k for k in at_import["environment"] if k.startswith(("ARGOSY_", "AWS_"))]
            assert given == ["ARGOSY_ATTEMPT_ID"], at_import["environment"]
            slot = at_import["attempt_slot"]  # the parent's own marker, no attempt's id
            assert len(slot) == 26 and slot == slot.lower() and int(slot, 16) >= 0, slot
            # another process of the uid (a task of the tenant) cannot look inside the parent
            for what in ("parent_environ", "parent_memory", "parent_cwd"):
                assert p[what] == "PermissionError", (what, p[what])
    # each tenant's tasks: one parent of its own, never the other tenant's
    parents_of = {tenant: {p["parent"] for p in found} for tenant, found in seen.items()}
    assert len(parents_of["team-a"]) == len(parents_of["team-b"]) == 1, parents_of
    assert not parents_of["team-a"] & parents_of["team-b"]
    # no task token or secret in a parent's environment or anywhere in its memory
    for pid in parents:
        assert not [t for t in tokens if t in environs[pid]]
        assert memory[pid] == [], f"parent {pid} holds a task token or secret"
    # the parents' folders: the server's (not listable), code the server's, homes the uid's
    assert modes["warm"] == 0o711
    assert modes["folders"] == {(0o711, 0)}
    assert modes["code"] == {0}
    assert modes["homes"] == {(0o700, uid["team-a"]), (0o700, uid["team-b"])}
    # the parents end with the server
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in parents) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in parents if Path(f"/proc/{pid}").exists()]


def test_the_off_switch_and_a_fresh_task_s_module_read_of_the_key_file_fails_alike(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    compiled = _compiled(tmp_path / "project", open_home, "fresh_tenant_steps")
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_WARM_WORKERS": "false",
           "ARGOSY_TASK_UID_BASE": "760000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as client:
            client.set_secret("WARM_SECRET", "fresh")
            client.push_pipeline(compiled)
        probes, passed = _run(server, "default")
    finally:
        server.stop()
    assert passed == 30
    assert not (open_home / "warm").exists()
    for p in probes:
        assert not p["warm"] and p["at_import"]["pid"] == p["pid"], p  # a fresh interpreter
        assert p["ids"]["Uid"] == [760000] * 4
        for what in ("read_key_file", "list_keys", "read_database", "list_home"):
            assert p["at_import"][what] == "PermissionError", (what, p["at_import"])


STUCK = textwrap.dedent(
    """
    import os, subprocess, time
    from pathlib import Path
    from argosy import pipeline, step

    GATE = Path(__GATE__)


    @step(cache=False)
    def warmup() -> int:
        return 1


    @step(timeout=3, cache=False)
    def stuck(x: int) -> int:
        parent = os.getppid()
        warm = b"argosy.executors.local.warm" in Path(f"/proc/{parent}/cmdline").read_bytes()
        child = subprocess.Popen(["sleep", "299.5"], start_new_session=True)  # escapes its group
        (GATE / "seen").write_text(f"{int(warm)} {child.pid} {parent}")
        time.sleep(300)
        return x


    @pipeline
    def stuck_run():
        stuck(x=warmup())
    """
)


def test_a_forked_task_s_tree_is_killed_at_its_timeout_and_its_parent_lives_on(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    gate = open_home.parent / "gate"
    gate.mkdir(mode=0o777)
    os.chmod(gate, 0o777)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "warm_stuck_steps.py").write_text(STUCK.replace("__GATE__", repr(str(gate))))
    compiled = compile_pipeline(load_pipeline(f"{folder / 'warm_stuck_steps.py'}:stuck_run"))
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_WARM_WORKERS_WAIT": "60",
           "ARGOSY_TASK_UID_BASE": "770000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("stuck_run").id, poll=0.2, timeout=60)
            tasks = {t.node_path: t for t in client.tasks(run.id)}
        warm, grandchild, parent = (int(x) for x in (gate / "seen").read_text().split())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        escaped_alive = Path(f"/proc/{grandchild}").exists()
        parent_alive = Path(f"/proc/{parent}").exists()
    finally:
        server.stop()
    assert run.status == "failed"
    assert (tasks["stuck"].reason or "").startswith("timeout"), tasks["stuck"]
    assert warm == 1  # it was forked from the warm parent
    assert not escaped_alive  # the escaped 'sleep' was killed with the task
    assert parent_alive  # the parent serves the next task
    deadline = time.monotonic() + 10
    while _processes_of(770000) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(770000) == []  # and ends with the server (the default tenant's uid)


CRASH = textwrap.dedent(
    """
    import os, signal, time
    from pathlib import Path
    from argosy import pipeline, step

    if b"argosy.executors.local.warm" in open("/proc/self/cmdline", "rb").read():  # a parent
        import argosy.executors.local.warm as warm

        _fork = warm._fork

        def slow_reply(*args):  # a loaded machine: the child is up well before it is checked
            reply = _fork(*args)
            time.sleep(0.5)
            return reply

        warm._fork = slow_reply


    def _where() -> list:
        parent = os.getppid()
        warm = b"argosy.executors.local.warm" in Path(f"/proc/{parent}/cmdline").read_bytes()
        return [warm, parent]


    @step(cache=False)
    def kill_parent() -> list:
        found = _where()
        if found[0]:
            os.kill(found[1], signal.SIGKILL)  # the tenant's own parent: same uid
            while Path(f"/proc/{found[1]}/cmdline").read_bytes():
                time.sleep(0.01)  # until it is a zombie (or gone)
        return found


    @step(cache=False)
    def after(x: list, n: int) -> list:
        return _where()


    @pipeline
    def crash():
        first = after(kill_parent(), n=1)
        after(first, n=2)
    """
)


def test_a_crashed_parent_loses_no_task_and_is_replaced(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "warm_crash_steps.py").write_text(CRASH)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'warm_crash_steps.py'}:crash"))
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_WARM_WORKERS_WAIT": "60",
           "ARGOSY_TASK_UID_BASE": "780000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("crash").id, poll=0.2, timeout=120)
            assert run.status == "succeeded", (run.error, server.log()[-3000:])
            values = {a.node_path: a.value for a in client.artifacts(run.id)}
    finally:
        server.stop()
    killed = values["kill_parent"]
    # it was forked, and killed its parent — only once the server had checked it (a child
    # runs its task only then, however late the check) — and its result still counts
    assert killed[0], values
    assert not Path(f"/proc/{killed[1]}").exists()
    # the next task starts fresh (or forked from a new parent); the one after is forked
    # from a new parent
    assert values["after-2"][0] and values["after-2"][1] != killed[1], values


FORGED = textwrap.dedent(
    """
    import os
    from argosy import pipeline, step

    if b"argosy.executors.local.warm" in open("/proc/self/cmdline", "rb").read():  # a parent
        import argosy.executors.local.warm as warm

        SERVER = os.getppid()

        def forged(*_args):  # name the server as the task's process
            return {"pid": SERVER}

        warm._fork = forged


    @step(cache=False, timeout=5)
    def victim() -> int:
        return 1


    @pipeline
    def forge():
        victim()
    """
)


def test_a_parent_that_names_another_process_as_its_child_is_refused(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    # a parent runs tenant code: a pid it made up would be sampled, and killed at a timeout or
    # cancel, by the server (root); the server checks it is the parent's own new child
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "warm_forged_steps.py").write_text(FORGED)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'warm_forged_steps.py'}:forge"))
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_WARM_WORKERS_WAIT": "60",
           "ARGOSY_TASK_UID_BASE": "790000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("forge").id, poll=0.2, timeout=60)
            (task,) = client.tasks(run.id)
        alive = server.alive()
    finally:
        server.stop()
    assert run.status == "failed"
    why = " ".join(a.error or "" for a in task.attempts) + (task.reason or "")
    assert "the warm parent's reply was refused" in why, task
    assert f"{server.process.pid} is not its child" in why, task
    assert alive


STRAY = textwrap.dedent(
    """
    import os, subprocess
    from argosy import pipeline, step

    if b"argosy.executors.local.warm" in open("/proc/self/cmdline", "rb").read():  # a parent
        # a process the module starts at import belongs to no task
        subprocess.Popen(["sleep", "296.5"], start_new_session=True)


    @step(cache=False)
    def plain() -> int:
        return 1


    @pipeline
    def stray():
        plain()
    """
)


def _sleepers() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == b"sleep\x00296.5\x00":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_what_a_module_starts_in_a_parent_ends_with_the_parent(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "warm_stray_steps.py").write_text(STRAY)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'warm_stray_steps.py'}:stray"))
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_WARM_WORKERS_WAIT": "60",
           "ARGOSY_WARM_WORKERS_IDLE": "1", "ARGOSY_TASK_UID_BASE": "800000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            first = client.wait(client.create_run("stray").id, poll=0.2, timeout=60)
            strays = _sleepers()
            time.sleep(3.5)  # the parent idles out; the next task start ends what it left
            second = client.wait(client.create_run("stray").id, poll=0.2, timeout=60)
            after_idle = _sleepers()
    finally:
        server.stop()
    assert first.status == second.status == "succeeded"
    assert len(strays) == 1, strays  # started by the first parent
    assert strays[0] not in after_idle  # ended with it
    assert len(after_idle) == 1  # the second parent's
    deadline = time.monotonic() + 10
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers() == []  # and that one with the server


def test_what_a_killed_server_s_parents_left_is_ended_by_the_next_server(
    task_user: pwd.struct_passwd, task_python: str, open_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "warm_stray_steps_2.py").write_text(STRAY)
    compiled = compile_pipeline(load_pipeline(f"{folder / 'warm_stray_steps_2.py'}:stray"))
    env = {"ARGOSY_TASK_USER": TASK_USER, "ARGOSY_WARM_WORKERS_WAIT": "60",
           "ARGOSY_TASK_UID_BASE": "810000"}  # fmt: skip
    server = start_server(open_home, env, python=task_python)
    try:
        with Client(server.url) as client:
            client.push_pipeline(compiled)
            run = client.wait(client.create_run("stray").id, poll=0.2, timeout=60)
    finally:
        server.kill()  # SIGKILL: its parents see their socket close and exit; nothing else
    assert run.status == "succeeded"
    time.sleep(1.5)
    left = _sleepers()
    assert len(left) == 1, left
    again = start_server(open_home, env, python=task_python)
    try:
        deadline = time.monotonic() + 10
        while _sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)
        still = _sleepers()
    finally:
        again.stop()
    assert still == []
