"""Component images: build them, push them, pin them by digest.

The project file ``argosy.toml`` (``ARGOSY_CONFIG`` names another; else the nearest one found
walking up from the current folder) lists the project's images::

    [images.preprocess]
    context = "images/preprocess"          # relative to argosy.toml
    repository = "registry.example.com/ml/preprocess"
    tag = "dev"                              # default: dev (CI: --tag $GIT_SHA)
    containerfile = "Containerfile"          # default: the engine's (Containerfile/Dockerfile)

    [registry]
    insecure = ["127.0.0.1:5000"]            # plain HTTP (and no TLS check) for these hosts

``argosy images build`` builds them in parallel with podman, buildah or docker (``--push``
pushes them); ``argosy images lock`` asks each image's registry for the digest its tag points
at (``HEAD /v2/NAME/manifests/TAG``, OCI distribution spec) and writes ``argosy.lock.json``
beside ``argosy.toml``. ``argosy pipelines push`` then replaces every container step's image
that names a locked image (by its name, ``repository:tag`` or ``repository``) with
``repository@sha256:...``, and refuses a step whose image has no digest unless given
``--allow-unpinned``: the pushed version records exactly what will run.

``lock`` authenticates to private registries with the credentials podman/docker use (their
auth files, in podman's order) through the OCI distribution / Docker registry auth flow
(:mod:`argosy.ops.registry_auth`); a registry that still refuses, on lock or push, is one line
and exit 3 (:class:`~argosy.ops.registry_auth.RegistryAuthError`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argosy.errors import UsageError

PROJECT_FILE = "argosy.toml"
LOCK_FILE = "argosy.lock.json"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DIGEST_PREFIX = "@sha256:"
# what podman/buildah/docker say when a registry refuses a push for want of credentials
AUTH_REFUSED = re.compile(r"unauthorized|authentication required|denied|\b401\b", re.IGNORECASE)


@dataclass(frozen=True)
class Image:
    name: str
    context: Path
    repository: str
    tag: str
    containerfile: Path | None

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Project:
    file: Path
    images: dict[str, Image]
    insecure: frozenset[str]

    @property
    def lock_path(self) -> Path:
        return self.file.parent / LOCK_FILE


def project_file(start: Path | None = None) -> Path | None:
    """``ARGOSY_CONFIG``, else the nearest ``argosy.toml`` from ``start`` (the cwd) up."""
    named = os.environ.get("ARGOSY_CONFIG")
    if named:
        return Path(named).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder / PROJECT_FILE
    return None


def load_project(start: Path | None = None) -> Project:
    file = project_file(start)
    if file is None or not file.is_file():
        raise UsageError(
            f"no {PROJECT_FILE} here or above (and ARGOSY_CONFIG is not set); list the project's "
            f'images in one: [images.NAME] context = "..." repository = "..."'
        )
    try:
        doc = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{file} is not valid TOML: {exc}") from None
    images: dict[str, Image] = {}
    for name, entry in (doc.get("images") or {}).items():
        if not isinstance(entry, dict) or "context" not in entry or "repository" not in entry:
            raise UsageError(
                f'{file}: [images.{name}] needs context = "FOLDER" and repository = "HOST/NAME"'
            )
        repository = str(entry["repository"])
        if ":" in repository.rsplit("/", 1)[-1] or "@" in repository:
            raise UsageError(
                f"{file}: [images.{name}] repository {repository!r} has a tag or digest; give the "
                'tag as tag = "..."'
            )
        context = (file.parent / str(entry["context"])).resolve()
        containerfile = entry.get("containerfile")
        images[name] = Image(
            name=name, context=context, repository=repository, tag=str(entry.get("tag", "dev")),
            containerfile=(context / str(containerfile)) if containerfile else None,
        )  # fmt: skip
    insecure = frozenset(str(h) for h in (doc.get("registry") or {}).get("insecure", []))
    return Project(file, images, insecure)


def build_tool() -> str:
    """podman, buildah or docker (``ARGOSY_BUILD_TOOL`` picks one)."""
    chosen = os.environ.get("ARGOSY_BUILD_TOOL")
    for candidate in [chosen] if chosen else ["podman", "buildah", "docker"]:
        found = shutil.which(candidate)
        if found:
            return found
    raise UsageError("no image build tool: install podman, buildah or docker")


def _host(repository: str) -> str:
    first = repository.split("/", 1)[0]
    return first if ("." in first or ":" in first or first == "localhost") else "docker.io"


def _insecure(project: Project, repository: str) -> bool:
    host = _host(repository)
    return host in project.insecure or host.split(":")[0] in ("127.0.0.1", "localhost")


@dataclass
class Built:
    name: str
    reference: str
    seconds: float
    pushed: bool
    digest: str | None  # what the push reported


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise UsageError(f"{what} failed ({proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def build(
    project: Project,
    names: list[str],
    *,
    tag: str | None = None,
    push: bool = False,
    jobs: int = 4,
    say: Callable[[str], None] = lambda _: None,
) -> list[Built]:
    """Build (and push) the named images (default: all) in parallel; one line each as it
    starts and ends."""
    chosen = names or sorted(project.images)
    unknown = [n for n in chosen if n not in project.images]
    if unknown:
        raise UsageError(
            f"{project.file} has no image {unknown[0]!r}; its images are: "
            f"{', '.join(sorted(project.images)) or '(none)'}"
        )
    tool = build_tool()

    def one(name: str) -> Built:
        image = project.images[name]
        reference = f"{image.repository}:{tag or image.tag}"
        started = time.monotonic()
        say(f"{name}: building {reference} from {image.context}")
        argv = [tool, "build", "-t", reference]
        if image.containerfile is not None:
            argv += ["-f", str(image.containerfile)]
        _run([*argv, str(image.context)], f"building {name}")
        digest = None
        if push:
            say(f"{name}: pushing {reference}")
            digest = push_image(project, tool, reference)
        seconds = time.monotonic() - started
        say(f"{name}: done in {seconds:.1f} s{' (' + digest + ')' if digest else ''}")
        return Built(name, reference, seconds, push, digest)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, chosen))


def push_image(project: Project, tool: str, reference: str) -> str | None:
    """Push ``reference``; the digest the registry stored, as the tool reports it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        digest_file = Path(tmp) / "digest"
        argv = [tool, "push"]
        if Path(tool).name == "podman" or Path(tool).name == "buildah":
            argv += ["--digestfile", str(digest_file)]
            if _insecure(project, reference):
                argv.append("--tls-verify=false")
        try:
            _run([*argv, reference], f"pushing {reference}")
        except UsageError as exc:
            if AUTH_REFUSED.search(str(exc)):
                from argosy.ops.registry_auth import RegistryAuthError

                host = _host(reference.rpartition(":")[0])
                tail = str(exc).partition("): ")[2] or str(exc)
                said = tail.rsplit(" | ", 1)[-1].removeprefix("Error: ")  # the tool's last line
                raise RegistryAuthError(
                    f"registry {host} refused to let {Path(tool).name} push {reference} "
                    f"({said}); log in with '{Path(tool).name} login {host}' (or set "
                    "REGISTRY_AUTH_FILE) and check that the account may push there",
                    code="registry_auth",
                ) from None
            raise
        return digest_file.read_text().strip() if digest_file.is_file() else None


