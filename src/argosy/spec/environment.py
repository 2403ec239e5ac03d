"""The environment fingerprint: Python version, platform and installed distributions.

The manifest is stored as a blob; a step's ``environment`` is its sha256, so a later reader
(a server, ``runs reproduce``) can tell exactly which packages a task ran with.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import rfc8785


def _site_stamp() -> str:
    """Changes whenever a distribution is installed or removed on ``sys.path``."""
    parts = [sys.prefix, sys.version]
    for entry in sys.path:
        p = Path(entry or ".")
        if p.is_dir():  # installing or removing a distribution changes its folder's mtime
            parts.append(f"{p}:{p.stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def environment_manifest(cache_dir: Path | None = None) -> dict[str, Any]:
    """The manifest of this interpreter (cached on disk, keyed by site-packages' mtimes)."""
    cache = cache_dir / f"environment-{_site_stamp()}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        loaded: dict[str, Any] = json.loads(cache.read_text())
        return loaded
    import importlib.metadata

    distributions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.name
        if name:
            distributions[name.lower().replace("_", "-")] = dist.version
    manifest = {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{sys.platform}-{platform.machine()}",
        "distributions": dict(sorted(distributions.items())),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: concurrent first runs each publish a whole file by rename
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(manifest))
        os.replace(tmp, cache)
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return bytes(rfc8785.dumps(manifest))


def project_packages(start: Path | None) -> tuple[str, ...]:
    """The default packages of a project's steps: ``[environment] packages`` of the project
    file (``ARGOSY_CONFIG``, else the nearest ``argosy.toml`` from ``start`` up)."""
    import tomllib

    named = os.environ.get("ARGOSY_CONFIG")
    file: Path | None = Path(named).expanduser() if named else None
    if file is None:
        here = start.parent if start is not None and start.is_file() else start or Path.cwd()
        for folder in (here.resolve(), *here.resolve().parents):
            if (folder / "argosy.toml").is_file():
                file = folder / "argosy.toml"
                break
    if file is None or not file.is_file():
        return ()
    try:
        doc = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ()
    found = (doc.get("environment") or {}).get("packages") or []
    return tuple(sorted(str(p) for p in found))
