"""Pinned component images: ``argosy images build --push`` builds the images of argosy.toml in
parallel and pushes them to a real registry (Debian's docker-registry, on loopback);
``argosy images lock`` resolves their digests through the registry's HTTP API; ``argosy
pipelines push`` pins container steps with them and refuses an image without a digest;
re-pushing the same version is a no-op and a conflicting one is refused."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import Workspace

PATH = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_registry(root: Path, extra: str = "", ready: int = 200) -> Iterator[str]:
    """A docker-registry (distribution 2.8) on 127.0.0.1 with its data in ``root``, ``extra``
    YAML appended to its configuration (e.g. ``auth:``); its host:port once ``/v2/`` answers
    ``ready`` (401 with auth). Its log is ``root/registry.log``."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: run 'make test' (install-test-deps.sh)")
    port = _free_port()
    config = root / "registry.yml"
    config.write_text(
        textwrap.dedent(f"""
        version: 0.1
        log: {{level: info}}
        storage:
          filesystem: {{rootdirectory: {root / "registry-data"}}}
          delete: {{enabled: true}}
        http: {{addr: "127.0.0.1:{port}"}}
    """)
        + textwrap.dedent(extra)
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=out)
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"http://{host}/v2/", timeout=2).status_code == ready:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield host
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A docker-registry (distribution 2.8) on 127.0.0.1: its host:port."""
    with running_registry(tmp_path) as host:
        yield host


def _image(folder: Path, marker: str) -> None:
    folder.mkdir(parents=True)
    shutil.copy("/bin/busybox", folder / "busybox")
    (folder / "marker").write_text(marker)
    (folder / "Containerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\n"
    )


def test_build_push_lock_and_pinned_pushes(ws: Workspace, registry: str, tmp_path: Path) -> None:
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    env = {**PATH, "CONTAINERS_CONF": str(conf), "ARGOSY_BUILD_TOOL": "podman"}
    stamp = str(time.time_ns())  # a fresh image per test run: the registry is new, the store not
    _image(ws.root / "images" / "prep", f"prep {stamp}")
    _image(ws.root / "images" / "train", f"train {stamp}")
    (ws.root / "argosy.toml").write_text(
        textwrap.dedent(f"""
        [images.prep]
        context = "images/prep"
        repository = "{registry}/ml/prep"

        [images.train]
        context = "images/train"
        repository = "{registry}/ml/train"
        tag = "v1"
    """)
    )
    built = ws.argosy("images", "build", "--push", "--output", "json", env=env, timeout=300)
    assert built.code == 0, built.stderr
    for line in ("prep: building", "train: building", "prep: pushing", "train: done in"):
        assert line in built.stderr
    pushed = {b["name"]: b for b in built.json()["images"]}
    assert pushed["train"]["reference"] == f"{registry}/ml/train:v1"

    locked = ws.argosy("images", "lock", "--output", "json", env=env)
    assert locked.code == 0, locked.stderr
    images = locked.json()["images"]
    for name in ("prep", "train"):
        assert images[name]["digest"] == pushed[name]["digest"]  # what the push reported
        assert images[name]["pinned"] == f"{registry}/ml/{name}@{pushed[name]['digest']}"
    on_disk = json.loads((ws.root / "argosy.lock.json").read_text())
    assert on_disk["images"] == images

    ws.write(
        f'''
        from argosy import container_step, pipeline

        prep = container_step(name="prep", image="prep", command=["cat", "/marker"],
                              outputs={{"out": str}})
        train = container_step(name="train", image="{registry}/ml/train:v1",
                               command=["cat", "/marker"], outputs={{"out": str}})
        loose = container_step(name="loose", image="localhost/somewhere:latest",
                               command=["true"], outputs={{"out": str}})

        @pipeline
        def pinned() -> str:
            prep()
            return train()

        @pipeline
        def unpinned() -> str:
            return loose()
    ''',
        "images_pipe",
    )
    first = ws.argosy("pipelines", "push", "images_pipe.py:pinned", "--version", "v1",
                      "--output", "json", env=env)  # fmt: skip
    assert first.code == 0, first.stderr
    assert first.json()["created"] is True
    from argosy.client.local import LocalBackend
    from argosy.config import load_settings

    backend = LocalBackend(load_settings(home=ws.home))
    spec = backend.get_version("pinned", "v1").spec or {}
    backend.close()
    assert {n: s["implementation"]["image"] for n, s in spec["steps"].items()} == {
        "prep": images["prep"]["pinned"], "train": images["train"]["pinned"]
    }  # fmt: skip

    again = ws.argosy("pipelines", "push", "images_pipe.py:pinned", "--version", "v1",
                      "--output", "json", env=env)  # fmt: skip
    assert again.code == 0 and again.json()["created"] is False  # the same version: a no-op

    refused = ws.argosy("pipelines", "push", "images_pipe.py:unpinned", env=env)
    assert refused.code == 2
    assert "container step 'loose' uses image 'localhost/somewhere:latest'" in refused.stderr
    allowed = ws.argosy("pipelines", "push", "images_pipe.py:unpinned", "--allow-unpinned", env=env)
    assert allowed.code == 0, allowed.stderr

    # a new build of prep is a new digest: the same version name for it is refused
    (ws.root / "images" / "prep" / "marker").write_text(f"prep changed {stamp}")
    assert ws.argosy("images", "build", "prep", "--push", env=env, timeout=300).code == 0
    assert ws.argosy("images", "lock", env=env).code == 0
    moved = json.loads((ws.root / "argosy.lock.json").read_text())["images"]["prep"]
    assert moved["digest"] != images["prep"]["digest"]
    conflict = ws.argosy("pipelines", "push", "images_pipe.py:pinned", "--version", "v1", env=env)
    assert conflict.code == 2 and "v1" in conflict.stderr


def test_lock_says_what_is_missing(ws: Workspace, registry: str) -> None:
    (ws.root / "argosy.toml").write_text(
        f'[images.ghost]\ncontext = "."\nrepository = "{registry}/never/pushed"\n'
    )
    res = ws.argosy("images", "lock")
    assert res.code == 2 and "is not in its registry" in res.stderr
    (ws.root / "argosy.toml").write_text('[images.bad]\ncontext = "."\n')
    res = ws.argosy("images", "lock")
    assert res.code == 2 and "needs context" in res.stderr
    (ws.root / "argosy.toml").unlink()
    res = ws.argosy("images", "build")
    assert res.code == 2 and "no argosy.toml" in res.stderr


def test_the_project_file_is_also_the_settings_file(ws: Workspace, tmp_path: Path) -> None:
    """ARGOSY_CONFIG may name argosy.toml itself: its [images], [registry] and [environment]
    tables are no settings (an unknown setting would be refused), its settings still apply."""
    project = tmp_path / "elsewhere" / "argosy.toml"
    project.parent.mkdir()
    project.write_text(
        'tenant = "from-project"\n[images.a]\ncontext = "."\nrepository = "127.0.0.1:1/a"\n'
        '[registry]\ninsecure = ["127.0.0.1:1"]\n[environment]\npackages = []\n'
    )
    shown = ws.argosy("config", "show", env={"ARGOSY_CONFIG": str(project)})
    assert shown.code == 0, shown.stderr
    assert "from-project" in shown.stdout
    locked = ws.argosy("images", "lock", env={"ARGOSY_CONFIG": str(project)})
    assert locked.code == 2 and "cannot reach the registry of 127.0.0.1:1/a:dev" in locked.stderr


def test_a_python_step_in_an_image_is_pinned_on_push(ws: Workspace) -> None:
    """``@step(image=...)`` images are pinned from the lock file like container steps'; an
    image without a digest that the lock file does not know is refused."""
    digest = "sha256:" + "ab" * 32
    (ws.root / "argosy.toml").write_text(
        '[images.trainer]\ncontext = "."\nrepository = "registry.test/ml/trainer"\ntag = "v2"\n'
    )
    lock = {"reference": "registry.test/ml/trainer:v2", "digest": digest,
            "pinned": f"registry.test/ml/trainer@{digest}"}  # fmt: skip
    (ws.root / "argosy.lock.json").write_text(
        json.dumps({"version": 1, "images": {"trainer": lock}})
    )
    ws.write(
        """
        from argosy import pipeline, step

        @step(image="registry.test/ml/trainer:v2")
        def fit(n: int) -> int:
            return n

        @step(image="localhost/somewhere:latest")
        def loose(n: int) -> int:
            return n

        @pipeline
        def pinned_py(n: int = 1) -> int:
            return fit(n)

        @pipeline
        def unpinned_py(n: int = 1) -> int:
            return loose(n)
        """,
        "py_images",
    )
    pushed = ws.argosy("pipelines", "push", "py_images.py:pinned_py", "--version", "v1")
    assert pushed.code == 0, pushed.stderr
    from argosy.client.local import LocalBackend
    from argosy.config import load_settings

    backend = LocalBackend(load_settings(home=ws.home))
    spec = backend.get_version("pinned_py", "v1").spec or {}
    backend.close()
    assert spec["steps"]["fit"]["implementation"]["image"] == lock["pinned"]
    refused = ws.argosy("pipelines", "push", "py_images.py:unpinned_py")
    assert refused.code == 2
    assert "step 'loose' uses image 'localhost/somewhere:latest', which has no digest" in (
        refused.stderr
    )
