"""A Python step in a container image (``@step(image="repo@sha256:...")``), end to end with
podman + runc: the image is built here, offline, from the machine's own Debian Python (its
``python3.11`` binary, the shared libraries it and its extension modules load, and its
standard library, imported with ``podman import``) and named by digest. The step runs there
with the Argosy runtime mounted (nothing of Argosy is in the image), confined as a container
step, between two steps on the host; an image without ``python3`` fails the task naming it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import Workspace, outputs, tasks_by_node
from tests.test_container import IMAGE as BUSYBOX
from tests.test_container import containers_of
from tests.test_container import podman as podman  # the fixture: CONTAINERS_CONF, busybox image

PATH = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin"}
PYTHON = "/usr/bin/python3.11"
STDLIB = Path("/usr/lib/python3.11")
LEFT_OUT = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "dist-packages",
            "__pycache__", "pydoc_data"}  # fmt: skip
SECRET = "image-step-secret-7d41"


def _libraries(binaries: list[str]) -> set[str]:
    """The shared libraries ``binaries`` load, and those a slim Python image has (libc6,
    libgcc-s1, libstdc++6: compiled wheels such as pydantic-core's expect them)."""
    listed = subprocess.run(["dpkg", "-L", "libc6", "libgcc-s1", "libstdc++6"],
                            capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    found = {p for p in listed if ".so" in p and os.path.isfile(p) and "/gconv/" not in p}
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                found.add(parts[2])
            elif parts and parts[0].startswith("/"):
                found.add(parts[0])
    return found


def build_python_image(
    folder: Path, env: dict[str, str], name: str, python: str = PYTHON, stdlib: Path = STDLIB
) -> str:
    """``name@sha256:...``: an image holding ``python`` (at the same path, ``/usr/bin/python3``
    pointing at it), its standard library and the libraries they load, and nothing else."""
    root = folder / "rootfs"
    for sub in ("usr/bin", "usr/lib", "usr/lib64", "tmp", "etc", "proc", "sys", "dev", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for link in ("lib", "lib64", "bin"):  # merged /usr, as Debian has it
        os.symlink(f"usr/{link}", root / link)
    shutil.copytree(stdlib, root / str(stdlib).lstrip("/"), symlinks=True,
                    ignore=lambda _d, names: [n for n in names if n in LEFT_OUT])  # fmt: skip
    binary = root / python.lstrip("/")
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(python, binary)
    if python != "/usr/bin/python3":
        os.symlink(python, root / "usr/bin/python3")
    for lib in _libraries([python, *glob.glob(f"{stdlib}/lib-dynload/*.so")]):
        dest = root / lib.lstrip("/")  # /lib and /lib64 lead into /usr, as on the host
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    with tarfile.open(folder / "rootfs.tar", "w") as tar:
        tar.add(root, arcname=".")
    run = {**PATH, **env}
    subprocess.run(["podman", "import", "-q", str(folder / "rootfs.tar"), f"{name}:1"],
                   check=True, capture_output=True, env=run)  # fmt: skip
    digest = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Digest}}", f"{name}:1"],
        check=True, capture_output=True, text=True, env=run,
    ).stdout.strip()  # fmt: skip
    assert digest.startswith("sha256:"), digest
    return f"{name}@{digest}"


