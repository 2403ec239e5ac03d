"""The KFP v2beta1 API that ``kfp.Client`` uses, mapped onto Argosy's application layer.

One function per KFP call, each taking the request's :class:`ServiceContext` (tenant =
KFP namespace) and returning the KFP JSON document (snake_case keys, as the KFP API server
writes them). The routes (:mod:`argosy.server.routes.kfp`) authorize and call one of these.

| KFP | Argosy |
|---|---|
| pipeline (``pipeline_id``) | pipeline (its name is the id) |
| pipeline version (``pipeline_version_id``) | pipeline version (its id); an upload is imported from IR |
| experiment | a name only: accepted and echoed, not stored (runs are not grouped) |
| run (``run_id``) | run; ``pipeline_spec`` runs are pushed first; terminate = cancel |
| recurring run (``recurring_run_id``) | schedule (its name is the id); cron without seconds |
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from argosy import api
from argosy.errors import UsageError
from argosy.interop.kfp.ir import ARGOSY_TO_PARAMETER, cast
from argosy.interop.kfp.load import import_ir
from argosy.service import ServiceContext, pipelines, runs, schedules

DEFAULT_EXPERIMENT = "Default"
_STATES = {
    "pending": "PENDING",
    "running": "RUNNING",
    "succeeded": "SUCCEEDED",
    "failed": "FAILED",
    "cancelled": "CANCELED",
}
_SLUG = re.compile(r"[^a-z0-9-]+")


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _slug(text: str) -> str:
    """A KFP display name as an Argosy name (lowercase letters, digits and '-')."""
    slug = _SLUG.sub("-", text.strip().lower()).strip("-")[:63].strip("-")
    if not slug or not slug[0].isalpha():
        slug = ("p-" + slug)[:63].strip("-")
    return slug


def _namespace(ctx: ServiceContext, namespace: str | None) -> None:
    if namespace and namespace != ctx.tenant:
        raise UsageError(
            f"namespace {namespace!r} is not this tenant ({ctx.tenant!r}): a KFP namespace is an "
            f"Argosy tenant; point kfp.Client at .../api/v1/tenants/{namespace}/kfp",
            code="namespace_mismatch",
        )


def _page(items: list[Any], token: str | None, size: int | None) -> tuple[list[Any], str]:
    """A page of ``items`` (offset tokens), and the next page's token ('' at the end)."""
    start = int(token) if token and token.isdigit() else 0
    size = size or 100
    return items[start : start + size], str(start + size) if start + size < len(items) else ""


def _all(fetch: Any) -> list[Any]:
    found: list[Any] = []
    cursor = None
    while True:
        page = fetch(cursor)
        found.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            return found


def _matches(doc: dict[str, Any], filter_text: str | None) -> bool:
    """KFP's ``filter`` (JSON predicates): EQUALS on a field; other operations are refused."""
    if not filter_text:
        return True
    try:
        predicates = json.loads(filter_text).get("predicates") or []
    except (ValueError, AttributeError):
        raise UsageError(f"filter {filter_text!r} is not KFP filter JSON") from None
    for p in predicates:
        op = str(p.get("operation") or p.get("op") or "EQUALS").upper()
        value = p.get("string_value", p.get("stringValue", p.get("int_value")))
        if op not in ("EQUALS", "1"):
            raise UsageError(f"filter operation {op} is not supported (only EQUALS)")
        if doc.get(str(p.get("key"))) != value:
            return False
    return True


# -- health ------------------------------------------------------------------------------------
def healthz() -> dict[str, Any]:
    return {"multi_user": False, "pipeline_store": "database"}


# -- pipelines ---------------------------------------------------------------------------------
def _pipeline(ctx: ServiceContext, p: api.Pipeline, description: str = "") -> dict[str, Any]:
    return {
        "pipeline_id": p.name,
        "display_name": p.name,
        "name": p.name,
        "description": description,
        "created_at": _time(p.created_at),
        "namespace": ctx.tenant,
    }


def _version(v: api.PipelineVersion, *, with_spec: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pipeline_id": v.pipeline,
        "pipeline_version_id": v.id,
        "display_name": v.tags[0] if v.tags else v.digest[:19],
        "name": v.tags[0] if v.tags else v.id,
        "description": "",
        "created_at": _time(v.created_at),
    }
    if with_spec and v.spec is not None:
        doc["pipeline_spec"] = v.spec
    return doc


