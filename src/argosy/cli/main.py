"""``argosy``: run pipelines locally or on a server, inspect runs, tasks, logs and artifacts.

With ``--server URL`` (or ARGOSY_SERVER) the commands that have a server side act on that
server through :class:`argosy.client.client.Client`; without it they act on the local state
folder, as before.

Exit codes: 0 the run succeeded (or the command did its job); 1 the run failed or was
cancelled; 2 usage or validation error (nothing was run); 3 cannot reach or authenticate to
a server. ``--output json`` prints exactly one JSON document on stdout; progress and errors
go to stderr. Importing this module stays cheap: commands import what they need.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from argosy.cli.options import Format, OutputOpt, ServerOpt, WideOpt

_APP_OPTIONS: dict[str, Any] = {
    "name": "argosy",
    "help": "Repeatable ML pipelines in plain Python: run them locally or on an Argosy server, "
    "inspect runs, logs, artifacts.",
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "add_completion": False,
    "rich_markup_mode": None,
}
app = typer.Typer(**_APP_OPTIONS)
runs_app = typer.Typer(help="List, show, resume and cancel runs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="List, download and upload artifacts.", no_args_is_help=True)
pipelines_app = typer.Typer(
    help="Push pipeline versions to a server and list them.", no_args_is_help=True
)
schedules_app = typer.Typer(
    help="Cron schedules that create runs on a server.", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(schedules_app, name="schedules")


_global_server: str | None = None

ParamFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--param-file",
        metavar="FILE",
        help="parameters from a .json or .yaml mapping (-p values override them)",
    ),
]
RunNameOpt = Annotated[
    str | None, typer.Option("--name", help="a name for the run (e.g. the build)")
]
RunTagOpt = Annotated[
    list[str] | None,
    typer.Option("--tag", metavar="KEY=VALUE", help="a tag for the run (repeatable)"),
]
RunDescriptionOpt = Annotated[str | None, typer.Option("--description", help="what the run is for")]


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"argosy {version('argosy')}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    server: ServerOpt = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="print the version"),
    ] = False,
) -> None:
    """Repeatable ML pipelines in plain Python: run them locally or on an Argosy server."""
    global _global_server
    _global_server = server


@contextmanager
def importing() -> Iterator[None]:
    """Import a command's modules with the cyclic garbage collector off, then freeze them.

    Importing the run path (SQLAlchemy's and pydantic's classes) makes ~0.5 M objects that
    live as long as the process; with the collector on, each quarter more of them sets off a
    full collection that scans them all again (~30 ms of every ``argosy run``). Frozen, later
    collections skip them; the collector is on again after the imports, whatever they raised.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()


def _settings(**overrides: Any) -> Any:
    from argosy.config import load_settings

    return load_settings(**overrides)


def _backend(server: str | None = None, *, settings: Any = None, **overrides: Any) -> Any:
    """Where the command acts: the server (--server, the global --server, or ARGOSY_SERVER)
    through its API, else the local state folder (:mod:`argosy.client.backend`); ``settings``
    if the command has read them already."""
    from argosy.client.backend import open_backend

    if settings is None:
        settings = _settings(server=server or _global_server, **overrides)
    return open_backend(settings)


def _require_remote(server: str | None, command: str) -> Any:
    """A client of the server, for the commands that exist only there (schedules, tenants)."""
    settings = _settings(server=server or _global_server)
    if not settings.server:
        from argosy.errors import UsageError

        raise UsageError(
            f"'argosy {command}' works on a server: pass --server URL or set ARGOSY_SERVER"
        )
    from argosy.client.http import open_client

    return open_client(settings)


