"""The model registry: named models of a tenant, their numbered versions (each one artifact of
one run), aliases that point at a version, and the history of every alias move.

Registering reads what a prediction service needs to know without running any of the
model's code: the input schema comes from the training data's Parquet footer (the nearest
upstream data frame in the model's lineage, or the one named), less the ``target`` column
(the output schema) and the excluded ones; the metrics come from the producing task's
``Metrics`` outputs (else the run's). The ``signature`` is the sha256 of both schemas, so two
versions with the same signature accept the same requests.

An alias moves only by :func:`move_alias` (through :mod:`argosy.service.promotions`, which
applies the tenant's promotion policy) and :func:`demote`, each writing an alias event (who,
when, why, from which version to which; for an approved request also who asked) in the same
transaction, so :func:`alias_at` answers "what was in production on the 3rd?" from the events
alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from argosy import api
from argosy.errors import ConflictError, NotFoundError, UsageError
from argosy.ids import new_id
from argosy.sdk.types import METRICS
from argosy.service.context import ServiceContext
from argosy.service.documents import artifact_value, metrics_of, must_utc, task_documents
from argosy.service.paging import decode_cursor, paged
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import (
    Artifact,
    ModelAlias,
    ModelAliasEvent,
    ModelVersionRow,
    Pipeline,
    PipelineVersion,
    RegisteredModel,
    Run,
    TaskInput,
)

LINEAGE_DEPTH = 8  # how far up the registry looks for the training data
_ALIAS = re.compile(api.ALIAS_PATTERN)
_ARROW_TYPES = {
    "double": "float64", "float": "float32", "halffloat": "float32", "int64": "int64",
    "int32": "int32", "int16": "int16", "int8": "int8", "uint64": "uint64", "uint32": "uint32",
    "uint16": "uint16", "uint8": "uint8", "bool": "bool", "string": "string",
    "large_string": "string", "date32[day]": "date", "binary": "binary", "large_binary": "binary",
}  # fmt: skip


# -- references ---------------------------------------------------------------------------------
def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME@VERSION`` -> (name, alias-or-version or None)."""
    name, sep, which = ref.partition("@")
    if not name or (sep and not which):
        raise UsageError(f"{ref!r} is no model reference; write NAME, NAME@ALIAS or NAME@VERSION")
    return name, which or None


def model_row(session: Session, tenant: str, name: str, *, lock: bool = False) -> RegisteredModel:
    query = select(RegisteredModel).where(
        RegisteredModel.tenant == tenant, RegisteredModel.name == name
    )
    if lock:
        query = query.with_for_update()
    found: RegisteredModel | None = session.scalar(query)
    if found is None:
        raise NotFoundError(
            f"no model {name!r} in tenant {tenant!r}; list them with 'argosy models list', or "
            f"register one with 'argosy models register {name} RUN/NODE/OUTPUT'",
            code="model_not_found",
        )
    return found


def version_row(session: Session, model: RegisteredModel, which: str | None) -> ModelVersionRow:
    """A version by number or alias (``None``: the newest)."""
    query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id)
    if which is None or which == "latest":
        found = session.scalar(query.order_by(ModelVersionRow.version.desc()).limit(1))
        if found is None:
            raise NotFoundError(f"model {model.name!r} has no version yet", code="model_empty")
        return found
    if which.isdigit():
        found = session.scalar(query.where(ModelVersionRow.version == int(which)))
        if found is None:
            raise NotFoundError(
                f"model {model.name!r} has no version {which}; list them with "
                f"'argosy models show {model.name}'",
                code="model_version_not_found",
            )
        return found
    alias = session.scalar(
        select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == which)
    )
    if alias is None:
        known = _aliases(session, [model.id]).get(model.id, {})
        raise NotFoundError(
            f"model {model.name!r} has no alias {which!r}; its aliases are: "
            f"{', '.join(sorted(known)) or '(none)'}; promote a version with 'argosy models "
            f"promote {model.name} VERSION --alias {which}'",
            code="model_alias_not_found",
        )
    return session.get_one(ModelVersionRow, alias.version_id)