def _push(
    ctx: ServiceContext, text: str, source: str, pipeline: str | None, version: str | None
) -> api.PipelineVersionPushed:
    imported = import_ir(text, source=source)
    spec = imported.compiled.spec
    if pipeline and pipeline != spec.name:
        spec = spec.model_copy(update={"name": pipeline})
    tag = _slug(version) if version else None
    return pipelines.push_version(ctx, spec.name, spec.model_dump(mode="json"), tag)


def upload_pipeline(
    ctx: ServiceContext, text: str, filename: str, name: str | None, namespace: str | None
) -> dict[str, Any]:
    """``POST /pipelines/upload``: import the IR file as the first version of a pipeline."""
    _namespace(ctx, namespace)
    pushed = _push(ctx, text, filename, _slug(name) if name else None, None)
    return _pipeline(ctx, pipelines.get_pipeline(ctx, pushed.version.pipeline))


def upload_version(
    ctx: ServiceContext, text: str, filename: str, pipeline_id: str, name: str | None
) -> dict[str, Any]:
    """``POST /pipelines/upload_version``: another version of an existing pipeline."""
    pipelines.get_pipeline(ctx, pipeline_id)  # 404 when there is none
    pushed = _push(ctx, text, filename, pipeline_id, name)
    return _version(pushed.version)


def list_pipelines(
    ctx: ServiceContext, page_token: str | None, page_size: int | None, filter_text: str | None,
    namespace: str | None,
) -> dict[str, Any]:  # fmt: skip
    _namespace(ctx, namespace)
    found = _all(lambda c: pipelines.list_pipelines(ctx, cursor=c, limit=200))
    docs = [d for d in (_pipeline(ctx, p) for p in found) if _matches(d, filter_text)]
    page, next_token = _page(docs, page_token, page_size)
    return {"pipelines": page, "total_size": len(docs), "next_page_token": next_token}


def get_pipeline(ctx: ServiceContext, pipeline_id: str) -> dict[str, Any]:
    return _pipeline(ctx, pipelines.get_pipeline(ctx, pipeline_id))


def list_versions(
    ctx: ServiceContext, pipeline_id: str, page_token: str | None, page_size: int | None,
    filter_text: str | None,
) -> dict[str, Any]:  # fmt: skip
    found = _all(lambda c: pipelines.list_versions(ctx, pipeline_id, cursor=c, limit=200))
    docs = [d for d in (_version(v) for v in found) if _matches(d, filter_text)]
    page, next_token = _page(docs, page_token, page_size)
    return {"pipeline_versions": page, "total_size": len(docs), "next_page_token": next_token}


def get_version(ctx: ServiceContext, pipeline_id: str, version_id: str) -> dict[str, Any]:
    return _version(pipelines.get_version(ctx, pipeline_id, version_id), with_spec=True)


# -- experiments -------------------------------------------------------------------------------
def _experiment(ctx: ServiceContext, name: str) -> dict[str, Any]:
    return {
        "experiment_id": name,
        "display_name": name,
        "description": "",
        "namespace": ctx.tenant,
        "storage_state": "AVAILABLE",
    }


def create_experiment(ctx: ServiceContext, body: dict[str, Any]) -> dict[str, Any]:
    _namespace(ctx, body.get("namespace"))
    name = str(body.get("display_name") or "").strip()
    if not name:
        raise UsageError("an experiment needs a display_name")
    return _experiment(ctx, name)


def list_experiments(
    ctx: ServiceContext, filter_text: str | None, namespace: str | None
) -> dict[str, Any]:
    """Experiments are not stored: a filter on a name finds that name (so ``kfp.Client``'s
    ``create_experiment`` and ``get_experiment(experiment_name=...)`` work); else Default."""
    _namespace(ctx, namespace)
    names = [DEFAULT_EXPERIMENT]
    if filter_text:
        try:
            predicates = json.loads(filter_text).get("predicates") or []
        except (ValueError, AttributeError):
            raise UsageError(f"filter {filter_text!r} is not KFP filter JSON") from None
        names = [
            str(p.get("string_value", p.get("stringValue")))
            for p in predicates
            if p.get("key") in ("display_name", "name")
        ] or names
    docs = [_experiment(ctx, n) for n in names]
    return {"experiments": docs, "total_size": len(docs), "next_page_token": ""}


