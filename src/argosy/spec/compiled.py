"""What a compile gives (a spec and the blobs it references) and the git state its provenance
records — apart from :mod:`argosy.spec.compile`, so that using a compiled spec (the engine, the
compiled-spec cache) does not import the SDK and the compiler."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from argosy.spec.models import PipelineSpec


@dataclass
class CompiledPipeline:
    """A spec plus the blobs it references by hash (code packages, environment manifests)."""

    spec: PipelineSpec
    blobs: dict[str, bytes] = field(default_factory=dict)


def git_state(root: Path) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, sha256 of the diff against HEAD) of the repository holding ``root``."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=10, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--no-ext-diff", "--binary")
    except (OSError, subprocess.SubprocessError):
        return None, None, None
    dirty = bool(diff.strip())
    return commit or None, dirty, hashlib.sha256(diff).hexdigest() if dirty else None