@app.command()
def run(
    target: Annotated[
        str,
        typer.Argument(
            metavar="FILE[:PIPELINE]",
            help="pipeline file, and the pipeline's name if it has several",
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help="a pipeline parameter (repeatable); parsed by its annotation",
        ),
    ] = None,
    output: OutputOpt = Format.text,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="cancel the rest of the run when a task fails")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="run every task; reuse no earlier outputs")
    ] = False,
    max_cpus: Annotated[
        float | None, typer.Option(help="CPUs the local executor may use at once (default: all)")
    ] = None,
    max_memory: Annotated[
        str | None, typer.Option(help="memory it may use at once, e.g. 8Gi (default: all)")
    ] = None,
    max_gpus: Annotated[
        int | None, typer.Option(help="GPUs it may use (default: those found)")
    ] = None,
    server: ServerOpt = None,
    version: Annotated[
        str | None,
        typer.Option("--version", metavar="NAME", help="with a server: tag the pushed version"),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="with a server: print the run id and exit at once")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="with a server: no progress, wait and exit with the outcome"),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="do not show the steps' output as they run"),
    ] = False,
    param_file: ParamFileOpt = None,
    name: RunNameOpt = None,
    tag: RunTagOpt = None,
    description: RunDescriptionOpt = None,
) -> None:
    """Compile and run a pipeline locally, or push it to a server and run it there; shows
    progress on stderr and ends with its outputs (exit 1 if the run fails)."""
    with importing():
        from argosy.cli import ci_commands, commands

    file_params = ci_commands.load_param_file(param_file)
    labels = ci_commands.labels(name, tag or [], description)

    settings = _settings(
        server=server or _global_server,
        max_cpus=max_cpus,
        max_memory=max_memory,
        max_gpus=max_gpus,
        fail_fast=fail_fast or None,
        cache=False if no_cache else None,
    )  # read once (~3 ms): the backend's and the compile's
    backend = _backend(settings=settings)
    try:
        code = commands.run_pipeline(
            backend, settings, target, param or [], version=version, fail_fast=fail_fast,
            no_cache=no_cache, detach=detach, wait=wait, json_output=output == Format.json,
            quiet=quiet, file_params=file_params, labels=labels,
        )  # fmt: skip
    finally:
        backend.close()
    raise typer.Exit(code)


@app.command("compile")
def compile_(
    target: Annotated[str, typer.Argument(metavar="FILE[:PIPELINE]")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="write the spec here (.yaml or .json); default: stdout"),
    ] = None,
    to: Annotated[
        str,
        typer.Option(
            "--target", help="argosy (the spec), argo (a WorkflowTemplate) or kfp (KFP v2 IR)"
        ),
    ] = "argosy",
    image: Annotated[
        str | None,
        typer.Option("--image", help="--target argo/kfp: the runtime image (pinned)"),
    ] = None,
) -> None:
    """Compile a pipeline to its portable spec (apiVersion argosy.dev/v1), or with
    --target argo to an Argo Workflows WorkflowTemplate, --target kfp to KFP v2 IR."""
    if to == "kfp":
        from argosy.cli import kfp_commands

        kfp_commands.compile_kfp(_settings(), target, out, image)
        return
    if to == "argo":
        from argosy.cli import kubernetes_commands

        kubernetes_commands.compile_argo(_settings(), target, out, image)
        return
    from argosy.cli import commands

    commands.compile_to(_settings(), target, out)


def _with(server: str | None, act: Any) -> Any:
    """Call ``act(backend)`` on the backend the command acts on, closing it afterwards."""
    backend = _backend(server)
    try:
        return act(backend)
    finally:
        backend.close()


@runs_app.command("list")
def runs_list(
    output: OutputOpt = Format.text,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    status: Annotated[
        str | None,
        typer.Option(
            help="only runs in this status: pending, running, succeeded, failed, cancelled"
        ),
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="only runs of this pipeline")] = None,
    server: ServerOpt = None,
    wide: WideOpt = False,
    name: Annotated[str | None, typer.Option(help="only runs of this name")] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="KEY=VALUE", help="only runs with this tag (repeatable)"),
    ] = None,
) -> None:
    """List runs, newest first."""
    from argosy.cli import commands
    from argosy.service.runs import parse_tags

    if wide:
        commands.use_wide()
    tags = parse_tags(tag or [])
    _with(
        server,
        lambda b: commands.list_runs(
            b, output == Format.json, limit, status, pipeline, name=name, tags=tags
        ),
    )


