"""Code packages: a deterministic zip of the project's Python files, named by its sha256.

Each Python step records the package it runs from, so another machine can run (and verify)
exactly that code. The project root is the nearest folder above the pipeline file holding
``pyproject.toml``, ``setup.py`` or ``.git``, else the file's own folder. Only ``*.py`` files
are packaged; hidden folders, virtual environments, caches and build output are skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import argosy
from argosy.project import PROJECT_MARKERS

_SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "site-packages", "venv", "env"}
_ROOT_MARKERS = PROJECT_MARKERS  # the state folder is created at the same root
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_PACKAGE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class BuiltPackage:
    """A code package's bytes, digest, root folder and the folders it puts on ``sys.path``."""

    data: bytes
    sha256: str
    root: Path
    paths: list[str]


def project_root(file: Path) -> Path:
    for folder in file.parents:
        if any((folder / m).exists() for m in _ROOT_MARKERS):
            return folder
    return file.parent


def _python_files(root: Path) -> list[Path]:
    own = Path(argosy.__file__).resolve().parent
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not d.endswith(".egg-info")
            and not (here / d / "pyvenv.cfg").exists()
            and (here / d).resolve() != own
        )
        found.extend(here / f for f in sorted(filenames) if f.endswith(".py"))
    return found


def build_package(root: Path, sys_paths: list[Path]) -> BuiltPackage:
    """Zip every ``.py`` file under ``root`` with fixed metadata, so equal code hashes equal."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in _python_files(root):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    if len(data) > MAX_PACKAGE_BYTES:
        from argosy.errors import PipelineDefinitionError

        raise PipelineDefinitionError(
            f"the code package of {root} is {len(data) // 2**20} MiB of Python files; keep data "
            "and generated code out of the project folder (or add a pyproject.toml closer to the "
            "pipeline file to mark a smaller project root)"
        )
    rel = []
    for p in sys_paths:
        r = p.resolve().relative_to(root.resolve()).as_posix()
        rel.append(r if r else ".")
    return BuiltPackage(data, hashlib.sha256(data).hexdigest(), root, sorted(set(rel)))


def extract_package(data_path: Path, target: Path) -> Path:
    """Unpack a code package into ``target`` once (atomically); returns ``target``."""
    if target.is_dir():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    from argosy.errors import IntegrityError
    from argosy.safe_paths import UnsafeNameError, extract_zip

    try:
        extract_zip(data_path, tmp, what=f"code package {data_path.name}")
    except UnsafeNameError as exc:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise IntegrityError(str(exc)) from None
    try:
        tmp.rename(target)
    except OSError:  # another process extracted it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target
