"""Lineage: the graph artifact ← task ← artifacts / files / parameters / code / environment.

Everything here is read from the metadata DB (tasks, their recorded inputs, artifacts, the
pipeline version's spec and provenance), never recomputed from logs, so it survives
upgrades. ``upstream`` answers "what produced this model?"; ``downstream`` answers "what was
made from this dataset?".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from argosy.service.documents import iso
from argosy.spec.models import ContainerImplementation, PipelineSpec, PythonImplementation
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Artifact, Pipeline, PipelineVersion, Run, Task, TaskInput


class _Reader:
    """Loads rows once per query (specs and runs are shared by many tasks)."""

    def __init__(self, session: Session, tenant: str) -> None:
        self.s = session
        self.tenant = tenant
        self._runs: dict[str, tuple[Run, PipelineVersion, str]] = {}
        self._specs: dict[str, PipelineSpec] = {}

    def run(self, run_id: str) -> tuple[Run, PipelineVersion, str]:
        if run_id not in self._runs:
            run = self.s.get_one(Run, run_id)
            version = self.s.get_one(PipelineVersion, run.pipeline_version_id)
            name = self.s.get_one(Pipeline, run.pipeline_id).name
            self._runs[run_id] = (run, version, name)
            self._specs[run_id] = q.get_spec(self.s, run)
        return self._runs[run_id]

    def artifact(self, a: Artifact) -> dict[str, Any]:
        return {
            "kind": "artifact",
            "id": a.id,
            "ref": f"{a.run_id}/{a.node_path}/{a.output_name}",
            "type": a.type,
            "sha256": a.sha256,
            "size": a.size,
            "created_at": iso(a.created_at),
        }

    def task(self, t: Task) -> dict[str, Any]:
        run, version, pipeline = self.run(t.run_id)
        spec = self._specs[t.run_id]
        step = spec.steps.get(t.step_name)
        provenance = version.provenance or {}
        doc: dict[str, Any] = {
            "kind": "task",
            "id": t.id,
            "run_id": t.run_id,
            "node_path": t.node_path,
            "step": t.step_name,
            "state": t.state,
            "cached_from_task": t.cached_from_task_id,
            "pipeline": pipeline,
            "digest": version.digest,
            "run_parameters": run.parameters,
            "git": {
                "commit": provenance.get("git_commit"),
                "dirty": provenance.get("git_dirty"),
                "diff_sha256": provenance.get("git_diff_sha256"),
            },
        }
        if step is not None and isinstance(step.implementation, PythonImplementation):
            impl = step.implementation
            from argosy.spec.fingerprint import Fingerprint

            doc["code"] = {
                "package": impl.code,
                "function": f"{impl.module}:{impl.function}",
                "fingerprint": Fingerprint(code=dict(impl.code_fingerprint)).code_hash,
            }
            doc["environment"] = {
                "manifest": impl.environment, "packages": impl.packages,
                "requirements": list(impl.requirements),
            }  # fmt: skip
        elif step is not None and isinstance(step.implementation, ContainerImplementation):
            doc["image"] = step.implementation.image
            doc["image_id"] = ((t.cache or {}).get("components", {}).get("code", {})).get(
                "image_id"
            )
            doc["command"] = step.implementation.command
        return doc


def _inputs(r: _Reader, task: Task) -> list[TaskInput]:
    return list(
        r.s.scalars(select(TaskInput).where(TaskInput.task_id == task.id).order_by(TaskInput.name))
    )


def upstream(
    session: Session, tenant: str, artifact: Artifact, *, depth: int = 64
) -> dict[str, Any]:
    """The artifact, the task that produced it, and recursively everything that task used."""
    r = _Reader(session, tenant)

    def walk(a: Artifact, left: int) -> dict[str, Any]:
        node = r.artifact(a)
        task = session.get_one(Task, a.task_id)
        producer = r.task(task)
        inputs: dict[str, Any] = {}
        for inp in _inputs(r, task):
            if inp.artifact_id is not None:
                parent = session.get_one(Artifact, inp.artifact_id)
                inputs[inp.name] = walk(parent, left - 1) if left > 0 else r.artifact(parent)
            elif inp.sha256 is not None:
                inputs[inp.name] = {"kind": "file", "source": inp.source, "sha256": inp.sha256}
            else:
                inputs[inp.name] = {"kind": "value", "value": (inp.value or {}).get("json")}
        producer["inputs"] = inputs
        node["produced_by"] = producer
        return node

    return walk(artifact, depth)


def downstream(
    session: Session, tenant: str, artifact: Artifact, *, depth: int = 64
) -> dict[str, Any]:
    """The artifact, the tasks that consumed it, their outputs, and so on."""
    r = _Reader(session, tenant)

    def walk(a: Artifact, left: int) -> dict[str, Any]:
        node = r.artifact(a)
        consumers = []
        uses = session.scalars(
            select(TaskInput).where(TaskInput.tenant == tenant, TaskInput.artifact_id == a.id)
        ).all()
        for use in uses:
            task = session.get_one(Task, use.task_id)
            doc = r.task(task)
            doc["as_input"] = use.name
            outputs = session.scalars(select(Artifact).where(Artifact.task_id == task.id)).all()
            doc["outputs"] = [walk(o, left - 1) if left > 0 else r.artifact(o) for o in outputs]
            consumers.append(doc)
        node["consumed_by"] = consumers
        return node

    return walk(artifact, depth)


def to_dot(tree: dict[str, Any]) -> str:
    """Graphviz DOT of a lineage tree (either direction)."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    seen: set[str] = set()

    def name(doc: dict[str, Any]) -> str:
        key = doc.get("id") or doc.get("sha256") or str(doc.get("value"))
        return f'"{doc["kind"]}:{key}"'

    def emit(doc: dict[str, Any]) -> str:
        n = name(doc)
        if n not in seen:
            seen.add(n)
            if doc["kind"] == "artifact":
                label = (
                    f"{doc['ref'].split('/', 1)[1]}\\n{doc['type']}\\nsha256 {doc['sha256'][:12]}"
                )
                lines.append(f'  {n} [shape=note, label="{label}"];')
            elif doc["kind"] == "task":
                label = f"{doc['node_path']} ({doc['state']})\\nrun {doc['run_id'][:10]}"
                if doc.get("git", {}).get("commit"):
                    label += f"\\ngit {doc['git']['commit'][:10]}{' dirty' if doc['git'].get('dirty') else ''}"
                lines.append(f'  {n} [shape=box, style=rounded, label="{label}"];')
            elif doc["kind"] == "file":
                label = f"{doc['source']}\\nsha256 {doc['sha256'][:12]}"
                lines.append(f'  {n} [shape=folder, label="{label}"];')
            else:
                value = str(doc.get("value")).replace('"', '\\"')
                lines.append(f'  {n} [shape=plaintext, label="{value[:40]}"];')
        return n

    def walk(doc: dict[str, Any]) -> None:
        me = emit(doc)
        if "produced_by" in doc:
            task = doc["produced_by"]
            t = emit(task)
            lines.append(f"  {t} -> {me};")
            for key, inp in task["inputs"].items():
                lines.append(f'  {emit(inp)} -> {t} [label="{key}"];')
                if inp["kind"] == "artifact":
                    walk(inp)
        for task in doc.get("consumed_by", []):
            t = emit(task)
            lines.append(f'  {me} -> {t} [label="{task["as_input"]}"];')
            for out in task["outputs"]:
                lines.append(f"  {t} -> {emit(out)};")
                walk(out)

    walk(tree)
    lines.append("}")
    return "\n".join(dict.fromkeys(lines)) + "\n"