@runs_app.command("wait")
def runs_wait(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="run id or unique prefix")],
    timeout: Annotated[
        float | None,
        typer.Option(min=0, help="give up after this many seconds (exit 124)"),
    ] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Wait until a run has finished; the exit code is its outcome (0 succeeded, 1 failed or
    cancelled, 124 still going at --timeout); --output json prints the run document."""
    from argosy.cli import ci_commands

    raise typer.Exit(
        _with(server, lambda b: ci_commands.wait_run(b, run_ref, timeout, output == Format.json))
    )


@runs_app.command("show")
def runs_show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="run id or unique prefix")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """Show a run: its tasks, attempts (with reasons, times, resource use) and outputs."""
    from argosy.cli import commands

    if wide:
        commands.use_wide()

    _with(server, lambda b: commands.show_run(b, run_ref, output == Format.json))


@runs_app.command("resume")
def runs_resume(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Continue a local run whose engine stopped (finished tasks are kept, orphans are
    ended); a server resumes its runs itself."""
    from argosy.cli import commands

    raise typer.Exit(
        _with(server, lambda b: commands.resume_run(b, run_ref, output == Format.json))
    )


@runs_app.command("reproduce")
def runs_reproduce(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    allow_drift: Annotated[
        bool, typer.Option("--allow-drift", help="reproduce even if code or packages changed")
    ] = False,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Re-run a run's pipeline version with its parameters and inputs, caching off.

    First reports whether the current code or installed packages differ from what the run
    recorded, and refuses unless --allow-drift. Ends by comparing the outputs.
    """
    from argosy.cli import commands

    settings = _settings()
    raise typer.Exit(
        _with(
            server,
            lambda b: commands.reproduce_run(
                b, settings, run_ref, allow_drift, output == Format.json
            ),
        )
    )


@runs_app.command("diff")
def runs_diff(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B")],
    output: OutputOpt = Format.text,
    all_rows: Annotated[bool, typer.Option("--all", help="also show what is the same")] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            metavar="SECTIONS",
            help="only these sections, e.g. params,metrics,outputs (also inputs, code, packages)",
        ),
    ] = None,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """Parameters, code, packages, input data, outputs and metrics of two runs, side by side:
    what differs first."""
    from argosy.cli import commands

    if wide:
        commands.use_wide()
    _with(
        server,
        lambda b: commands.diff_runs(b, run_a, run_b, output == Format.json, all_rows, only),
    )


@runs_app.command("cancel")
def runs_cancel(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")], server: ServerOpt = None
) -> None:
    """Cancel a run: running attempts are killed (whole process trees), the rest never start."""
    from argosy.cli import commands

    _with(server, lambda b: commands.cancel_run(b, run_ref))


@runs_app.command("retry")
def runs_retry(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    output: OutputOpt = Format.text,
    detach: Annotated[
        bool, typer.Option("--detach", help="print the new run's id and exit at once")
    ] = False,
    server: ServerOpt = None,
) -> None:
    """A new run of a failed or cancelled run's version and parameters that reuses its
    succeeded tasks; followed to its end (exit code = outcome) unless --detach."""
    from argosy.cli import commands

    def retry(b: Any) -> int:
        follow = not detach
        code = commands.retry_run(b, run_ref, follow=follow, json_output=output == Format.json)
        return code

    if detach and not (server or _global_server or _settings().server):
        from argosy.errors import UsageError

        raise UsageError("a local retry runs in this process: drop --detach")
    raise typer.Exit(_with(server, retry))


@app.command()
def logs(
    run_ref: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="a run (with --search: optional)")
    ] = None,
    node: Annotated[
        str | None,
        typer.Argument(metavar="[NODE]", help="only this node path (a mapped node: every item)"),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until the run ends")
    ] = False,
    attempt: Annotated[
        int | None, typer.Option(help="only this attempt number (default: all)")
    ] = None,
    output: OutputOpt = Format.text,
    node_opt: Annotated[
        str | None, typer.Option("--node", metavar="NODE", help="only this node path")
    ] = None,
    server: ServerOpt = None,
    search: Annotated[
        str | None,
        typer.Option(
            "--search",
            "-s",
            metavar="QUERY",
            help="search the tenant's task logs for lines holding every word (newest first)",
        ),
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="--search: only this pipeline")] = None,
    step: Annotated[
        str | None, typer.Option(help="--search: only this node path or step name")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="--search: lines since (ISO time, or 2h, 3d ago)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="--search: lines before (ISO time, or 2h, 3d ago)")
    ] = None,
    stream: Annotated[str | None, typer.Option(help="--search: only out or err")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="--search: lines at most")] = 50,
) -> None:
    """Print the captured stdout/stderr of a run's tasks, with timestamps; with --search, the
    lines of the tenant's task logs that match (of RUN only, if given)."""
    from argosy.cli import commands

    wanted = node or node_opt
    if search is not None:
        from argosy.cli import operations

        _with(server, lambda b: operations.search_logs(
            b, search, run=run_ref, pipeline=pipeline, step=step or wanted, since=since,
            until=until, stream=stream, limit=limit, json_output=output == Format.json,
        ))  # fmt: skip
        return
    if run_ref is None:
        from argosy.errors import UsageError

        raise UsageError("argosy logs needs a RUN (or --search QUERY to search every run)")
    _with(
        server,
        lambda b: commands.show_logs(b, run_ref, wanted, follow, attempt, output == Format.json),
    )


class LineageFormat(StrEnum):
    text = "text"
    json = "json"
    dot = "dot"


@app.command()
def lineage(
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="artifact id, prefix, or RUN/NODE/OUTPUT")
    ],
    down: Annotated[
        bool,
        typer.Option(
            "--down/--up",
            help="what was made from it (--down) or what it came from (--up, default)",
        ),
    ] = False,
    output: Annotated[
        LineageFormat, typer.Option("--output", "-o", help="text (a tree), json, or dot (Graphviz)")
    ] = LineageFormat.text,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """Show where an artifact came from (tasks, inputs, parameters, code, git, packages) or where it went."""
    from argosy.cli import commands

    if wide:
        commands.use_wide()

    _with(server, lambda b: commands.show_lineage(b, ref, down, output.value))