def _repository_path(repository: str, host: str) -> str:
    path = repository[len(host) + 1 :] if repository.startswith(host + "/") else repository
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return path


def resolve_digest(project: Project, reference: str, timeout: float = 30) -> str:
    """The digest ``repository:tag`` points at in its registry (OCI distribution API), with
    the credentials podman/docker use (:mod:`argosy.ops.registry_auth`)."""
    import httpx

    from argosy.ops import registry_auth

    repository, _, tag = reference.rpartition(":")
    host = _host(repository)
    path = _repository_path(repository, host)
    scheme = "http" if _insecure(project, repository) else "https"
    endpoint = "registry-1.docker.io" if host == "docker.io" else host
    url = f"{scheme}://{endpoint}/v2/{path}/manifests/{tag}"
    credential, files = registry_auth.find_credential(host, path)
    auth = registry_auth.RegistryAuth(credential, f"repository:{path}:pull")
    try:
        with httpx.Client(auth=auth, timeout=timeout) as client:
            response = client.head(url, headers={"Accept": MANIFEST_TYPES})
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach the registry of {reference} ({url}): {exc}") from None
    if response.status_code in (401, 403):
        raise registry_auth.RegistryAuthError(
            registry_auth.refusal(reference, host, auth, files, response.status_code),
            code="registry_auth",
        )
    if response.status_code == 404:
        raise UsageError(
            f"{reference} is not in its registry ({url} answered 404); build and push it first "
            "(argosy images build --push)"
        )
    digest = str(response.headers.get("Docker-Content-Digest", ""))
    if response.status_code != 200 or not digest.startswith("sha256:"):
        raise UsageError(
            f"the registry answered {response.status_code} without a digest for {reference}"
        )
    return digest


