"""Compiled pipelines cached by the fingerprint of every file their compile read.

Compiling ``FILE:PIPELINE`` imports the pipeline's module (and all it imports), traces the DAG,
fingerprints each step's code and packages and builds the code package: a large share of an
``argosy run``'s start-up, and the same work again on every run of an unchanged project.

While a compile runs, an audit hook records every file it opens and every folder it lists
(the modules imported, the project files packaged and fingerprinted, the distributions'
metadata, the folders the import system looked in), plus the folders above the pipeline file
(where a project marker may appear). The result is kept in the state folder's cache with the
identity of each recorded path (inode, size and modification time in ns; "absent" for a path
that did not exist). The next compile of the same target, from the same folder, with the same
interpreter, Argosy version and ``ARGOSY_*`` settings, stats those paths: if none changed,
appeared or disappeared, the cached spec and blobs are used without importing anything of the
project; otherwise it compiles in full and replaces the entry. The provenance (compile time,
user, git commit and diff) is taken afresh either way; it is outside the spec's digest.

A pipeline whose graph depends on something other than files (the clock, the network, an
environment variable other than ``ARGOSY_*``) must be compiled without the cache:
``ARGOSY_COMPILE_CACHE=false``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import argosy
from argosy.project import PROJECT_MARKERS

if TYPE_CHECKING:
    from argosy.spec.compiled import CompiledPipeline

FORMAT = 1
_recording: dict[str, str] | None = None  # path -> its identity when the compile first saw it
_recording_lock = threading.Lock()
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    found = _recording
    if found is None:
        return
    if event == "open":
        path, mode, flags = (*args, None, None, None)[:3]
        if (mode and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & os.O_ACCMODE != os.O_RDONLY
        ):
            return  # what the compile writes is not what it depends on
    elif event in ("os.listdir", "os.scandir"):
        path = args[0] if args else "."
    else:
        return
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str | os.PathLike):
        name = os.path.abspath(os.fspath(path) or ".")
        if name not in found:  # as it was before it was read: a later change is seen
            found[name] = _identity(name)


def _identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "absent"
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _key(target: str) -> str:
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("ARGOSY_"))
    doc = [FORMAT, target, os.getcwd(), sys.executable, sys.version, argosy.__version__, settings]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:40]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _load(folder: Path, key: str) -> CompiledPipeline | None:
    from argosy.spec.compiled import CompiledPipeline
    from argosy.spec.models import PipelineSpec

    try:
        entry = json.loads((folder / f"{key}.json").read_text())
        if entry.get("format") != FORMAT:
            return None
        for path, identity in entry["paths"]:
            if _identity(path) != identity:
                return None
        blobs = {}
        for digest in entry["blobs"]:
            data = (folder / "blobs" / digest.removeprefix("sha256:")).read_bytes()
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return None
            blobs[digest] = data
        spec = PipelineSpec.model_validate(entry["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return CompiledPipeline(spec, blobs)


def _fresh_provenance(compiled: CompiledPipeline) -> CompiledPipeline:
    from argosy.spec.code_package import project_root
    from argosy.spec.compiled import CompiledPipeline, git_state

    spec = compiled.spec
    if spec.provenance is None:
        return compiled
    source = Path(spec.provenance.source_file) if spec.provenance.source_file else None
    # the folder a full compile asks git about: the code package's root, else the file's
    root = Path.cwd() if source is None else project_root(source) if spec.code else source.parent
    commit, dirty, diff_sha = git_state(root)
    provenance = spec.provenance.model_copy(
        update={"compiled_at": datetime.now(UTC).isoformat(), "compiled_by": getpass.getuser(),
                "git_commit": commit, "git_dirty": dirty, "git_diff_sha256": diff_sha}
    )  # fmt: skip
    return CompiledPipeline(spec.model_copy(update={"provenance": provenance}), compiled.blobs)


def compile_cached(
    target: str, cache_dir: Path, compile_now: Callable[[], CompiledPipeline]
) -> CompiledPipeline:
    """``compile_now()``'s result for ``target``, from the cache when no file it read changed."""
    global _recording, _hooked
    folder = cache_dir / "compiled"
    key = _key(target)
    cached = _load(folder, key)
    if cached is not None:
        return _fresh_provenance(cached)
    with _recording_lock:
        if not _hooked:
            sys.addaudithook(_audit)
            _hooked = True
        seen: dict[str, str] = {}
        _recording = seen
        try:
            compiled = compile_now()
        finally:
            _recording = None
    file = target.rpartition(":")[0] if ":" in target[2:] else target
    for parent in Path(os.path.abspath(file)).parents:  # where a project marker may appear
        seen.setdefault(str(parent), _identity(str(parent)))
        if any((parent / marker).exists() for marker in PROJECT_MARKERS):
            break  # the project root: markers above it change nothing
    inside = str(cache_dir) + os.sep
    paths = sorted((p, i) for p, i in seen.items() if not p.startswith(inside))
    entry = {
        "format": FORMAT,
        "target": target,
        "paths": [list(pair) for pair in paths],
        "blobs": sorted(compiled.blobs),
        "spec": compiled.spec.model_dump(mode="json"),
    }
    try:
        for digest, data in compiled.blobs.items():
            blob = folder / "blobs" / digest.removeprefix("sha256:")
            if not blob.is_file():
                _write(blob, data)
        _write(folder / f"{key}.json", json.dumps(entry).encode())
    except OSError:  # a read-only state folder: no cache, the compile stands
        pass
    return compiled
