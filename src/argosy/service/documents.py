"""Table rows -> the wire documents of :mod:`argosy.api` (one place, for every home).

A list of N runs costs a fixed number of queries (names, digests, schedules and output
artifacts are each fetched for the whole page), and listings never read a blob: values there
come from what the database keeps inline. One run's document (its tasks' outputs, its
pipeline outputs, its metrics) and one artifact's also read small JSON values from their
blobs — with encryption at rest nothing is inline, and a document must not depend on
that —; a collection of JSON values shows as the list of its elements' values. Reading a
blob verifies it (a corrupted one is quarantined), so blobs are read only where a value is
asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from argosy import api
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import (
    Artifact,
    Attempt,
    Pipeline,
    PipelineVersion,
    Run,
    RunTag,
    Schedule,
    Task,
    Trigger,
)

INLINE_VALUE_BYTES = 64 * 1024  # JSON values up to this size are shown in documents
LOG_TAIL_LINES = 20


def utc(value: datetime | None) -> datetime | None:
    return q.as_utc(value)


def must_utc(value: datetime) -> datetime:
    found = q.as_utc(value)
    assert found is not None
    return found


def iso(value: datetime | None) -> str | None:
    found = q.as_utc(value)
    return found.isoformat() if found else None


def artifact_value(a: Artifact, store: ArtifactStore | None) -> Any:
    """The small JSON value of an artifact, else None.

    From the row when it is inline; with ``store``, from the blob when the value is small
    JSON, or the list of a collection's elements when each is small JSON.
    """
    if a.value and "json" in a.value:
        return a.value["json"]
    if store is None or a.size > INLINE_VALUE_BYTES:
        return None
    from argosy.stores.archive import ArchivedError

    try:
        return _blob_value(a, store)
    except ArchivedError:  # retention archived it: the document says so by its absence
        return None


def _blob_value(a: Artifact, store: ArtifactStore) -> Any:
    if a.format == "json":
        return json.loads(store.read_blob(a.sha256))
    if a.format == "collection":
        elements = json.loads(store.read_blob(a.sha256))
        if elements and all(isinstance(e, dict) and e.get("format") == "json" for e in elements):
            return [json.loads(store.read_blob(e["sha256"])) for e in elements]
    return None


def artifact_ref(a: Artifact, store: ArtifactStore | None = None) -> api.ArtifactRef:
    return api.ArtifactRef(
        artifact_id=a.id, ref=f"{a.run_id}/{a.node_path}/{a.output_name}", type=a.type,
        format=a.format, sha256=a.sha256, size=a.size, value=artifact_value(a, store),
    )  # fmt: skip


def artifact_document(a: Artifact, store: ArtifactStore | None = None) -> api.Artifact:
    return api.Artifact(
        id=a.id, ref=f"{a.run_id}/{a.node_path}/{a.output_name}", run_id=a.run_id,
        node_path=a.node_path, output_name=a.output_name, type=a.type, format=a.format,
        sha256=a.sha256, size=a.size, created_at=must_utc(a.created_at),
        value=artifact_value(a, store), filename=(a.value or {}).get("filename"),
    )  # fmt: skip


def _engine_alive(run: Run) -> bool | None:
    if run.status != "running":
        return None
    from argosy.engine.engine import engine_alive

    return engine_alive(run.engine)


def run_documents(
    session: Session, runs: Sequence[Run], store: ArtifactStore | None = None
) -> list[api.Run]:
    """Documents of runs (names, digests, schedules, tags, triggers and outputs in six queries)."""
    if not runs:
        return []

    def lookup(*columns: Any, ids: set[str]) -> dict[str, Any]:
        if not ids:
            return {}
        return {k: v for k, v in session.execute(select(*columns).where(columns[0].in_(ids)))}

    names = lookup(Pipeline.id, Pipeline.name, ids={r.pipeline_id for r in runs})
    digests = lookup(
        PipelineVersion.id, PipelineVersion.digest, ids={r.pipeline_version_id for r in runs}
    )
    schedules = lookup(
        Schedule.id, Schedule.name, ids={r.schedule_id for r in runs if r.schedule_id}
    )
    tags: dict[str, dict[str, str]] = {}
    tagged = select(RunTag.run_id, RunTag.key, RunTag.value).where(
        RunTag.run_id.in_({r.id for r in runs})
    )
    for run_id, key, value in session.execute(tagged.order_by(RunTag.key)):
        tags.setdefault(run_id, {})[key] = value
    triggers = lookup(Trigger.id, Trigger.name, ids={r.trigger_id for r in runs if r.trigger_id})
    output_ids = {aid for r in runs for aid in (r.outputs or {}).values()}
    outputs = (
        {a.id: a for a in session.scalars(select(Artifact).where(Artifact.id.in_(output_ids)))}
        if output_ids
        else {}
    )
    return [
        api.Run(
            id=r.id,
            pipeline=names.get(r.pipeline_id, ""),
            pipeline_version_id=r.pipeline_version_id,
            digest=digests.get(r.pipeline_version_id, ""),
            status=r.status,  # type: ignore[arg-type]
            parameters=r.parameters or {},
            created_at=must_utc(r.created_at),
            created_by=r.created_by,
            started_at=utc(r.started_at),
            finished_at=utc(r.finished_at),
            error=r.error,
            cancel_requested=bool(r.cancel_requested),
            engine_alive=_engine_alive(r),
            retry_of=r.retry_of,
            reproduce_of=(r.options or {}).get("reproduce_of"),
            schedule=schedules.get(r.schedule_id) if r.schedule_id else None,
            outputs={
                name: artifact_ref(outputs[aid], store)
                for name, aid in (r.outputs or {}).items()
                if aid in outputs
            },
            name=r.name,
            description=r.description,
            tags=tags.get(r.id, {}),
            trigger=triggers.get(r.trigger_id) if r.trigger_id else None,
        )
        for r in runs
    ]


def run_document(session: Session, run: Run, store: ArtifactStore | None = None) -> api.Run:
    return run_documents(session, [run], store)[0]


def attempt_document(a: Attempt) -> api.Attempt:
    return api.Attempt(
        id=a.id, number=a.number, state=a.state, reason=a.reason, cause=a.cause, error=a.error,
        host=a.host, pid=a.pid, started_at=utc(a.started_at), finished_at=utc(a.finished_at),
        exit_code=a.exit_code, signal=a.signal, wall_time=a.wall_time, cpu_time=a.cpu_time,
        peak_memory=a.peak_memory, node_pool=a.node_pool,
    )  # fmt: skip


_ITERATION = re.compile(r"^(.*)\[\d+\](?:/[^\[\]]*)?$")


def plan_order(tasks: Sequence[Task]) -> list[Task]:
    """Tasks in plan order: a map's iterations (created when its items were known, so after
    the tasks downstream of it) right after the map node, in item order."""
    paths = {t.node_path for t in tasks}
    children: dict[str, list[Task]] = {}
    top: list[Task] = []
    for t in tasks:  # by id: creation order, which is plan order among tasks made together
        found = _ITERATION.match(t.node_path)
        parent = found.group(1) if found else None
        (children.setdefault(parent, []) if parent in paths else top).append(t)
    ordered: list[Task] = []

    def add(t: Task) -> None:
        ordered.append(t)
        for child in children.get(t.node_path, []):
            add(child)

    for t in top:
        add(t)
    return ordered


def task_documents(
    session: Session, run: Run, store: ArtifactStore | None = None
) -> list[api.Task]:
    """The run's tasks in plan order, each with its attempts, outputs and log tail."""
    attempts: dict[str, list[Attempt]] = {}
    for a in q.attempts_of(session, run.id):
        attempts.setdefault(a.task_id, []).append(a)
    outputs: dict[str, dict[str, api.ArtifactRef]] = {}
    for art in q.artifacts_of(session, run.id):
        outputs.setdefault(art.task_id, {})[art.output_name] = artifact_ref(art, store)
    docs = []
    for t in plan_order(q.tasks_of(session, run.id)):
        cache = t.cache or {}
        tails = [a.log_tail for a in attempts.get(t.id, []) if a.log_tail]
        docs.append(
            api.Task(
                id=t.id,
                node_path=t.node_path,
                step=t.step_name,
                state=t.state,
                reason=t.reason,
                item=(t.item or {}).get("value") if t.item else None,
                cache=api.TaskCache(
                    status=cache.get("status"),
                    reason=cache.get("reason"),
                    key=t.cache_key,
                    cached_from_task=t.cached_from_task_id,
                ),
                queued_at=utc(t.queued_at),
                started_at=utc(t.started_at),
                finished_at=utc(t.finished_at),
                attempts=[attempt_document(a) for a in attempts.get(t.id, [])],
                inputs=t.inputs,
                outputs=outputs.get(t.id, {}),
                log_tail=list(tails[-1][-LOG_TAIL_LINES:]) if tails else [],
            )
        )
    return docs


