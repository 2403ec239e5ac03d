"""The JSON documents the CLI (and later the API) shows for runs, tasks and artifacts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Artifact, Attempt, Pipeline, PipelineVersion, Run


def iso(value: datetime | None) -> str | None:
    value = q.as_utc(value)
    return value.isoformat() if value else None


def artifact_value(art: Artifact, store: ArtifactStore) -> Any:
    """A JSON output's value (a list, for a collection of JSON values); else a reference."""
    if art.format == "collection":
        elements = json.loads(store.read_blob(art.sha256))
        if all(e is not None and e["format"] == "json" for e in elements):
            return [json.loads(store.read_blob(e["sha256"])) for e in elements]
    if art.format == "json":
        if art.value is not None and "json" in art.value:
            return art.value["json"]
        return json.loads(store.read_blob(art.sha256))
    return {"artifact_id": art.id, "sha256": art.sha256, "type": art.type}


def attempt_document(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "state": a.state,
        "reason": a.reason,
        "cause": a.cause,
        "error": a.error,
        "started_at": iso(a.started_at),
        "finished_at": iso(a.finished_at),
        "exit_code": a.exit_code,
        "signal": a.signal,
        "wall_time": a.wall_time,
        "cpu_time": a.cpu_time,
        "peak_memory": a.peak_memory,
        "node_pool": a.node_pool,
        "host": a.host,
        "pid": a.pid,
    }


def run_document(
    session: Session, store: ArtifactStore, run: Run, *, detail: bool = False
) -> dict[str, Any]:
    """Everything about a run: status, tasks with their attempts, and outputs."""
    version = session.get_one(PipelineVersion, run.pipeline_version_id)
    pipeline = session.get_one(Pipeline, run.pipeline_id)
    attempts: dict[str, list[Attempt]] = {}
    for a in q.attempts_of(session, run.id):
        attempts.setdefault(a.task_id, []).append(a)
    artifacts = q.artifacts_of(session, run.id)
    steps = []
    for t in q.tasks_of(session, run.id):
        doc: dict[str, Any] = {
            "name": t.step_name,
            "node": t.node_path,
            "state": t.state,
            "reason": t.reason,
            "item": (t.item or {}).get("value") if t.item else None,
            "cache": {
                "status": (t.cache or {}).get("status"),
                "reason": (t.cache or {}).get("reason"),
                "key": t.cache_key,
                "cached_from_task": t.cached_from_task_id,
            },
            "attempts": [attempt_document(a) for a in attempts.get(t.id, [])],
        }
        if detail:
            doc["inputs"] = t.inputs
            doc["outputs"] = {
                a.output_name: {
                    "artifact_id": a.id,
                    "sha256": a.sha256,
                    "type": a.type,
                    "size": a.size,
                }
                for a in artifacts
                if a.task_id == t.id
            }
            tails = [a.log_tail for a in attempts.get(t.id, []) if a.log_tail]
            doc["log_tail"] = tails[-1] if tails else []
        steps.append(doc)
    metrics = {
        f"{a.node_path}.{a.output_name}": artifact_value(a, store)
        for a in artifacts
        if a.type == "metrics"
    }
    by_id = {a.id: a for a in artifacts}
    outputs = {name: artifact_value(by_id[aid], store) for name, aid in (run.outputs or {}).items()}
    from argosy.engine.engine import engine_alive

    return {
        "run_id": run.id,
        "status": run.status,
        "engine_alive": engine_alive(run.engine) if run.status == "running" else None,
        "pipeline": pipeline.name,
        "pipeline_version": version.digest,
        "parameters": run.parameters,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "error": run.error,
        "steps": steps,
        "metrics": metrics,
        "outputs": outputs,
    }