@app.command("schema")
def schema(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="run, task, artifact, lineage, diff, logs, pipeline, version or schedule",
        ),
    ],
) -> None:
    """Print the JSON Schema of a document that --output json prints (and the API answers);
    documents carry schema_version, and changes within a version only add fields."""
    from argosy import api
    from argosy.cli.commands import emit_json
    from argosy.errors import UsageError

    if name not in api.PUBLISHED:
        raise UsageError(f"no document {name!r}; choose one of: {', '.join(api.PUBLISHED)}")
    emit_json(api.json_schema(name))


config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(output: OutputOpt = Format.text) -> None:
    """Every setting, its effective value (secrets redacted) and where it came from."""
    from argosy.cli import commands

    commands.show_config(_settings(), output == Format.json)


@artifacts_app.command("list")
def artifacts_list(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    wide: WideOpt = False,
) -> None:
    """List a run's artifacts (one per task output)."""
    from argosy.cli import commands

    if wide:
        commands.use_wide()

    _with(server, lambda b: commands.list_artifacts(b, run_ref, output == Format.json))


@artifacts_app.command("get")
def artifacts_get(
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="artifact id, prefix, or RUN/NODE/OUTPUT")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="where to write it (a folder, for directory artifacts)")
    ],
    server: ServerOpt = None,
) -> None:
    """Download an artifact's bytes (hash verified) to a path; from a server, the download
    is streamed and an interrupted one continues where it stopped."""
    from argosy.cli import commands

    _with(server, lambda b: commands.get_artifact(b, ref, out))


@artifacts_app.command("upload")
def artifacts_upload(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="a file or a folder")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """Upload a local file or folder (chunked, resumable, sha256-verified; counted against
    the tenant's storage_bytes quota) and print its sha256. 'argosy run --server' uploads
    the files a run's path parameters name by itself."""
    from argosy.cli import commands

    _with(server, lambda b: commands.upload(b, path, output == Format.json))