def get_experiment(ctx: ServiceContext, experiment_id: str) -> dict[str, Any]:
    return _experiment(ctx, experiment_id)


# -- runs --------------------------------------------------------------------------------------
def _run(run: api.Run, *, display_name: str | None = None) -> dict[str, Any]:
    state = _STATES.get(run.status, "RUNTIME_STATE_UNSPECIFIED")
    if run.cancel_requested and run.status in ("pending", "running"):
        state = "CANCELING"
    doc: dict[str, Any] = {
        "run_id": run.id,
        "experiment_id": DEFAULT_EXPERIMENT,
        "display_name": display_name or f"{run.pipeline} {run.id}",
        "storage_state": "AVAILABLE",
        "pipeline_version_reference": {
            "pipeline_id": run.pipeline,
            "pipeline_version_id": run.pipeline_version_id,
        },
        "runtime_config": {"parameters": run.parameters},
        "created_at": _time(run.created_at),
        "scheduled_at": _time(run.started_at or run.created_at),
        "finished_at": _time(run.finished_at),
        "state": state,
    }
    if run.error:
        doc["error"] = {"code": 2, "message": run.error}
    if run.schedule:
        doc["recurring_run_id"] = run.schedule
    return doc


def _typed(
    ctx: ServiceContext, pipeline: str, version: str | None, values: dict[str, Any]
) -> dict[str, Any]:
    """Runtime parameters as the pipeline declares them (KFP clients may send 5.0 for 5)."""
    if not values:
        return {}
    spec = pipelines.get_version(ctx, pipeline, version).spec or {}
    declared = spec.get("parameters") or {}
    return {
        k: cast(v, ARGOSY_TO_PARAMETER.get((declared.get(k) or {}).get("type", "")))
        for k, v in values.items()
    }


def _target(ctx: ServiceContext, body: dict[str, Any]) -> tuple[str, str | None]:
    """(pipeline, version) a run or recurring run names: a pushed version, or inline IR."""
    reference = body.get("pipeline_version_reference") or {}
    if reference.get("pipeline_id"):
        return str(reference["pipeline_id"]), reference.get("pipeline_version_id") or None
    inline = body.get("pipeline_spec")
    if not inline:
        raise UsageError(
            "the run names no pipeline: give pipeline_version_reference or pipeline_spec"
        )
    documents = (
        [inline["pipeline_spec"], inline.get("platform_spec") or {}]
        if "pipeline_spec" in inline
        else [inline]
    )
    text = "\n---\n".join(json.dumps(d) for d in documents if d)
    pushed = _push(ctx, text, str(body.get("display_name") or "pipeline_spec"), None, None)
    return pushed.version.pipeline, pushed.version.digest