def _aliases(session: Session, model_ids: list[str]) -> dict[str, dict[str, int]]:
    """model id -> {alias: version number}."""
    rows = session.execute(
        select(ModelAlias.model_id, ModelAlias.alias, ModelVersionRow.version)
        .join(ModelVersionRow, ModelVersionRow.id == ModelAlias.version_id)
        .where(ModelAlias.model_id.in_(model_ids))
        .order_by(ModelAlias.alias)
    )
    found: dict[str, dict[str, int]] = {}
    for model_id, alias, version in rows:
        found.setdefault(model_id, {})[alias] = version
    return found


# -- documents ----------------------------------------------------------------------------------
def _ref(a: Artifact) -> str:
    return f"{a.run_id}/{a.node_path}/{a.output_name}"


def _version_document(
    session: Session, model: RegisteredModel, row: ModelVersionRow, aliases: dict[str, int]
) -> api.ModelVersion:
    art = session.get_one(Artifact, row.artifact_id)
    run = session.get_one(Run, row.run_id)
    digest = session.get_one(PipelineVersion, run.pipeline_version_id).digest
    pipeline = session.get_one(Pipeline, run.pipeline_id).name
    training = session.get(Artifact, row.training_data_id) if row.training_data_id else None
    return api.ModelVersion(
        id=row.id, model=model.name, version=row.version, artifact_id=art.id,
        artifact=_ref(art), sha256=art.sha256, format=art.format, type=art.type,
        run_id=run.id, pipeline=pipeline, pipeline_digest=digest,
        training_data=_ref(training) if training is not None else None,
        input_schema=api.ModelSchema.model_validate(row.input_schema) if row.input_schema else None,
        output_schema=(
            api.ModelSchema.model_validate(row.output_schema) if row.output_schema else None
        ),
        signature=row.signature, metrics=row.metrics or {},
        aliases=sorted(a for a, v in aliases.items() if v == row.version),
        description=row.description, created_at=must_utc(row.created_at),
        created_by=row.created_by,
    )  # fmt: skip


def _model_document(session: Session, model: RegisteredModel) -> api.Model:
    latest = session.scalar(
        select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model.id)
    )
    return api.Model(
        id=model.id, name=model.name, created_at=must_utc(model.created_at),
        created_by=model.created_by, latest_version=latest,
        aliases=_aliases(session, [model.id]).get(model.id, {}),
    )  # fmt: skip


def event_document(model: str, e: ModelAliasEvent) -> api.AliasEvent:
    return api.AliasEvent(
        id=e.id, model=model, alias=e.alias, action=e.action,  # type: ignore[arg-type]
        version=e.version, previous_version=e.previous_version, reason=e.reason,
        at=must_utc(e.created_at), by=e.created_by, requested_by=e.requested_by,
        approved_by=e.created_by if e.approval_id else None, approval=e.approval_id,
    )  # fmt: skip


# -- schemas --------------------------------------------------------------------------------
def _training_data(session: Session, tenant: str, model_art: Artifact) -> Artifact | None:
    """The data frame the model was fitted on: the nearest upstream Parquet input, following
    the model through steps that only pass it on (inputs of the model's own format).
    ``None`` when there is none, or several equally near (the caller names one)."""
    frontier = [model_art]
    seen: set[str] = set()
    for _ in range(LINEAGE_DEPTH):
        tables: dict[str, tuple[str, Artifact]] = {}
        following: list[Artifact] = []
        for art in frontier:
            inputs = session.execute(
                select(TaskInput.name, Artifact)
                .join(Artifact, Artifact.id == TaskInput.artifact_id)
                .where(TaskInput.task_id == art.task_id, TaskInput.tenant == tenant)
            ).all()
            for name, parent in inputs:
                if parent.id in seen:
                    continue
                seen.add(parent.id)
                if parent.format == "parquet":
                    tables[parent.id] = (name, parent)
                elif parent.format == art.format:
                    following.append(parent)
        if tables:
            if len(tables) == 1:
                return next(iter(tables.values()))[1]
            named = [a for n, a in tables.values() if n.startswith("train")]
            return named[0] if len(named) == 1 else None
        if not following:
            return None
        frontier = following
    return None