@pipelines_app.command("push")
def pipelines_push(
    target: Annotated[
        str,
        typer.Argument(
            metavar="FILE[:PIPELINE]",
            help="pipeline file, and the pipeline's name if it has several",
        ),
    ],
    version: Annotated[
        str | None,
        typer.Option("--version", metavar="NAME", help="tag the version with this name"),
    ] = None,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    allow_unpinned: Annotated[
        bool,
        typer.Option("--allow-unpinned", help="push container images that have no digest"),
    ] = False,
) -> None:
    """Compile a pipeline here and store it as an immutable version (on a server: its code
    and environment blobs are uploaded first). Container images are pinned by digest from
    argosy.lock.json (argosy images lock); an image without one is refused. Pushing the same
    content again is harmless; a version name that already names other content is refused
    (exit 2)."""
    from argosy.cli import commands

    settings = _settings()
    _with(
        server,
        lambda b: commands.push_pipeline(
            b, settings, target, version, output == Format.json, allow_unpinned
        ),
    )


@pipelines_app.command("list")
def pipelines_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
    """The pipelines, with their newest version."""
    from argosy.cli import commands

    _with(server, lambda b: commands.list_pipelines(b, output == Format.json))


@pipelines_app.command("versions")
def pipelines_versions(
    pipeline: Annotated[str, typer.Argument(metavar="PIPELINE")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """A pipeline's versions: digest, tags, who pushed it and when."""
    from argosy.cli import commands

    _with(server, lambda b: commands.list_versions(b, pipeline, output == Format.json))


class CatchUpMode(StrEnum):
    none = "none"
    latest = "latest"
    all = "all"


@schedules_app.command("create")
def schedules_create(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    pipeline: Annotated[str, typer.Option("--pipeline", metavar="PIPELINE", help="what to run")],
    cron: Annotated[
        str, typer.Option("--cron", metavar="EXPR", help='when, e.g. "*/5 * * * *" (5 fields)')
    ],
    version: Annotated[
        str | None,
        typer.Option(metavar="VERSION", help="a tag or digest (default: the newest at each run)"),
    ] = None,
    timezone: Annotated[
        str, typer.Option(metavar="TZ", help="the cron's time zone, e.g. Europe/Paris")
    ] = "UTC",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="NAME=VALUE", help="a run parameter (repeatable)"),
    ] = None,
    max_concurrent_runs: Annotated[
        int, typer.Option(help="skip a fire while this many of its runs are unfinished")
    ] = 1,
    catch_up: Annotated[
        CatchUpMode,
        typer.Option(help="fires missed while the server was down: none, the latest, or all"),
    ] = CatchUpMode.latest,
    catch_up_limit: Annotated[int, typer.Option(help="at most this many missed fires")] = 10,
    paused: Annotated[bool, typer.Option("--paused", help="create it paused")] = False,
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
    param_file: ParamFileOpt = None,
) -> None:
    """Create a schedule: the server starts a run of PIPELINE at each cron time."""
    from argosy.cli import ci_commands, schedule_commands

    file_params = ci_commands.load_param_file(param_file)
    client = _require_remote(server, "schedules create")
    with client:
        schedule_commands.create_schedule(
            client, name=name, pipeline=pipeline, version=version, cron=cron, timezone=timezone,
            params=param or [], max_concurrent_runs=max_concurrent_runs,
            catch_up=catch_up.value, catch_up_limit=catch_up_limit, paused=paused,
            json_output=output == Format.json, file_params=file_params,
        )  # fmt: skip


@schedules_app.command("list")
def schedules_list(output: OutputOpt = Format.text, server: ServerOpt = None) -> None:
    """The tenant's schedules, with their next and last fire times."""
    from argosy.cli import schedule_commands

    client = _require_remote(server, "schedules list")
    with client:
        schedule_commands.list_schedules(client, output == Format.json)


@schedules_app.command("show")
def schedules_show(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    output: OutputOpt = Format.text,
    server: ServerOpt = None,
) -> None:
    """A schedule and its recent fires (the run each created, or why none was)."""
    from argosy.cli import schedule_commands

    client = _require_remote(server, "schedules show")
    with client:
        schedule_commands.show_schedule(client, name, output == Format.json)