def metrics_of(tasks: Sequence[api.Task]) -> dict[str, Any]:
    """``NODE.OUTPUT`` -> values of every metrics output, in plan order."""
    return {
        f"{t.node_path}.{name}": ref.value
        for t in tasks
        for name, ref in t.outputs.items()
        if ref.type == "metrics"
    }


def run_detail(session: Session, run: Run, store: ArtifactStore | None) -> api.RunDetail:
    tasks = task_documents(session, run, store)
    head = run_document(session, run, store)
    return api.RunDetail(**head.model_dump(), tasks=tasks, metrics=metrics_of(tasks))


def version_documents(
    session: Session, versions: Sequence[PipelineVersion], pipeline_names: dict[str, str]
) -> list[api.PipelineVersion]:
    tags = q.version_tags(session, [v.id for v in versions])
    return [
        api.PipelineVersion(
            id=v.id,
            pipeline=pipeline_names[v.pipeline_id],
            digest=v.digest,
            tags=tags[v.id],
            created_at=must_utc(v.created_at),
            created_by=v.created_by,
        )
        for v in versions
    ]


def spec_document(version: PipelineVersion) -> dict[str, Any]:
    """The stored spec with its provenance (as ``argosy compile`` wrote it)."""
    doc = dict(version.spec)
    if version.provenance:
        doc["provenance"] = version.provenance
    return doc


def pipeline_document(p: Pipeline, latest: api.PipelineVersion | None) -> api.Pipeline:
    return api.Pipeline(
        id=p.id, name=p.name, created_at=must_utc(p.created_at), created_by=p.created_by,
        latest_version=latest,
    )  # fmt: skip


def schedule_document(s: Schedule, pipeline: str) -> api.Schedule:
    return api.Schedule(
        id=s.id, name=s.name, pipeline=pipeline, version=s.version, cron=s.cron,
        timezone=s.timezone, parameters=s.parameters or {},
        max_concurrent_runs=s.max_concurrent_runs, catch_up=s.catch_up,  # type: ignore[arg-type]
        catch_up_limit=s.catch_up_limit, paused=bool(s.paused), next_fire_at=utc(s.next_fire_at),
        last_fire_at=utc(s.last_fire_at), created_at=must_utc(s.created_at),
        created_by=s.created_by,
    )  # fmt: skip