def _columns(ctx: ServiceContext, data: Artifact) -> list[api.ColumnSchema]:
    """The columns of a Parquet artifact, from its footer (no row is read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="argosy-schema-") as tmp:
        path = Path(tmp) / "data.parquet"
        ctx.store.copy_blob_to(data.sha256, path)
        schema = pq.read_schema(path)
        nulls: dict[str, int] = {}
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                stats = col.statistics
                if stats is not None and stats.has_null_count:
                    nulls[col.path_in_schema] = nulls.get(col.path_in_schema, 0) + stats.null_count
    columns = []
    for field in schema:
        if field.name.startswith("__index_level_"):
            continue
        kind = str(field.type)
        if pa.types.is_timestamp(field.type):
            kind = "datetime"
        columns.append(
            api.ColumnSchema(
                name=field.name, type=_ARROW_TYPES.get(kind, "datetime" if kind == "datetime" else "any"),  # type: ignore[arg-type]
                nullable=nulls.get(field.name, 0) > 0,
            )
        )  # fmt: skip
    return columns


def _schemas(
    ctx: ServiceContext, session: Session, model_art: Artifact, body: api.ModelVersionCreate
) -> tuple[Artifact | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(training data, input schema, output schema) as stored."""

    def given(columns: list[api.ColumnSchemaIn]) -> dict[str, Any]:
        cols = [api.ColumnSchema.model_validate(c.model_dump()) for c in columns]
        return api.ModelSchema(columns=cols, source="given at registration").model_dump()

    if body.input_schema is not None:
        out = given(body.output_schema) if body.output_schema is not None else None
        return None, given(body.input_schema), out
    if body.training_data is not None:
        data: Artifact | None = q.get_artifact(session, ctx.tenant, body.training_data)
        assert data is not None
        if data.format != "parquet":
            raise UsageError(
                f"training data {_ref(data)} is {data.type} ({data.format}), not a data frame; "
                "name a DataFrame or Arrow table output, or give input_schema"
            )
    else:
        data = _training_data(session, ctx.tenant, model_art)
    if data is None:
        if body.target or body.exclude:
            raise UsageError(
                f"found no single training data frame upstream of {_ref(model_art)}; name it "
                "with --training-data RUN/NODE/OUTPUT",
                code="training_data_not_found",
            )
        return None, None, None
    columns = _columns(ctx, data)
    names = [c.name for c in columns]
    for wanted in [*([body.target] if body.target else []), *body.exclude]:
        if wanted not in names:
            raise UsageError(
                f"the training data {_ref(data)} has no column {wanted!r}; its columns are: "
                f"{', '.join(names)}",
                code="unknown_column",
            )
    source = f"training data {_ref(data)}"
    inputs = [c for c in columns if c.name != body.target and c.name not in body.exclude]
    outputs = [c for c in columns if c.name == body.target]
    in_doc = api.ModelSchema(columns=inputs, source=source).model_dump()
    out_doc = api.ModelSchema(columns=outputs, source=source).model_dump() if outputs else None
    if body.output_schema is not None:
        out_doc = given(body.output_schema)
    return data, in_doc, out_doc


def signature_of(input_schema: dict[str, Any] | None, output_schema: dict[str, Any] | None) -> str:
    def cols(doc: dict[str, Any] | None) -> list[Any]:
        return [[c["name"], c["type"], c["nullable"]] for c in (doc or {}).get("columns", [])]

    text = json.dumps({"input": cols(input_schema), "output": cols(output_schema)})
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _metrics(ctx: ServiceContext, session: Session, art: Artifact) -> dict[str, Any]:
    """The producing task's ``Metrics`` outputs (one: its values), else the run's metrics."""
    own = session.scalars(
        select(Artifact).where(Artifact.task_id == art.task_id, Artifact.type == METRICS)
    ).all()
    values = {a.output_name: artifact_value(a, ctx.store) for a in own}
    if len(values) == 1:
        found = next(iter(values.values()))
        return dict(found) if isinstance(found, dict) else {}
    if values:
        return values
    run = session.get_one(Run, art.run_id)
    return metrics_of(task_documents(session, run, ctx.store))


# -- use cases ------------------------------------------------------------------------------
def register(
    ctx: ServiceContext, name: str, body: api.ModelVersionCreate
) -> api.ModelVersionRegistered:
    """The artifact as the next version of model ``name`` (created on first use); the same
    artifact again returns its existing version (``created`` false)."""
    try:
        return _register(ctx, name, body)
    except DbIntegrityError:  # another registration took the model or the number meanwhile
        return _register(ctx, name, body)