@pytest.fixture(scope="module")
def python_image(podman: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    if not (os.path.isfile(PYTHON) and (STDLIB / "lib-dynload").is_dir()):
        pytest.skip(f"no Debian Python at {PYTHON} to build a Python image from (no public "
                    "registry is reachable for a base image)")  # fmt: skip
    return build_python_image(
        tmp_path_factory.mktemp("python-image"), podman, "localhost/argosy-test-python"
    )


PIPELINE = """
from pathlib import Path

from argosy import pipeline, step


@step
def make(n: int) -> dict:
    return {{"n": n}}


@step(image="{image}", secrets=["API_TOKEN"], memory="512Mi")
def inside(data: dict) -> dict:
    import os
    import platform
    import socket
    import sys

    import numpy as np  # not in the image: the runtime's site-packages fill it in

    try:
        Path("/usr/argosy-probe").write_text("x")
        root_writable = True
    except OSError:
        root_writable = False
    secrets = os.environ.get("ARGOSY_SECRETS_DIR")
    return {{
        "n": data["n"] * 2, "python": sys.executable, "version": platform.python_version(),
        "uid": os.getuid(), "root_writable": root_writable,
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "secret": Path(secrets, "API_TOKEN").read_text() if secrets else None,
        "secret_in_env": "API_TOKEN" in os.environ, "sum": int(np.arange(5).sum()),
        "argosy": __import__("argosy").__file__, "cwd": os.getcwd(),
    }}


@step
def after(result: dict) -> dict:
    return {{**result, "after": result["n"] + 1}}


@pipeline
def boxed(n: int = 3) -> dict:
    return after(inside(make(n)))
"""


@pytest.mark.parametrize("workers", ["warm", "fresh"], indirect=True)
def test_a_python_step_runs_in_its_image(
    ws: Workspace, podman: dict[str, str], python_image: str, workers: str
) -> None:
    path = ws.write(PIPELINE.format(image=python_image), "boxed")
    env = {**podman, "API_TOKEN": SECRET}
    res = ws.argosy("run", f"{path}:boxed", "--output", "json", env=env, timeout=300)
    assert res.code == 0, res.stderr + res.stdout
    doc = res.json()
    assert doc["status"] == "succeeded", json.dumps(doc)[:2000]
    (value,) = outputs(doc).values()
    debian = subprocess.run([PYTHON, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert (value["n"], value["after"], value["sum"]) == (6, 7, 10)
    assert value["python"] == "/usr/bin/python3" and value["version"] == debian  # the image's
    assert value["argosy"] == "/opt/argosy/lib/argosy/__init__.py"  # mounted, not installed
    assert value["uid"] == (65534 if os.getuid() == 0 else os.getuid())  # not root
    assert value["root_writable"] is False and value["interfaces"] == ["lo"]  # no network
    assert value["secret"] == SECRET and value["secret_in_env"] is False  # a file, not a variable
    assert value["cwd"] == "/argosy/work"
    # the result flows back to a host step; nothing is left behind
    assert [t["state"] for t in doc["tasks"]] == ["succeeded"] * 3
    assert not containers_of(ws, podman)
    again = ws.argosy("run", f"{path}:boxed", "--output", "json", env=env, timeout=300)
    assert {t["node_path"]: t["state"] for t in again.json()["tasks"]}["inside"] == "cached"


def test_an_image_without_python_fails_the_task_naming_it(
    ws: Workspace, podman: dict[str, str]
) -> None:
    path = ws.write(f'''
        from argosy import pipeline, step

        @step(image="{BUSYBOX}")
        def nowhere(n: int) -> int:
            return n

        @pipeline
        def lost(n: int = 1) -> int:
            return nowhere(n)
    ''', "lost")  # fmt: skip
    res = ws.argosy("run", f"{path}:lost", "--output", "json", env=podman, timeout=300)
    assert res.code == 1, res.stderr
    task = tasks_by_node(res.json())["nowhere"]
    assert task["state"] == "failed" and task["reason"].startswith("container_error: "), task
    assert f"image {BUSYBOX} has no python3 on its PATH" in task["reason"]
    assert not containers_of(ws, podman)


def test_image_and_packages_do_not_mix(ws: Workspace) -> None:
    path = ws.write('''
        from argosy import pipeline, step

        @step(image="repo@sha256:" + "0" * 64, packages=["six"])
        def both() -> int:
            return 1

        @pipeline
        def mixed() -> int:
            return both()
    ''', "mixed")  # fmt: skip
    res = ws.argosy("run", f"{path}:mixed")
    assert res.code == 2 and "takes its packages from the image" in res.stderr


def test_cancel_timeout_and_memory_limit_leave_no_container(
    ws: Workspace, podman: dict[str, str], python_image: str
) -> None:
    path = ws.write(f'''
        from argosy import pipeline, step

        @step(image="{python_image}")
        def forever(n: int) -> int:
            import time

            time.sleep(600)
            return n

        @step(image="{python_image}", timeout=4)
        def slow(n: int) -> int:
            import time

            time.sleep(120)
            return n

        @step(image="{python_image}", memory="200Mi")
        def hungry(n: int) -> int:
            block = bytearray(600 * 2**20)  # written, so resident
            return n + len(block)

        @pipeline
        def cancelled(n: int = 1) -> int:
            return forever(n)

        @pipeline
        def stuck(n: int = 1) -> int:
            return slow(n)

        @pipeline
        def greedy(n: int = 1) -> int:
            return hungry(n)
    ''', "stuck")  # fmt: skip
    proc = ws.spawn("run", f"{path}:cancelled", "--output", "json", env=podman)
    deadline = time.monotonic() + 60
    while not containers_of(ws, podman):  # the container is up
        assert time.monotonic() < deadline and proc.poll() is None, "no container started"
        time.sleep(0.1)
    run_id = ws.argosy("runs", "list", "--output", "json").json()["runs"][0]["id"]
    assert ws.argosy("runs", "cancel", run_id, env=podman).code == 0
    proc.communicate(timeout=120)
    assert ws.argosy("runs", "show", run_id, "--output", "json").json()["status"] == "cancelled"
    assert not containers_of(ws, podman)

    res = ws.argosy("run", f"{path}:stuck", "--output", "json", env=podman, timeout=300)
    assert res.code == 1, res.stderr
    task = tasks_by_node(res.json())["slow"]
    assert task["state"] == "failed" and task["reason"].startswith("timeout"), task
    assert not containers_of(ws, podman)

    res = ws.argosy("run", f"{path}:greedy", "--output", "json", env=podman, timeout=300)
    assert res.code == 1, res.stderr
    task = tasks_by_node(res.json())["hungry"]
    assert task["reason"].startswith("memory_limit: the container used more than its memory"), task
    assert not containers_of(ws, podman)


def _another_python() -> tuple[str, Path] | None:
    """A Python of another minor version on this machine (a pyenv build), and its stdlib."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    for prefix in sorted(glob.glob("/root/.pyenv/versions/3.*")):
        version = ".".join(Path(prefix).name.split(".")[:2])
        binary, stdlib = f"{prefix}/bin/python{version}", Path(prefix, "lib", f"python{version}")
        if version != mine and os.path.isfile(binary) and (stdlib / "lib-dynload").is_dir():
            return binary, stdlib
    return None


def test_an_image_with_another_python_fails_the_task_naming_both_versions(
    ws: Workspace, podman: dict[str, str], tmp_path: Path
) -> None:
    found = _another_python()
    if found is None:
        pytest.skip("no Python of another minor version on this machine to build an image from")
    binary, stdlib = found
    image = build_python_image(tmp_path, podman, "localhost/argosy-test-other-python",
                               binary, stdlib)  # fmt: skip
    path = ws.write(f'''
        from argosy import pipeline, step

        @step(image="{image}")
        def elsewhere(n: int) -> int:
            return n

        @pipeline
        def other(n: int = 1) -> int:
            return elsewhere(n)
    ''', "other")  # fmt: skip
    res = ws.argosy("run", f"{path}:other", "--output", "json", env=podman, timeout=300)
    assert res.code == 1, res.stderr
    reason = tasks_by_node(res.json())["elsewhere"]["reason"]
    theirs = subprocess.run([binary, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert reason.startswith(f"container_error: image {image} has Python {theirs}, but this "
                             f"Argosy runs Python steps with Python {mine}"), reason  # fmt: skip
    assert not containers_of(ws, podman)