def _schedule_action(name: str, action: str, server: str | None) -> None:
    from argosy.cli import schedule_commands

    client = _require_remote(server, f"schedules {action}")
    with client:
        schedule_commands.schedule_action(client, name, action)


@schedules_app.command("pause")
def schedules_pause(
    name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
) -> None:
    """Stop creating runs (fires while paused are not caught up)."""
    _schedule_action(name, "pause", server)


@schedules_app.command("resume")
def schedules_resume(
    name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
) -> None:
    """Create runs again from the next cron time."""
    _schedule_action(name, "resume", server)


@schedules_app.command("delete")
def schedules_delete(
    name: Annotated[str, typer.Argument(metavar="NAME")], server: ServerOpt = None
) -> None:
    """Delete a schedule; the runs it created are kept."""
    _schedule_action(name, "delete", server)


@app.command("server")
def server_(
    host: Annotated[
        str | None,
        typer.Option(help="address to listen on (default: ARGOSY_SERVER_HOST, 127.0.0.1)"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port (default: ARGOSY_SERVER_PORT, 8080; 0: any free)")
    ] = None,
    insecure_dev: Annotated[
        bool,
        typer.Option(
            "--insecure-dev",
            help="serve WITHOUT authentication: development only, loopback only (announced)",
        ),
    ] = False,
) -> None:
    """Run the Argosy server (REST API, run execution, schedules) on this machine's state
    folder, or on ARGOSY_DATABASE_URL and ARGOSY_ARTIFACT_URL."""
    from argosy.server.serve import serve

    settings = _settings(
        server_host=host, server_port=port, insecure_dev=True if insecure_dev else None
    )
    serve(settings, host=settings.server_host, port=settings.server_port)


db_app = typer.Typer(
    help="The metadata schema (Alembic migrations): upgrade, current, history.",
    no_args_is_help=True,
)
admin_app = typer.Typer(
    help="Administration: back up, restore, export and import the metadata; encryption keys; the audit log.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")


@db_app.command("upgrade")
def db_upgrade(
    to: Annotated[
        str, typer.Option("--to", metavar="REV", help="the revision to reach (default: head)")
    ] = "head",
    output: OutputOpt = Format.text,
) -> None:
    """Migrate the metadata database (ARGOSY_DATABASE_URL) forward to a revision."""
    from argosy.cli import ops_commands

    ops_commands.db_upgrade(_settings(), to, output == Format.json)


@db_app.command("current")
def db_current(
    output: OutputOpt = Format.text,
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 unless the database is at head")
    ] = False,
) -> None:
    """The database's schema revision, and whether it is at this Argosy's head."""
    from argosy.cli import ops_commands

    raise typer.Exit(ops_commands.db_current(_settings(), output == Format.json, check))


@db_app.command("history")
def db_history(output: OutputOpt = Format.text) -> None:
    """Every migration from the first to head, marking the database's current one."""
    from argosy.cli import ops_commands

    ops_commands.db_history(_settings(), output == Format.json)


class VerifyMode(StrEnum):
    hash = "hash"
    exists = "exists"


VerifyOpt = Annotated[
    VerifyMode,
    typer.Option(
        "--verify",
        help="check each blob's sha256 (hash, streams every blob) or only that it exists",
    ),
]


@admin_app.command("backup")
def admin_backup(
    dest: Annotated[
        Path, typer.Argument(help="a new folder, or a .tar / .tar.gz file", show_default=False)
    ],
    blobs: Annotated[
        bool,
        typer.Option("--blobs", help="also copy the blobs and run records (logs) into it"),
    ] = False,
    output: OutputOpt = Format.text,
) -> None:
    """A consistent snapshot of the metadata, taken without stopping runs, plus a manifest
    of every blob it references (and the schema revision and Argosy version)."""
    from argosy.cli import ops_commands

    code = ops_commands.admin_backup(
        _settings(), dest, blobs=blobs, tenant=None, kind="backup",
        json_output=output == Format.json,
    )  # fmt: skip
    raise typer.Exit(code)


