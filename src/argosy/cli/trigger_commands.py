"""``argosy triggers ...``: rules that run a pipeline on an event, on a server (like schedules,
they are acted on by the server).

``--on`` says which event: ``run-succeeded:PIPELINE``, ``webhook:SECRET`` (the tenant secret
that signs deliveries), ``model:MODEL`` (a new version registered) or
``artifact:PIPELINE/NODE/OUTPUT`` (the named artifact made with new content).
``--bind PARAM=WHERE`` takes a parameter's value from the event (``outputs.NAME``, ``run.id``,
``body.FIELD``, ``version``, ``artifact``, ``digest``, ``value``, ...).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from argosy.cli.options import Format, OutputOpt, ServerOpt

if TYPE_CHECKING:
    from argosy.client.client import Client

KINDS = {
    "run-succeeded": "run_succeeded", "webhook": "webhook", "model": "model_version",
    "artifact": "artifact",
}  # fmt: skip
EVENTS = "run-succeeded:PIPELINE, webhook:SECRET, model:MODEL or artifact:PIPELINE/NODE/OUTPUT"


def _event(on: str) -> tuple[str, dict[str, str]]:
    from argosy.errors import UsageError

    kind, sep, what = on.partition(":")
    if not sep or kind not in KINDS or not what:
        raise UsageError(f"--on {on!r}: write {EVENTS}")
    found = KINDS[kind]
    from argosy.service.triggers import SOURCE_KEYS

    return found, {SOURCE_KEYS[found]: what}


def create(
    client: Client,
    name: str,
    on: str,
    pipeline: str,
    version: str | None,
    params: list[str],
    file_params: dict[str, Any],
    binds: list[str],
    paused: bool,
    json_output: bool,
) -> None:
    from pydantic import ValidationError

    from argosy import api
    from argosy.cli.commands import emit_json, err, parse_params
    from argosy.errors import UsageError

    kind, source = _event(on)
    text = parse_params(params)
    parameters = {**file_params, **{k: _json_or_text(v) for k, v in text.items()}}
    bindings = parse_params(binds)
    try:
        body = api.TriggerCreate(
            name=name, kind=kind, source=source, pipeline=pipeline,  # type: ignore[arg-type]
            version=version, parameters=parameters, bindings=bindings, paused=paused,
        )  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UsageError(f"trigger {where}: {first['msg']}") from None
    trigger = client.create_trigger(body)
    if json_output:
        emit_json(trigger)
        return
    hook = (
        f"; deliveries go to POST {client.url}{trigger.webhook_path}"
        if trigger.webhook_path
        else ""
    )
    err.print(
        f"trigger {trigger.name}: {on} -> run {pipeline}{hook}", highlight=False, markup=False
    )


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def list_triggers(client: Client, json_output: bool) -> None:
    from argosy.cli.commands import emit_json, iso, out, table_of

    found = client.list_triggers()
    if json_output:
        emit_json({"triggers": [t.model_dump(mode="json") for t in found]})
        return
    table = table_of("trigger", "on", "runs", "state", "created")
    for t in found:
        on = f"{t.kind}:{next(iter(t.source.values()))}"
        table.add_row(t.name, on, t.pipeline, "paused" if t.paused else "active", iso(t.created_at))
    out.print(table)


def show(client: Client, name: str, json_output: bool) -> None:
    from argosy.cli.commands import emit_json, iso, out, table_of

    trigger = client.get_trigger(name)
    fires = client.trigger_fires(name)
    if json_output:
        emit_json({**trigger.model_dump(mode="json"),
                   "fires": [f.model_dump(mode="json") for f in fires]})  # fmt: skip
        return
    out.print(
        f"trigger {trigger.name}: {trigger.kind} {json.dumps(trigger.source)} -> "
        f"{trigger.pipeline} {json.dumps(trigger.parameters)} bind {json.dumps(trigger.bindings)}",
        highlight=False, markup=False,
    )  # fmt: skip
    table = table_of("at", "event", "outcome", "run", "detail")
    for f in fires:
        table.add_row(iso(f.at), f.event, f.outcome, f.run_id or "", f.detail or "")
    out.print(table)


def register(app: typer.Typer, remote: Any, param_file_loader: Any) -> None:
    """Add ``argosy triggers`` to ``app``; ``remote(server, command)`` gives a client."""
    triggers_app = typer.Typer(
        help="Triggers that run a pipeline on an event, on a server.", no_args_is_help=True
    )
    app.add_typer(triggers_app, name="triggers")

    @triggers_app.command("create")
    def triggers_create(
        name: Annotated[str, typer.Argument(metavar="NAME")],
        on: Annotated[
            str,
            typer.Option(
                "--on",
                metavar="EVENT",
                help=EVENTS,
            ),
        ],
        pipeline: Annotated[
            str, typer.Option("--pipeline", metavar="PIPELINE", help="what to run")
        ],
        version: Annotated[str | None, typer.Option(metavar="VERSION")] = None,
        param: Annotated[
            list[str] | None, typer.Option("--param", "-p", metavar="NAME=VALUE")
        ] = None,
        param_file: Annotated[str | None, typer.Option("--param-file", metavar="FILE")] = None,
        bind: Annotated[
            list[str] | None,
            typer.Option("--bind", metavar="PARAM=WHERE", help="a parameter from the event"),
        ] = None,
        paused: Annotated[bool, typer.Option("--paused")] = False,
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """Create a trigger: run PIPELINE when the --on event happens (once per event)."""
        from pathlib import Path

        file_params = param_file_loader(Path(param_file) if param_file else None)
        client = remote(server, "triggers create")
        with client:
            create(client, name, on, pipeline, version, param or [], file_params, bind or [],
                   paused, output == Format.json)  # fmt: skip

    @triggers_app.command("list")
    def triggers_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
        """The tenant's triggers."""
        client = remote(server, "triggers list")
        with client:
            list_triggers(client, output == Format.json)

    @triggers_app.command("show")
    def triggers_show(
        name: Annotated[str, typer.Argument(metavar="NAME")],
        output: OutputOpt = Format.text,
        server: ServerOpt = None,
    ) -> None:
        """A trigger and the events it acted on (the run each started, or why none was)."""
        client = remote(server, "triggers show")
        with client:
            show(client, name, output == Format.json)

    def set_paused(name: str, paused: bool, server: str | None) -> None:
        from argosy.cli.commands import err

        client = remote(server, "triggers pause" if paused else "triggers resume")
        with client:
            if paused:
                client.pause_trigger(name)
            else:
                client.resume_trigger(name)
        said = "paused" if paused else "resumed (events while paused are not caught up)"
        err.print(f"trigger {name} {said}", highlight=False)

    @triggers_app.command("pause")
    def triggers_pause(
        name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
    ) -> None:
        """Stop acting on events (webhook deliveries are refused meanwhile)."""
        set_paused(name, True, server)

    @triggers_app.command("resume")
    def triggers_resume(
        name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
    ) -> None:
        """Act on events again; those from while it was paused never fire it."""
        set_paused(name, False, server)

    @triggers_app.command("delete")
    def triggers_delete(
        name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
    ) -> None:
        """Delete a trigger (the runs it started are kept)."""
        from argosy.cli.commands import err

        client = remote(server, "triggers delete")
        with client:
            client.delete_trigger(name)
        err.print(f"trigger {name} deleted", highlight=False)