def create_run(ctx: ServiceContext, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /runs``: run a pushed version (``pipeline_version_reference``) or an inline
    ``pipeline_spec`` (pushed first), with ``runtime_config.parameters``."""
    pipeline, version = _target(ctx, body)
    parameters = (body.get("runtime_config") or {}).get("parameters") or {}
    create = api.RunCreate(
        pipeline=pipeline, version=version, parameters=_typed(ctx, pipeline, version, parameters)
    )
    run = runs.create_run(ctx, create).run
    return _run(run, display_name=body.get("display_name"))


def get_run(ctx: ServiceContext, run_id: str) -> dict[str, Any]:
    return _run(runs.get_run(ctx, run_id))


def list_runs(
    ctx: ServiceContext, page_token: str | None, page_size: int | None, namespace: str | None
) -> dict[str, Any]:
    _namespace(ctx, namespace)
    page = runs.list_runs(ctx, limit=min(max(page_size or 50, 1), 200), cursor=page_token or None)
    return {
        "runs": [_run(r) for r in page.items],
        "total_size": len(page.items),
        "next_page_token": page.next_cursor or "",
    }


def terminate_run(ctx: ServiceContext, run_id: str) -> dict[str, Any]:
    runs.cancel_run(ctx, run_id)
    return {}


# -- recurring runs ----------------------------------------------------------------------------
def _cron(trigger: dict[str, Any]) -> str:
    """A KFP trigger as a 5-field cron (KFP's cron has seconds first)."""
    if "cron_schedule" in trigger:
        fields = str((trigger["cron_schedule"] or {}).get("cron", "")).split()
        if len(fields) == 6:
            if fields[0] not in ("0", "*"):
                raise UsageError("a cron with seconds other than 0 is not supported (Argosy "
                                 "schedules fire on minutes)")  # fmt: skip
            fields = fields[1:]
        return " ".join(fields)
    if "periodic_schedule" in trigger:
        seconds = int((trigger["periodic_schedule"] or {}).get("interval_second") or 0)
        minutes, rest = divmod(seconds, 60)
        if rest == 0 and minutes and 60 % minutes == 0:
            return f"*/{minutes} * * * *" if minutes > 1 else "* * * * *"
        if rest == 0 and minutes % 60 == 0 and 24 % (minutes // 60) == 0:
            return f"0 */{minutes // 60} * * *"
        raise UsageError(f"a periodic schedule every {seconds}s has no cron equivalent; use a "
                         "cron schedule")  # fmt: skip
    raise UsageError("a recurring run needs a trigger (cron_schedule or periodic_schedule)")


def _recurring(s: api.Schedule) -> dict[str, Any]:
    return {
        "recurring_run_id": s.name,
        "display_name": s.name,
        "pipeline_version_reference": {"pipeline_id": s.pipeline, "pipeline_version_id": s.version},
        "runtime_config": {"parameters": s.parameters},
        "max_concurrency": str(s.max_concurrent_runs),
        "trigger": {"cron_schedule": {"cron": "0 " + s.cron}},
        "mode": "DISABLE" if s.paused else "ENABLE",
        "status": "DISABLED" if s.paused else "ENABLED",
        "no_catchup": s.catch_up == "none",
        "created_at": _time(s.created_at),
        "namespace": None,
        "experiment_id": DEFAULT_EXPERIMENT,
    }


def create_recurring_run(
    ctx: ServiceContext, body: dict[str, Any], now: datetime
) -> dict[str, Any]:
    _namespace(ctx, body.get("namespace"))
    pipeline, version = _target(ctx, body)
    parameters = (body.get("runtime_config") or {}).get("parameters") or {}
    create = api.ScheduleCreate(
        name=_slug(str(body.get("display_name") or pipeline)),
        pipeline=pipeline,
        version=version,
        cron=_cron(body.get("trigger") or {}),
        parameters=_typed(ctx, pipeline, version, parameters),
        max_concurrent_runs=int(body.get("max_concurrency") or 1),
        catch_up="none" if body.get("no_catchup") else "latest",
        paused=str(body.get("mode", "ENABLE")).upper() == "DISABLE",
    )
    return _recurring(schedules.create_schedule(ctx, create, now))


def list_recurring_runs(
    ctx: ServiceContext, page_token: str | None, page_size: int | None, namespace: str | None
) -> dict[str, Any]:
    _namespace(ctx, namespace)
    found = _all(lambda c: schedules.list_schedules(ctx, cursor=c, limit=200))
    docs = [_recurring(s) for s in found]
    page, next_token = _page(docs, page_token, page_size)
    return {"recurringRuns": page, "recurring_runs": page, "total_size": len(docs),
            "next_page_token": next_token}  # fmt: skip


def get_recurring_run(ctx: ServiceContext, recurring_run_id: str) -> dict[str, Any]:
    return _recurring(schedules.get_schedule(ctx, recurring_run_id))


def set_recurring_run_enabled(
    ctx: ServiceContext, recurring_run_id: str, enabled: bool, now: datetime
) -> dict[str, Any]:
    schedules.set_paused(ctx, recurring_run_id, not enabled, now)
    return {}


def delete_recurring_run(ctx: ServiceContext, recurring_run_id: str) -> dict[str, Any]:
    schedules.delete_schedule(ctx, recurring_run_id)
    return {}