def lock(project: Project, *, tag: str | None = None) -> dict[str, Any]:
    """Resolve every image to its digest and write the lock file; returns its content."""
    entries = {}
    for name, image in sorted(project.images.items()):
        reference = f"{image.repository}:{tag or image.tag}"
        digest = resolve_digest(project, reference)
        entries[name] = {
            "reference": reference, "digest": digest,
            "pinned": f"{image.repository}@{digest}",
        }  # fmt: skip
    doc = {"version": 1, "images": entries}
    project.lock_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def read_lock(project: Project) -> dict[str, dict[str, str]]:
    if not project.lock_path.is_file():
        return {}
    images: dict[str, dict[str, str]] = json.loads(project.lock_path.read_text()).get("images", {})
    return images


def pin(image: str, locked: dict[str, dict[str, str]]) -> str | None:
    """The pinned reference for a step's ``image`` (a locked image's name, ``repo:tag`` or
    ``repo``); the image itself when it is pinned already; None when it cannot be pinned."""
    if DIGEST_PREFIX in image:
        return image
    for name, entry in locked.items():
        repository = entry["pinned"].split("@", 1)[0]
        if image in (name, entry["reference"], repository):
            return entry["pinned"]
    return None


def pin_compiled(compiled: Any, allow_unpinned: bool) -> Any:
    """A compiled pipeline with its container images pinned from the project's lock file (the
    same object when it has no container step)."""
    from argosy.spec.compile import CompiledPipeline

    if not any(getattr(s.implementation, "image", None) for s in compiled.spec.steps.values()):
        return compiled
    file = project_file()
    locked = read_lock(load_project()) if file is not None and file.is_file() else {}
    return CompiledPipeline(pin_spec(compiled.spec, locked, allow_unpinned), compiled.blobs)


def pin_spec(spec: Any, locked: dict[str, dict[str, str]], allow_unpinned: bool) -> Any:
    """``spec`` with the images of its container steps and of its Python steps in an image
    pinned from ``locked``; ``UsageError`` naming the step when one cannot be pinned (unless
    ``allow_unpinned``)."""
    from argosy.spec.models import ContainerImplementation

    steps = {}
    changed = False
    for name, step in spec.steps.items():
        impl = step.implementation
        image = getattr(impl, "image", None)
        if image:
            kind = "container step" if isinstance(impl, ContainerImplementation) else "step"
            pinned = pin(image, locked)
            if pinned is None:
                if not allow_unpinned:
                    raise UsageError(
                        f"{kind} {name!r} uses image {image!r}, which has no digest "
                        f"and is not in {LOCK_FILE}; pin it (image@sha256:...), list it in "
                        f"{PROJECT_FILE} and run 'argosy images lock', or push with "
                        "--allow-unpinned"
                    )
            elif pinned != image:
                step = step.model_copy(
                    update={"implementation": impl.model_copy(update={"image": pinned})}
                )
                changed = True
        steps[name] = step
    return spec.model_copy(update={"steps": steps}) if changed else spec