def _register(
    ctx: ServiceContext, name: str, body: api.ModelVersionCreate
) -> api.ModelVersionRegistered:
    with ctx.metadata.session() as session:
        art = q.get_artifact(session, ctx.tenant, body.artifact)
        run = session.get_one(Run, art.run_id)
        if run.status != "succeeded":
            raise ConflictError(
                f"run {run.id} is {run.status}: register models of succeeded runs only",
                code="run_not_succeeded",
            )
        model = session.scalar(
            select(RegisteredModel)
            .where(RegisteredModel.tenant == ctx.tenant, RegisteredModel.name == name)
            .with_for_update()
        )
        if model is None:
            q.ensure_tenant(session, ctx.tenant, ctx.actor)
            model = RegisteredModel(
                id=new_id(), tenant=ctx.tenant, name=name, created_at=q.now(),
                created_by=ctx.actor,
            )  # fmt: skip
            session.add(model)
            session.flush()
        existing = session.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.model_id == model.id, ModelVersionRow.artifact_id == art.id
            )
        )
        if existing is not None:
            doc = _version_document(
                session, model, existing, _aliases(session, [model.id]).get(model.id, {})
            )
            return api.ModelVersionRegistered(version=doc, created=False)
        data, input_schema, output_schema = _schemas(ctx, session, art, body)
        number = (
            session.scalar(
                select(func.max(ModelVersionRow.version)).where(
                    ModelVersionRow.model_id == model.id
                )
            )
            or 0
        ) + 1
        row = ModelVersionRow(
            id=new_id(), tenant=ctx.tenant, model_id=model.id, version=number,
            artifact_id=art.id, run_id=run.id, sha256=art.sha256,
            training_data_id=data.id if data is not None else None,
            input_schema=input_schema, output_schema=output_schema,
            signature=signature_of(input_schema, output_schema),
            metrics=body.metrics if body.metrics is not None else _metrics(ctx, session, art),
            description=body.description, created_at=q.now(), created_by=ctx.actor,
        )  # fmt: skip
        session.add(row)
        session.flush()
        doc = _version_document(session, model, row, {})
        return api.ModelVersionRegistered(version=doc, created=True)


