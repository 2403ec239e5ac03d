"""Triggers: run a pipeline when a run of another succeeds, when a signed webhook arrives,
when a new version of a registered model appears, or when a named artifact
(``PIPELINE/NODE/OUTPUT``) gets new content.

Each event a trigger acts on is written once into ``trigger_fires`` (unique on trigger and
event key: ``run:<id>``, ``webhook:<delivery id>``, ``model:<version id>``,
``artifact:<artifact id>``) in the same transaction as the run it creates, so an event starts
exactly one run however many server instances see it, and a replayed webhook delivery starts
none. Run, model and artifact events are found by :func:`scan` (every instance calls it at
each scheduler tick: the unique key decides); a webhook fires in its request. A paused
trigger acts on nothing; once resumed, events from while it was paused never fire it (as a
schedule's missed fires are not caught up).

The run is created as the trigger's creator (``created_by``), tagged ``trigger=<name>``, and
linked to the trigger (``Run.trigger_id``); it belongs to the trigger's tenant, as does
everything a trigger can read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.engine.submission import queue_run
from argosy.errors import ArgosyError, ConflictError, NotFoundError, UsageError
from argosy.ids import new_id
from argosy.service.context import ServiceContext
from argosy.service.documents import artifact_value, must_utc
from argosy.service.paging import decode_cursor, paged
from argosy.states import RunStatus
from argosy.stores.artifacts.blobs import ArtifactStore
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import (
    Artifact,
    ModelVersionRow,
    Pipeline,
    RegisteredModel,
    Run,
    RunTag,
    Trigger,
    TriggerFire,
)

log = logging.getLogger("argosy.triggers")

OVERLAP = timedelta(minutes=5)  # events are looked for this far behind the watermark
SOURCE_KEYS = {
    "run_succeeded": "pipeline", "webhook": "secret", "model_version": "model",
    "artifact": "artifact",
}  # fmt: skip
BINDING_ROOTS = {
    "run_succeeded": ("outputs.", "run.id", "run.parameters."),
    "webhook": ("body.",),
    "model_version": ("model", "version", "artifact", "run.id"),
    "artifact": ("artifact", "digest", "value", "run.id"),
}
EXAMPLES = {
    "pipeline": "train",
    "secret": "DEPLOY_HOOK",
    "model": "churn",
    "artifact": "ingest/clean/output",
}
SCANNED = ("run_succeeded", "model_version", "artifact")  # found by scan(), not pushed


# -- documents ---------------------------------------------------------------------------------
def _document(session: Session, t: Trigger) -> api.Trigger:
    pipeline = session.get_one(Pipeline, t.pipeline_id).name
    hook = f"{api.API_PREFIX}/tenants/{t.tenant}/triggers/{t.name}/webhook"
    return api.Trigger(
        id=t.id, name=t.name, kind=t.kind, source=dict(t.source), pipeline=pipeline,  # type: ignore[arg-type]
        version=t.version, parameters=dict(t.parameters), bindings=dict(t.bindings),
        paused=t.paused, webhook_path=hook if t.kind == "webhook" else None,
        created_at=must_utc(t.created_at), created_by=t.created_by,
        resumed_at=must_utc(t.resumed_at) if t.resumed_at is not None else None,
    )  # fmt: skip


def _fire_document(f: TriggerFire, replayed: bool = False) -> api.TriggerFire:
    return api.TriggerFire(
        event=f.event_key, run_id=f.run_id, outcome=f.outcome, detail=f.detail,
        at=must_utc(f.created_at), replayed=replayed,
    )  # fmt: skip


def _get(session: Session, tenant: str, name: str) -> Trigger:
    found: Trigger | None = session.scalar(
        select(Trigger).where(Trigger.tenant == tenant, Trigger.name == name)
    )
    if found is None:
        raise NotFoundError(
            f"no trigger {name!r} in tenant {tenant!r}; list them with 'argosy triggers list'",
            code="trigger_not_found",
        )
    return found


# -- use cases ---------------------------------------------------------------------------------
def create_trigger(ctx: ServiceContext, body: api.TriggerCreate, now: datetime) -> api.Trigger:
    """A trigger; events before ``now`` do not fire it."""
    key = SOURCE_KEYS[body.kind]
    if set(body.source) != {key} or not body.source[key]:
        raise UsageError(
            f"a {body.kind} trigger's source is {{{key!r}: ...}}, e.g. "
            f'{{"{key}": "{EXAMPLES[key]}"}}',
            code="invalid_trigger",
        )
    for param, where in body.bindings.items():
        roots = BINDING_ROOTS[body.kind]
        if not any(where == r or (r.endswith(".") and where.startswith(r)) for r in roots):
            raise UsageError(
                f"binding {param}={where!r}: a {body.kind} event offers {', '.join(roots)}",
                code="invalid_trigger",
            )
    watched = (
        body.source["pipeline"] if body.kind == "run_succeeded"
        else _artifact_name(body.source["artifact"])[0] if body.kind == "artifact"
        else None
    )  # fmt: skip
    if watched == body.pipeline:
        raise UsageError(
            f"trigger {body.name!r} would run {body.pipeline!r} whenever {body.pipeline!r} "
            "succeeds, forever; run another pipeline",
            code="invalid_trigger",
        )
    try:
        with ctx.metadata.session() as session:
            pipeline = q.get_pipeline(session, ctx.tenant, body.pipeline)
            if body.version is not None:
                q.resolve_version(session, ctx.tenant, body.pipeline, body.version)
            if watched is not None:
                q.get_pipeline(session, ctx.tenant, watched)
            if session.scalar(
                select(Trigger.id).where(Trigger.tenant == ctx.tenant, Trigger.name == body.name)
            ):
                raise _exists(body.name, ctx.tenant)
            row = Trigger(
                id=new_id(), tenant=ctx.tenant, name=body.name, kind=body.kind,
                source=dict(body.source), pipeline_id=pipeline.id, version=body.version,
                parameters=dict(body.parameters), bindings=dict(body.bindings),
                paused=body.paused, watermark=now, created_at=now, created_by=ctx.actor,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return _document(session, row)
    except DbIntegrityError:
        raise _exists(body.name, ctx.tenant) from None


def _exists(name: str, tenant: str) -> ConflictError:
    return ConflictError(
        f"trigger {name!r} already exists in tenant {tenant!r}; choose another name, or delete "
        f"it first ('argosy triggers delete {name}')",
        code="trigger_exists",
    )


def list_triggers(
    ctx: ServiceContext, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.Trigger]:
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        query = select(Trigger).where(Trigger.tenant == ctx.tenant)
        if after is not None:
            query = query.where(Trigger.id < after)
        rows = session.scalars(query.order_by(Trigger.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        return api.Page[api.Trigger](
            items=[_document(session, t) for t in kept], next_cursor=next_cursor
        )


def get_trigger(ctx: ServiceContext, name: str) -> api.Trigger:
    with ctx.metadata.session() as session:
        return _document(session, _get(session, ctx.tenant, name))


def set_paused(ctx: ServiceContext, name: str, paused: bool, now: datetime) -> api.Trigger:
    """Pause (act on no event) or resume (idempotent both ways). Resuming records ``now``:
    events from while the trigger was paused never fire it, and a webhook delivery to a
    paused trigger is refused (409), so its sender can retry it after the resume."""
    with ctx.metadata.session() as session:
        row = _get(session, ctx.tenant, name)
        if paused != row.paused:
            row.paused = paused
            if not paused:
                row.resumed_at = row.watermark = now
        return _document(session, row)


def delete_trigger(ctx: ServiceContext, name: str) -> None:
    """Delete the trigger and its fire history (the runs it started are kept)."""
    with ctx.metadata.session() as session:
        row = _get(session, ctx.tenant, name)
        session.execute(delete(TriggerFire).where(TriggerFire.trigger_id == row.id))
        session.delete(row)


def list_fires(
    ctx: ServiceContext, name: str, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.TriggerFire]:
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        row = _get(session, ctx.tenant, name)
        query = select(TriggerFire).where(TriggerFire.trigger_id == row.id)
        if after is not None:
            query = query.where(TriggerFire.id < after)
        rows = session.scalars(query.order_by(TriggerFire.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        return api.Page[api.TriggerFire](
            items=[_fire_document(f) for f in kept], next_cursor=next_cursor
        )


def webhook(
    ctx: ServiceContext,
    name: str,
    body: bytes,
    headers: dict[str, str],
    secret_of: Callable[[str], str | None],
) -> api.TriggerFire:
    """A webhook delivery for trigger ``name``: checked against the tenant secret the trigger
    names (signature, freshness), then acted on once per delivery id — a replay answers the
    fire of the first delivery (``replayed``) and starts nothing."""
    from argosy.webhooks import SignatureError, verify

    with ctx.metadata.session() as session:
        trigger = _get(session, ctx.tenant, name)
        if trigger.kind != "webhook":
            raise SignatureError(
                f"trigger {name!r} is a {trigger.kind} trigger, not a webhook",
                code="not_a_webhook",
            )
        secret_name = trigger.source["secret"]
    secret = secret_of(secret_name)
    if not secret:
        raise SignatureError(
            f"the tenant has no secret {secret_name!r} for trigger {name!r}; an owner sets it "
            f"with 'argosy secrets set {secret_name}'",
            code="webhook_secret_missing",
        )
    delivery = verify(secret, body, headers)
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        raise UsageError("the webhook's body is not JSON", code="webhook_body") from None
    event = {"body": doc}
    with ctx.metadata.session() as session:
        trigger = _get(session, ctx.tenant, name)
        if trigger.paused:
            raise ConflictError(f"trigger {name!r} is paused", code="trigger_paused")
        fired = _fire(session, trigger, f"webhook:{delivery}", event)
        if fired is not None:
            return _fire_document(fired)
    with ctx.metadata.session() as session:
        earlier = session.scalar(
            select(TriggerFire).where(
                TriggerFire.trigger_id == trigger.id,
                TriggerFire.event_key == f"webhook:{delivery}",
            )
        )
        assert earlier is not None
        return _fire_document(earlier, replayed=True)


# -- firing ------------------------------------------------------------------------------------
def _lookup(event: dict[str, Any], where: str) -> Any:
    value: Any = event
    for part in where.split("."):
        if not isinstance(value, dict) or part not in value:
            raise UsageError(f"the event has no {where!r}", code="binding_missing")
        value = value[part]
    return value


def _fire(
    session: Session, trigger: Trigger, event_key: str, event: dict[str, Any]
) -> TriggerFire | None:
    """Record the event and create its run (or record why not), once: ``None`` when the event
    had been acted on already (here or by another instance)."""
    fire = TriggerFire(
        id=new_id(), tenant=trigger.tenant, trigger_id=trigger.id, event_key=event_key,
        run_id=None, outcome="created", detail=None, created_at=q.now(),
        created_by=f"trigger:{trigger.name}",
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(fire)
            session.flush()  # the unique (trigger, event) key fails here if it fired already
    except DbIntegrityError:
        return None
    try:
        with session.begin_nested():
            params = dict(trigger.parameters)
            params.update({p: _lookup(event, w) for p, w in trigger.bindings.items()})
            pipeline = session.get_one(Pipeline, trigger.pipeline_id)
            version = q.resolve_version(session, trigger.tenant, pipeline.name, trigger.version)
            run = queue_run(session, version, params, trigger.created_by)
            run.trigger_id = trigger.id
            session.add(
                RunTag(
                    id=new_id(), tenant=trigger.tenant, run_id=run.id, key="trigger",
                    value=trigger.name, created_at=run.created_at, created_by=run.created_by,
                )
            )  # fmt: skip
            session.flush()
            fire.run_id = run.id
    except ArgosyError as exc:
        fire.outcome, fire.detail = "failed", str(exc)
    session.flush()
    return fire


def _run_event(session: Session, run: Run, store: ArtifactStore | None) -> dict[str, Any]:
    """What a succeeded run offers: its outputs (small JSON values, else their references),
    its id and parameters."""
    outputs: dict[str, Any] = {}
    ids = dict(run.outputs or {})
    arts = {a.id: a for a in session.scalars(select(Artifact).where(Artifact.id.in_(ids.values())))}
    for name, aid in ids.items():
        art = arts.get(aid)
        if art is None:
            continue
        value = artifact_value(art, store)
        outputs[name] = (
            value if value is not None else f"{art.run_id}/{art.node_path}/{art.output_name}"
        )
    return {"run": {"id": run.id, "parameters": dict(run.parameters or {})}, "outputs": outputs}


def scan(
    metadata: MetadataStore,
    now: datetime,
    store_of: Callable[[str], ArtifactStore] | None = None,
) -> int:
    """Act on the run and model events since each active trigger's watermark; returns how
    many runs were created. ``store_of(tenant)`` reads outputs' values (else only inline
    ones are passed as values)."""
    created = 0
    with metadata.session() as session:
        ids = session.scalars(
            select(Trigger.id).where(Trigger.paused.is_(False), Trigger.kind.in_(SCANNED))
        ).all()
    for trigger_id in ids:
        try:
            with metadata.session() as session:
                trigger = session.get(Trigger, trigger_id)
                if trigger is None or trigger.paused:
                    continue
                store = store_of(trigger.tenant) if store_of is not None else None
                created += _scan_one(session, trigger, now, store)
        except ArgosyError as exc:  # one trigger's trouble never stops the others
            log.error("trigger %s: %s", trigger_id, exc)
    return created


def _scan_one(
    session: Session, trigger: Trigger, now: datetime, store: ArtifactStore | None
) -> int:
    since = (q.as_utc(trigger.watermark) or now) - OVERLAP
    done = set(
        session.scalars(
            select(TriggerFire.event_key).where(
                TriggerFire.trigger_id == trigger.id, TriggerFire.created_at >= since - OVERLAP
            )
        )
    )
    created = 0
    floor = max(t for t in (q.as_utc(trigger.created_at), q.as_utc(trigger.resumed_at)) if t)
    events: list[tuple[str, dict[str, Any]]] = []
    if trigger.kind == "artifact":
        events = _artifact_events(session, trigger, since, floor, now, store, done)
    elif trigger.kind == "run_succeeded":
        source = session.scalar(
            select(Pipeline.id).where(
                Pipeline.tenant == trigger.tenant, Pipeline.name == trigger.source["pipeline"]
            )
        )
        runs = session.scalars(
            select(Run)
            .where(
                Run.tenant == trigger.tenant, Run.pipeline_id == source,
                Run.status == RunStatus.SUCCEEDED, Run.finished_at > since,
                Run.finished_at >= floor, Run.finished_at <= now,
            )
            .order_by(Run.finished_at)
        ).all()  # fmt: skip
        events = [
            (f"run:{run.id}", _run_event(session, run, store))
            for run in runs
            if f"run:{run.id}" not in done  # acted on already: its outputs are not read again
        ]
    else:
        model = session.scalar(
            select(RegisteredModel.id).where(
                RegisteredModel.tenant == trigger.tenant,
                RegisteredModel.name == trigger.source["model"],
            )
        )
        versions = session.scalars(
            select(ModelVersionRow)
            .where(ModelVersionRow.model_id == model, ModelVersionRow.created_at > since)
            .where(ModelVersionRow.created_at >= floor)
            .order_by(ModelVersionRow.version)
        ).all()
        for v in versions:
            if f"model:{v.id}" in done:
                continue
            art = session.get_one(Artifact, v.artifact_id)
            events.append(
                (
                    f"model:{v.id}",
                    {
                        "model": trigger.source["model"],
                        "version": v.version,
                        "artifact": f"{art.run_id}/{art.node_path}/{art.output_name}",
                        "run": {"id": v.run_id},
                    },
                )
            )
    for key, event in events:
        fired = _fire(session, trigger, key, event)
        if fired is not None and fired.run_id is not None:
            created += 1
    trigger.watermark = now
    return created


def _artifact_name(name: str) -> tuple[str, str, str]:
    """``PIPELINE/NODE/OUTPUT`` (a node path may hold ``/`` itself) -> its three parts."""
    pipeline, _, rest = name.partition("/")
    node, _, output = rest.rpartition("/")
    if not (pipeline and node and output):
        raise UsageError(
            f"artifact {name!r}: name it PIPELINE/NODE/OUTPUT, e.g. ingest/clean/output "
            "(argosy artifacts list shows them)",
            code="invalid_trigger",
        )
    return pipeline, node, output


def _artifact_events(
    session: Session,
    trigger: Trigger,
    since: datetime,
    floor: datetime,
    now: datetime,
    store: ArtifactStore | None,
    done: set[str],
) -> list[tuple[str, dict[str, Any]]]:
    """New versions of the named artifact not acted on yet (``done``): each one whose content
    differs from the artifact of the same name before it (a re-run or a cache hit with the
    same bytes is not one)."""
    pipeline_name, node, output = _artifact_name(trigger.source["artifact"])
    pipeline = session.scalar(
        select(Pipeline.id).where(Pipeline.tenant == trigger.tenant, Pipeline.name == pipeline_name)
    )
    named = (
        select(Artifact)
        .join(Run, Run.id == Artifact.run_id)
        .where(
            Artifact.tenant == trigger.tenant, Run.pipeline_id == pipeline,
            Artifact.node_path == node, Artifact.output_name == output,
        )
    )  # fmt: skip
    found = session.scalars(
        named.where(
            Artifact.created_at > since, Artifact.created_at >= floor, Artifact.created_at <= now
        ).order_by(Artifact.id)
    ).all()
    events: list[tuple[str, dict[str, Any]]] = []
    for art in found:
        if f"artifact:{art.id}" in done:
            continue
        before = session.scalar(
            named.where(Artifact.id < art.id).order_by(Artifact.id.desc()).limit(1)
        )
        if before is not None and before.sha256 == art.sha256:
            continue  # the same content again
        ref = f"{art.run_id}/{art.node_path}/{art.output_name}"
        value = artifact_value(art, store)
        event = {
            "artifact": ref,
            "digest": art.sha256,
            "value": value if value is not None else ref,
            "run": {"id": art.run_id},
        }
        events.append((f"artifact:{art.id}", event))
    return events