@admin_app.command("restore")
def admin_restore(
    src: Annotated[Path, typer.Argument(help="a backup folder or archive", show_default=False)],
    verify: VerifyOpt = VerifyMode.hash,
    release_runs: Annotated[
        bool,
        typer.Option(
            "--release-runs",
            help="forget the engines recorded on unfinished runs, so 'runs resume' takes them over",
        ),
    ] = False,
    output: OutputOpt = Format.text,
) -> None:
    """Restore a backup into an empty database, then check every blob it references.

    Exits 1 if a blob is missing from the artifact store or hashes wrong (each is listed).
    """
    from argosy.cli import ops_commands

    code = ops_commands.admin_restore(
        _settings(), src, verify=verify.value, release_runs=release_runs,
        json_output=output == Format.json,
    )  # fmt: skip
    raise typer.Exit(code)


@admin_app.command("export")
def admin_export(
    dest: Annotated[
        Path, typer.Argument(help="a new folder, or a .tar / .tar.gz file", show_default=False)
    ],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="only this tenant's history (default: all)")
    ] = None,
    blobs: Annotated[
        bool,
        typer.Option(
            "--blobs/--no-blobs",
            help="carry the blobs and run records (leave them out when both sides share a store)",
        ),
    ] = True,
    output: OutputOpt = Format.text,
) -> None:
    """Export the metadata (and its blobs) to move it to another database: 'admin import'."""
    from argosy.cli import ops_commands

    code = ops_commands.admin_backup(
        _settings(), dest, blobs=blobs, tenant=tenant, kind="export",
        json_output=output == Format.json,
    )  # fmt: skip
    raise typer.Exit(code)


@admin_app.command("import")
def admin_import(
    src: Annotated[Path, typer.Argument(help="an export (or backup)", show_default=False)],
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant",
            metavar="[OLD=]NEW",
            help="import under another tenant (repeatable; OLD= when the export holds several)",
        ),
    ] = None,
    verify: VerifyOpt = VerifyMode.hash,
    output: OutputOpt = Format.text,
) -> None:
    """Merge an export into this database (SQLite or PostgreSQL): rows already there are
    skipped, blobs are copied into this artifact store under the (new) tenant."""
    from argosy.cli import ops_commands

    code = ops_commands.admin_import(
        _settings(), src, tenants=tenant or [], verify=verify.value,
        json_output=output == Format.json,
    )  # fmt: skip
    raise typer.Exit(code)


keys_app = typer.Typer(
    help="Encryption at rest: list, rotate and re-wrap the tenants' data keys.",
    no_args_is_help=True,
)
admin_app.add_typer(keys_app, name="keys")


@keys_app.command("list")
def admin_keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant's keys")] = None,
    output: OutputOpt = Format.text,
) -> None:
    """Every data key (never its bytes): tenant, id, active/retired, the KEK that wraps it."""
    from argosy.cli import keys_commands

    keys_commands.keys_list(_settings(), tenant, output == Format.json)


@keys_app.command("rotate")
def admin_keys_rotate(
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant whose key to rotate")],
    output: OutputOpt = Format.text,
) -> None:
    """A new data key for a tenant's new writes; older keys stay to read older artifacts."""
    from argosy.cli import keys_commands

    keys_commands.keys_rotate(_settings(), tenant, output == Format.json)


@keys_app.command("rewrap")
def admin_keys_rewrap(
    remove_old: Annotated[
        bool,
        typer.Option("--remove-old", help="then delete the old KEKs from the key file"),
    ] = False,
    output: OutputOpt = Format.text,
) -> None:
    """Re-wrap every data key under a new key-encryption key (artifacts are not rewritten)."""
    from argosy.cli import keys_commands

    keys_commands.keys_rewrap(_settings(), remove_old, output == Format.json)


