"""The manifest: every blob the metadata references, per tenant, and the runs whose records
travel with it — found while the rows are read (artifacts, imported input files, code
packages, environment manifests)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Manifest:
    """Every blob the metadata references, per tenant, and the runs (whose records travel)."""

    blobs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)

    def add(self, tenant: str, sha256: Any, size: Any, ref: str) -> None:
        if not isinstance(sha256, str):
            return
        sha = sha256.removeprefix("sha256:")
        if not _SHA256.match(sha):
            return
        entry = self.blobs.setdefault(tenant, {}).setdefault(sha, {"size": None, "ref": ref})
        if entry["size"] is None and isinstance(size, int):
            entry["size"] = size

    def entries(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for tenant, blobs in self.blobs.items():
            for sha, entry in blobs.items():
                yield tenant, sha, entry

    def count(self) -> int:
        return sum(len(b) for b in self.blobs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "tenants": {
                t: {"blobs": dict(sorted(self.blobs.get(t, {}).items())),
                    "runs": sorted(self.runs.get(t, []))}
                for t in sorted(set(self.blobs) | set(self.runs))
            }
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        manifest = cls()
        for tenant, part in doc.get("tenants", {}).items():
            manifest.blobs[tenant] = dict(part.get("blobs", {}))
            manifest.runs[tenant] = list(part.get("runs", []))
        return manifest


@dataclass(frozen=True)
class BlobProblem:
    """A blob the manifest lists that the artifact store lacks, or holds with other bytes."""

    tenant: str
    sha256: str
    problem: str  # "missing" | "corrupt"
    ref: str | None = None

    def __str__(self) -> str:
        where = f" ({self.ref})" if self.ref else ""
        return f"blob sha256:{self.sha256} of tenant {self.tenant!r} is {self.problem}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "sha256": self.sha256, "problem": self.problem,
                "ref": self.ref}  # fmt: skip


def note_blobs(manifest: Manifest, tenants: set[str], name: str, doc: dict[str, Any]) -> None:
    """Record the blobs and runs a row references."""
    tenant = doc.get("tenant")
    if not isinstance(tenant, str):
        return
    tenants.add(tenant)
    if name == "artifacts":
        ref = f"artifact {doc.get('run_id')}/{doc.get('node_path')}/{doc.get('output_name')}"
        manifest.add(tenant, doc.get("sha256"), doc.get("size"), ref)
    elif name == "task_inputs":
        ref = f"input {doc.get('name')!r} of task {doc.get('task_id')}"
        manifest.add(tenant, doc.get("sha256"), None, ref)
    elif name == "runs":
        manifest.runs.setdefault(tenant, []).append(str(doc["id"]))
    elif name == "pipeline_versions" and isinstance(doc.get("spec"), dict):
        spec = doc["spec"]
        version = f"pipeline version {str(doc.get('digest'))[:19]}"
        for key, package in (spec.get("code") or {}).items():
            size = package.get("size") if isinstance(package, dict) else None
            manifest.add(tenant, key, size, f"code package of {version}")
        for step_name, step in (spec.get("steps") or {}).items():
            impl = step.get("implementation") if isinstance(step, dict) else None
            if isinstance(impl, dict):
                manifest.add(
                    tenant, impl.get("code"), None, f"code of step {step_name!r} ({version})"
                )
                manifest.add(tenant, impl.get("environment"), None,
                             f"environment of step {step_name!r} ({version})")  # fmt: skip
