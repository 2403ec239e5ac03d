"""Schedules on a server: cron rules that create runs (``argosy schedules ...``).

Schedules live on a server only: its leading instance fires them. Each function takes a
:class:`~argosy.client.client.Client`; ``-p`` values are typed by the pipeline version's
parameter annotations, as for runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from argosy.api import ScheduleCreate
from argosy.cli.commands import emit_json, err, iso, out, parse_params, table_of
from argosy.errors import UsageError

if TYPE_CHECKING:
    from argosy.client.client import Client


def _schedule_parameters(
    client: Client, pipeline: str, version: str | None, params: list[str]
) -> dict[str, Any]:
    """``-p`` values typed by the pipeline version's parameter annotations (as for runs)."""
    text = parse_params(params)
    if not text:
        return {}
    from argosy.spec.models import PipelineSpec
    from argosy.spec.parameters import parse_value

    ref = version
    if ref is None:
        latest = client.get_pipeline(pipeline).latest_version
        if latest is None:
            raise UsageError(f"pipeline {pipeline!r} has no version; push one first")
        ref = latest.digest
    doc = client.get_version(pipeline, ref).spec
    if doc is None:  # an older server: send the text as JSON where it is JSON
        return {k: _json_or_text(v) for k, v in text.items()}
    spec = PipelineSpec.model_validate(doc)
    values = {}
    for name, value in text.items():
        if name not in spec.parameters:
            raise UsageError(
                f"pipeline {pipeline!r} has no parameter {name!r}; its parameters are: "
                f"{', '.join(spec.parameters) or '(none)'}"
            )
        values[name] = parse_value(name, spec.parameters[name], value)
    return values


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def create_schedule(
    client: Client,
    *,
    name: str,
    pipeline: str,
    version: str | None,
    cron: str,
    timezone: str,
    params: list[str],
    max_concurrent_runs: int,
    catch_up: str,
    catch_up_limit: int,
    paused: bool,
    json_output: bool,
    file_params: dict[str, Any] | None = None,
) -> None:
    """``file_params`` (``--param-file``) are sent as they are (the server checks them against
    the pipeline's annotations); ``-p`` values override them."""
    from pydantic import ValidationError

    parameters = {**(file_params or {}), **_schedule_parameters(client, pipeline, version, params)}
    try:
        body = ScheduleCreate(
            name=name,
            pipeline=pipeline,
            version=version,
            cron=cron,
            timezone=timezone,
            parameters=parameters,
            max_concurrent_runs=max_concurrent_runs,
            catch_up=catch_up,  # type: ignore[arg-type]
            catch_up_limit=catch_up_limit,
            paused=paused,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UsageError(f"schedule {where}: {first['msg']}") from None
    schedule = client.create_schedule(body)
    if json_output:
        emit_json(schedule.model_dump(mode="json"))
        return
    err.print(
        f"schedule {schedule.name}: {schedule.pipeline} at '{schedule.cron}' "
        f"({schedule.timezone}); next run {iso(schedule.next_fire_at) or 'none'}",
        highlight=False,
        markup=False,
    )


def list_schedules(client: Client, json_output: bool) -> None:
    schedules = client.list_schedules()
    if json_output:
        emit_json({"schedules": [s.model_dump(mode="json") for s in schedules]})
        return
    table = table_of("schedule", "pipeline", "version", "cron", "timezone", "state", "next", "last")
    for s in schedules:
        table.add_row(
            s.name, s.pipeline, s.version or "(newest)", s.cron, s.timezone,
            "paused" if s.paused else "active", iso(s.next_fire_at), iso(s.last_fire_at),
        )  # fmt: skip
    out.print(table)


def show_schedule(client: Client, name: str, json_output: bool) -> None:
    schedule = client.get_schedule(name)
    fires = client.schedule_fires(name)
    if json_output:
        emit_json(
            {
                **schedule.model_dump(mode="json"),
                "fires": [f.model_dump(mode="json") for f in fires],
            }
        )
        return
    state = "paused" if schedule.paused else "active"
    out.print(
        f"schedule {schedule.name}  {schedule.pipeline} {schedule.version or '(newest)'}  "
        f"'{schedule.cron}' {schedule.timezone}  {state}  next {iso(schedule.next_fire_at)}",
        highlight=False,
        markup=False,
    )
    out.print(f"parameters {json.dumps(schedule.parameters)}", highlight=False, markup=False)
    table = table_of("fire time", "outcome", "run", "detail")
    for f in fires:
        table.add_row(iso(f.fire_time), f.outcome, f.run_id or "", f.detail or "")
    out.print(table)


def schedule_action(client: Client, name: str, action: str) -> None:
    if action == "pause":
        client.pause_schedule(name)
        err.print(f"schedule {name} paused", highlight=False)
    elif action == "resume":
        schedule = client.resume_schedule(name)
        err.print(
            f"schedule {name} resumed; next run {iso(schedule.next_fire_at) or 'none'}",
            highlight=False,
        )
    else:
        client.delete_schedule(name)
        err.print(f"schedule {name} deleted (its runs are kept)", highlight=False)