audit_app = typer.Typer(
    help="The audit log: verify its hash chain, export it as JSON lines.", no_args_is_help=True
)
admin_app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def admin_audit_verify(output: OutputOpt = Format.text) -> None:
    """Check the audit log's hash chain on the metadata database; exit 1 listing each edited,
    deleted or reordered event."""
    from argosy.cli import audit_commands

    raise typer.Exit(audit_commands.verify(_settings(), output == Format.json))


@audit_app.command("export")
def admin_audit_export(
    since: Annotated[
        str | None, typer.Option("--since", help="only events at or after this ISO-8601 time")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant")] = None,
) -> None:
    """Write the audit log to stdout as JSON lines, oldest first (for a log pipeline)."""
    from argosy.cli import audit_commands

    raise typer.Exit(audit_commands.export(_settings(), since, tenant))


def _register_auth_commands() -> None:
    """``argosy tenants|members|tokens ...`` and ``argosy login`` (cli/auth_commands.py)."""
    from argosy.cli import auth_commands

    auth_commands.register(app)


_register_auth_commands()


def _register_kubernetes_commands() -> None:
    """``argosy admin tenant-namespace`` (cli/kubernetes_commands.py)."""
    from argosy.cli import kubernetes_commands

    kubernetes_commands.register(admin_app)


_register_kubernetes_commands()


from argosy.cli import ui_commands  # noqa: E402  (argosy ui: the web UI in local mode)

ui_commands.register(app)

from argosy.cli import operations_commands  # noqa: E402  (costs, gc, retention: issue 17)

operations_commands.register(app, runs_app, _with)

from argosy.cli import models_cli  # noqa: E402  (argosy models: the model registry)

models_cli.register(app, _with)


def _load_param_file(path: Path | None) -> Any:
    from argosy.cli import ci_commands

    return ci_commands.load_param_file(path)


from argosy.cli import trigger_commands  # noqa: E402  (argosy triggers: runs on events)

trigger_commands.register(app, _require_remote, _load_param_file)

from argosy.cli import images_cli  # noqa: E402  (argosy images: build, push, lock)

images_cli.register(app)


def app_for(args: list[str]) -> typer.Typer:
    """The app that parses ``args``: :data:`app`, or — when the first argument names one of its
    commands or command groups — an app of the global options and that command alone.

    Typer turns the signature of every command it holds into a Click command each time it is
    called (~30 ms for the whole CLI, paid before ``argosy run`` starts); the one-command app
    parses, helps and fails exactly as the whole one does for that command. Global options
    come before the command's name, so their presence means the whole app.
    """
    if not args or args[0].startswith("-"):
        return app
    from typer.main import get_command_name

    one = typer.Typer(**_APP_OPTIONS)
    one.registered_callback = app.registered_callback
    for command in app.registered_commands:
        name = command.name or (command.callback and get_command_name(command.callback.__name__))
        if name == args[0]:
            one.registered_commands = [command]
            return one
    for group in app.registered_groups:
        if group.name == args[0]:
            one.registered_groups = [group]
            return one
    return app


_PREPARED: dict[str, Any] = {}
"""Click commands built ahead of time by the warm command line (building one is ~3 ms of
every command), by name."""


def prepare(names: Iterable[str]) -> None:
    """Build the Click commands of ``argosy NAME`` now (:data:`_PREPARED`)."""
    from typer.main import get_command

    for name in names:
        _PREPARED[name] = get_command(app_for([name]))


def main() -> None:
    """Run the CLI: one line on stderr and a meaningful exit code (SystemExit) for user errors."""
    from argosy.errors import ArgosyError

    args = sys.argv[1:]
    prepared = _PREPARED.get(args[0]) if args else None
    try:
        if prepared is not None:
            prepared(prog_name="argosy")
        else:
            app_for(args)(prog_name="argosy")
    except ArgosyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        from argosy.errors import StoreError
        from argosy.stores.metadata.db import lost_message

        message = lost_message(exc)  # the database went away under a command
        if message is None:
            raise
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(StoreError.exit_code) from None


def entry() -> None:
    """The ``argosy`` command: :func:`main`, then exit without the interpreter's slow teardown.

    Everything is committed and flushed by then; skipping teardown saves ~0.1 s per command.
    """
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    entry()