def list_models(
    ctx: ServiceContext, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.Model]:
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        query = select(RegisteredModel).where(RegisteredModel.tenant == ctx.tenant)
        if after is not None:
            query = query.where(RegisteredModel.id < after)
        rows = session.scalars(query.order_by(RegisteredModel.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        items = [_model_document(session, m) for m in kept]
    return api.Page[api.Model](items=items, next_cursor=next_cursor)


def get_model(ctx: ServiceContext, name: str) -> api.Model:
    with ctx.metadata.session() as session:
        return _model_document(session, model_row(session, ctx.tenant, name))


def list_versions(
    ctx: ServiceContext, name: str, *, limit: int = 50, cursor: str | None = None
) -> api.Page[api.ModelVersion]:
    """The model's versions, newest first."""
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        model = model_row(session, ctx.tenant, name)
        query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id)
        if after is not None:
            query = query.where(ModelVersionRow.id < after)
        rows = session.scalars(query.order_by(ModelVersionRow.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        aliases = _aliases(session, [model.id]).get(model.id, {})
        items = [_version_document(session, model, r, aliases) for r in kept]
    return api.Page[api.ModelVersion](items=items, next_cursor=next_cursor)


def get_version(ctx: ServiceContext, name: str, which: str | None) -> api.ModelVersion:
    """A version by number, by alias, or the newest (``None`` or ``latest``)."""
    with ctx.metadata.session() as session:
        model = model_row(session, ctx.tenant, name)
        row = version_row(session, model, which)
        return _version_document(
            session, model, row, _aliases(session, [model.id]).get(model.id, {})
        )


def check_alias(alias: str) -> None:
    if not _ALIAS.match(alias):
        raise UsageError(
            f"{alias!r} is no alias name: start with a lowercase letter, then letters, digits, "
            "'-' or '_' (e.g. staging, production)",
            code="invalid_alias",
        )


def move_alias(
    session: Session, ctx: ServiceContext, model: RegisteredModel, alias: str,
    target: ModelVersionRow, reason: str | None, *, requested_by: str | None = None,
    approval_id: str | None = None,
) -> ModelAliasEvent:  # fmt: skip
    """Point ``alias`` at ``target`` and record the move in the caller's transaction (the
    model locked). Only :mod:`argosy.service.promotions` calls it: it applies the tenant's
    promotion policy first (an alias that needs approval moves when a request is approved)."""
    row = session.scalar(
        select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
    )
    previous = session.get_one(ModelVersionRow, row.version_id).version if row else None
    now = q.now()
    if row is None:
        row = ModelAlias(
            id=new_id(), tenant=ctx.tenant, model_id=model.id, alias=alias,
            version_id=target.id, created_at=now, created_by=ctx.actor,
        )  # fmt: skip
        session.add(row)
    else:
        row.version_id = target.id
    event = ModelAliasEvent(
        id=new_id(), tenant=ctx.tenant, model_id=model.id, alias=alias, action="promote",
        version_id=target.id, version=target.version, previous_version=previous,
        reason=reason, created_at=now, created_by=ctx.actor, requested_by=requested_by,
        approval_id=approval_id,
    )  # fmt: skip
    session.add(event)
    session.flush()
    return event


def points_at(session: Session, model: RegisteredModel, alias: str) -> str | None:
    """The version id ``alias`` points at now (``None``: no such alias)."""
    found: str | None = session.scalar(
        select(ModelAlias.version_id).where(
            ModelAlias.model_id == model.id, ModelAlias.alias == alias
        )
    )
    return found


def demote(ctx: ServiceContext, name: str, alias: str, reason: str | None) -> api.AliasEvent:
    """Remove ``alias`` from the model (nothing serves it until a promotion) and record it."""
    check_alias(alias)
    with ctx.metadata.session() as session:
        model = model_row(session, ctx.tenant, name, lock=True)
        row = session.scalar(
            select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
        )
        if row is None:
            raise NotFoundError(
                f"model {name!r} has no alias {alias!r} to demote", code="model_alias_not_found"
            )
        previous = session.get_one(ModelVersionRow, row.version_id).version
        session.delete(row)
        event = ModelAliasEvent(
            id=new_id(), tenant=ctx.tenant, model_id=model.id, alias=alias, action="demote",
            version_id=None, version=None, previous_version=previous, reason=reason,
            created_at=q.now(), created_by=ctx.actor,
        )  # fmt: skip
        session.add(event)
        session.flush()
        return event_document(model.name, event)


def last_event(
    session: Session, model_id: str, alias: str, at: datetime | None
) -> ModelAliasEvent | None:
    query = select(ModelAliasEvent).where(
        ModelAliasEvent.model_id == model_id, ModelAliasEvent.alias == alias
    )
    if at is not None:
        query = query.where(ModelAliasEvent.created_at <= at)
    found: ModelAliasEvent | None = session.scalar(
        query.order_by(ModelAliasEvent.created_at.desc(), ModelAliasEvent.id.desc()).limit(1)
    )
    return found


def alias_at(ctx: ServiceContext, name: str, alias: str, at: datetime | None) -> api.AliasState:
    """The version ``alias`` pointed at, at ``at`` (default: now), from the alias events."""
    check_alias(alias)
    moment = at if at is not None else q.now()
    with ctx.metadata.session() as session:
        model = model_row(session, ctx.tenant, name)
        last = last_event(session, model.id, alias, moment)
        event = event_document(model.name, last) if last is not None else None
        return api.AliasState(
            model=model.name, alias=alias, at=must_utc(moment),
            version=event.version if event else None, since=event.at if event else None,
            event=event,
        )  # fmt: skip


def history(
    ctx: ServiceContext,
    name: str,
    *,
    alias: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> api.Page[api.AliasEvent]:
    """Every promotion and demotion of the model (of one alias), newest first."""
    after = decode_cursor(cursor)
    with ctx.metadata.session() as session:
        model = model_row(session, ctx.tenant, name)
        query = select(ModelAliasEvent).where(ModelAliasEvent.model_id == model.id)
        if alias is not None:
            query = query.where(ModelAliasEvent.alias == alias)
        if after is not None:
            query = query.where(ModelAliasEvent.id < after)
        rows = session.scalars(query.order_by(ModelAliasEvent.id.desc()).limit(limit + 1)).all()
        kept, next_cursor = paged(rows, limit)
        items = [event_document(model.name, e) for e in kept]
    return api.Page[api.AliasEvent](items=items, next_cursor=next_cursor)
