"""Pipeline pages: the list, a pipeline's versions with the graph of one, the launch form
generated from its parameter types, and schedules.

The launch form has one field per parameter, typed by its annotation (a number field for
``int``/``float``, a checkbox for ``bool``, a JSON text area for lists, dicts and other
values, a text field otherwise). Its script posts the fields as text; the server parses each
as ``argosy run -p NAME=VALUE`` does (:func:`argosy.spec.parameters.parse_value`) and creates
the run through :func:`argosy.service.runs.create_run` — the API's own checks — so a message
names the field it is about and shows beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field
from starlette.responses import JSONResponse, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.errors import ArgosyError, UsageError
from argosy.server.identity import ContextDep, Principal, TenantDep
from argosy.server.routes import service_context
from argosy.server.ui import graph
from argosy.server.ui.pages import render, tenant_url, viewer
from argosy.server.ui.runs import home_of
from argosy.server.ui.security import Page, PageProblem, as_page_errors, status_of
from argosy.service import pipelines, schedules
from argosy.spec.models import ParameterSpec, PipelineSpec
from argosy.spec.parameters import parse_value

router = APIRouter(include_in_schema=False)

PipelineName = Annotated[str, Path(pattern=api.NAME_PATTERN)]
NEXT_FIRES = 3


@dataclass(frozen=True)
class FormField:
    """One field of the launch form."""

    name: str
    kind: str  # number | integer | checkbox | json | text
    type: str
    required: bool
    default: str  # the default as the field's initial text

    @property
    def input_id(self) -> str:
        return f"param-{self.name}"


def _default_text(p: ParameterSpec) -> str:
    import json

    if p.required or p.default is None:
        return ""
    if isinstance(p.default, str):
        return p.default
    if isinstance(p.default, bool):
        return "true" if p.default else "false"
    return json.dumps(p.default)


def form_fields(spec: PipelineSpec) -> list[FormField]:
    """The launch form's fields for ``spec``'s parameters, in declaration order."""
    kinds = {"int": "integer", "float": "number", "bool": "checkbox", "str": "text"}
    return [
        FormField(name, kinds.get(p.type, "json"), p.type, p.required, _default_text(p))
        for name, p in spec.parameters.items()
    ]


def parse_form(spec: PipelineSpec, values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(parameters, errors by field) of the form's text values; an empty optional field keeps
    the parameter's default."""
    parameters: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in values:
        if name not in spec.parameters:
            problems[name] = f"pipeline {spec.name!r} has no parameter {name!r}"
    for name, p in spec.parameters.items():
        text = values.get(name, "")
        if text == "" and p.type != "str":
            if p.required:
                problems[name] = f"parameter {name!r} is required"
            continue
        if text == "" and not p.required:
            continue
        try:
            parameters[name] = parse_value(name, p, text)
        except UsageError as exc:
            problems[name] = str(exc)
    return parameters, problems


class LaunchForm(api.Request):
    """The launch form as its script sends it: each field's text, and the version."""

    version: str | None = Field(default=None, max_length=255)
    values: dict[str, str] = Field(default_factory=dict, max_length=500)


@router.get("/t/{tenant}/pipelines", name="ui_pipelines")
def pipelines_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.PIPELINE_READ)],
    context: ContextDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Pipelines, newest first, with their newest version."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        page = pipelines.list_pipelines(ctx, limit=50, cursor=cursor or None)
    view = viewer(request, context, principal, tenant)
    return render(request, "pipelines.html", view, page=page)


@router.get("/t/{tenant}/pipelines/{pipeline}", name="ui_pipeline")
def pipeline_page(
    request: Request,
    pipeline: PipelineName,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.PIPELINE_READ)],
    context: ContextDep,
    version: Annotated[str | None, Query(max_length=255)] = None,
    collapse: Annotated[list[str] | None, Query(max_length=512)] = None,
) -> Response:
    """A pipeline's versions (who pushed them, when, tags), the graph of one (default: the
    newest) and, for editors, the form that launches it."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        found = pipelines.get_pipeline(ctx, pipeline)
        versions = pipelines.list_versions(ctx, pipeline, limit=50)
        chosen = pipelines.get_version(ctx, pipeline, version or None)
    spec = PipelineSpec.model_validate(chosen.spec)
    drawing = graph.draw(spec, collapse or ())
    view = viewer(request, context, principal, tenant)
    return render(
        request, "pipeline.html", view, pipeline=found, versions=versions, chosen=chosen,
        spec=spec, drawing=drawing, fields=form_fields(spec), collapsed=list(collapse or ()),
    )  # fmt: skip


@router.post("/t/{tenant}/pipelines/{pipeline}/launch", name="ui_launch", status_code=201)
def launch(
    request: Request,
    body: LaunchForm,
    pipeline: PipelineName,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_CREATE)],
    context: ContextDep,
) -> Response:
    """Create a run from the launch form: 201 with the run page's address, or 422 with a
    message for each field that is wrong."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        chosen = pipelines.get_version(ctx, pipeline, body.version or None)
    spec = PipelineSpec.model_validate(chosen.spec)
    parameters, problems = parse_form(spec, body.values)
    if problems:
        raise PageProblem(
            422, "; ".join(problems.values()), code="invalid_parameters",
            extra={"errors": problems},
        )  # fmt: skip
    create = api.RunCreate(pipeline=pipeline, version=chosen.id, parameters=parameters)
    try:
        run = home_of(request).create(ctx, create)
    except ArgosyError as exc:
        status, code = status_of(exc)
        if status >= 500:
            raise
        message = str(exc)
        fields = {n: message for n in spec.parameters if f"parameter {n!r}" in message}
        raise PageProblem(status, message, code=code, extra={"errors": fields}) from None
    location = tenant_url(tenant, "runs", run.id)
    return JSONResponse({"run_id": run.id, "location": location}, status_code=201)


def next_fires(schedule: api.Schedule, count: int = NEXT_FIRES) -> list[datetime]:
    """The schedule's next ``count`` fire times (none while paused)."""
    from argosy.ops.schedules import next_fire_after

    if schedule.paused or schedule.next_fire_at is None:
        return []
    found = [schedule.next_fire_at]
    try:
        while len(found) < count:
            found.append(next_fire_after(schedule.cron, schedule.timezone, found[-1]))
    except ArgosyError:
        pass
    return [f.astimezone(UTC) for f in found]


@router.get("/t/{tenant}/schedules", name="ui_schedules")
def schedules_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.SCHEDULE_READ)],
    context: ContextDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Schedules with their next fire times; editors create, pause, resume and delete."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        page = schedules.list_schedules(ctx, limit=50, cursor=cursor or None)
        names = [p.name for p in pipelines.list_pipelines(ctx, limit=200).items]
    view = viewer(request, context, principal, tenant)
    fires = {s.name: next_fires(s) for s in page.items}
    return render(request, "schedules.html", view, page=page, fires=fires, pipelines=names)
