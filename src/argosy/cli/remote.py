"""What the CLI commands do when they act on an Argosy server (``--server`` / ARGOSY_SERVER).

Each function takes a :class:`~argosy.client.client.Client`, so the same code serves the
command line and tests. Output follows the local commands: tables and results on stdout,
progress and messages on stderr, ``--output json`` prints one JSON document on stdout (the
API's documents, unchanged).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from argosy.api import Artifact, Attempt, LogLine, Run, ScheduleCreate, Task
from argosy.cli.commands import _console, _parse_params, emit_json
from argosy.config import Settings
from argosy.errors import ConflictError, NotFoundError, UsageError
from argosy.units import format_bytes

if TYPE_CHECKING:
    from argosy.client.client import Client

out = _console()
err = _console(stderr=True)

POLL_SECONDS = 0.5
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


def open_client(settings: Settings) -> Client:
    """A client of ``settings.server`` with the tenant of the settings and its token
    (``ARGOSY_TOKEN``, else the one ``argosy login`` stored for that server)."""
    from argosy.client.client import Client
    from argosy.client.credentials import refresh_stored_token, stored_token

    server = settings.server
    assert server is not None
    if settings.token:  # ARGOSY_TOKEN: used as it is
        return Client(server, token=settings.token, tenant=settings.tenant)
    return Client(  # the token of 'argosy login', refreshed when it has expired
        server, token=stored_token(server), tenant=settings.tenant,
        refresh=lambda: refresh_stored_token(server),
    )  # fmt: skip


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


# -- pipelines ---------------------------------------------------------------------------------
def _compile(settings: Settings, target: str) -> Any:
    from argosy.spec.compile import compile_pipeline
    from argosy.spec.loader import load_pipeline

    return compile_pipeline(load_pipeline(target), cache_dir=settings.home / "cache")


def push_pipeline(
    client: Client, settings: Settings, target: str, version: str | None, json_output: bool
) -> None:
    """Compile locally, upload the missing blobs, then push the spec as a version."""
    compiled = _compile(settings, target)
    pushed = client.push_pipeline(compiled, version)
    if json_output:
        emit_json(_dump(pushed))
        return
    v = pushed.version
    tags = f" (tags: {', '.join(v.tags)})" if v.tags else ""
    what = "new version" if pushed.created else "already there"
    if not pushed.created and pushed.tag_added and version:
        what += f", now also tagged {version}"
    print(f"pipeline {v.pipeline} version {v.digest}{tags}: {what}")


def list_pipelines(client: Client, json_output: bool) -> None:
    pipelines = client.list_pipelines()
    if json_output:
        emit_json({"pipelines": [_dump(p) for p in pipelines]})
        return
    table = _table("pipeline", "latest version", "tags", "created", "by")
    for p in pipelines:
        latest = p.latest_version
        table.add_row(
            p.name,
            latest.digest[:19] if latest else "",
            ", ".join(latest.tags) if latest else "",
            _iso(p.created_at),
            p.created_by,
        )
    out.print(table)


def list_versions(client: Client, pipeline: str, json_output: bool) -> None:
    versions = client.list_versions(pipeline)
    if json_output:
        emit_json({"versions": [_dump(v) for v in versions]})
        return
    table = _table("version", "digest", "tags", "created", "by")
    for v in versions:
        table.add_row(v.id, v.digest, ", ".join(v.tags), _iso(v.created_at), v.created_by)
    out.print(table)


# -- runs --------------------------------------------------------------------------------------
def run_pipeline(
    client: Client,
    settings: Settings,
    target: str,
    params: list[str],
    *,
    version: str | None,
    fail_fast: bool,
    no_cache: bool,
    detach: bool,
    wait: bool,
    json_output: bool,
) -> int:
    """Compile, push (tagged only with ``version``), start a run, then follow it to its end
    (progress on stderr unless ``wait``). Ctrl-C stops following, not the run."""
    from argosy.spec.parameters import bind_parameters

    compiled = _compile(settings, target)
    parameters = bind_parameters(compiled.spec, _parse_params(params))
    pushed = client.push_pipeline(compiled, version)
    run = client.create_run(
        compiled.spec.name,
        pushed.version.digest,
        parameters,
        fail_fast=fail_fast,
        no_cache=no_cache,
    )
    err.print(
        f"run {run.id} of pipeline {run.pipeline} ({run.digest[:19]}) on {client.url}",
        highlight=False,
    )
    if detach:
        if json_output:
            emit_json(_dump(run))
        else:
            print(run.id)
        return 0
    try:
        run = _follow(client, run, show_progress=not wait)
    except KeyboardInterrupt:
        err.print(
            f"stopped following; run {run.id} is still running on the server; "
            f"cancel it with: argosy runs cancel {run.id}",
            highlight=False,
        )
        return INTERRUPTED
    return _report(client, run, json_output)


def _follow(client: Client, run: Run, *, show_progress: bool) -> Run:
    """Poll the run's tasks every half second until it ends, rendering progress."""
    if not show_progress:
        return client.wait(run.id, POLL_SECONDS)
    from argosy.cli.progress import Progress
    from argosy.engine.engine import TaskView

    with Progress(err) as progress:

        def show(current: Run, tasks: list[Task]) -> None:
            views = [
                TaskView(
                    id=t.id,
                    node_path=t.node_path,
                    step_name=t.step,
                    state=t.state,
                    attempt_count=len(t.attempts),
                    failures=sum(1 for a in t.attempts if a.state == "failed"),
                    reason=t.reason,
                )
                for t in tasks
            ]
            progress(current.id, views)

        return client.wait(run.id, POLL_SECONDS, on_tasks=show)


def _report(client: Client, run: Run, json_output: bool) -> int:
    tasks = client.tasks(run.id)
    if json_output:
        emit_json({**_dump(run), "tasks": [_dump(t) for t in tasks]})
    else:
        style = "green" if run.status == "succeeded" else "red"
        err.print(f"run {run.id} [{style}]{run.status}[/]", highlight=False)
        for t in tasks:
            failed_skip = t.state == "skipped" and (t.reason or "").startswith("upstream_failed")
            if t.state in ("failed", "cancelled") or failed_skip:
                why = f" — {t.reason}" if t.reason else ""
                err.print(f"  {t.node_path}: {t.state}{why}", highlight=False, markup=False)
        if run.error:
            err.print(f"  {run.error}", highlight=False, markup=False)
        server = f" --server {client.url}"
        if run.status != "succeeded":
            err.print(
                f"  details: argosy runs show {run.id}{server}; logs: argosy logs {run.id}{server}",
                highlight=False,
                markup=False,
            )
        for line in _output_lines(client, run):
            print(line)
    return 0 if run.status == "succeeded" else 1


def _output_lines(client: Client, run: Run) -> list[str]:
    """The pipeline's outputs: small JSON values inline, other artifacts with the command
    that downloads them (the run document names each output's artifact id)."""
    if not run.outputs:
        return []
    by_id = {a.id: a for a in client.artifacts(run.id)}
    lines = []
    for name, value in run.outputs.items():
        art = by_id.get(value) if isinstance(value, str) else None
        if art is None:
            lines.append(f"{name} = {json.dumps(value)}")
        elif art.value is not None and art.format == "json":
            lines.append(f"{name} = {json.dumps(art.value)}")
        else:
            lines.append(f"{name} = {art.type} artifact {art.id} (sha256 {art.sha256[:12]})")
            lines.append(
                f"    get it with: argosy artifacts get {art.id} --out PATH --server {client.url}"
            )
    return lines


def list_runs(
    client: Client, json_output: bool, limit: int, status: str | None, pipeline: str | None
) -> None:
    runs = list(client.list_runs(pipeline=pipeline, status=status, limit=limit))
    if json_output:
        emit_json({"runs": [_dump(r) for r in runs]})
        return
    table = _table("run", "pipeline", "status", "created", "parameters")
    for r in runs:
        table.add_row(r.id, r.pipeline, r.status, _iso(r.created_at)[:19], json.dumps(r.parameters))
    out.print(table)


def show_run(client: Client, run_id: str, json_output: bool) -> None:
    run = client.get_run(run_id)
    tasks = client.tasks(run.id)
    if json_output:
        emit_json({**_dump(run), "tasks": [_dump(t) for t in tasks]})
        return
    cancel = ", cancel requested" if run.cancel_requested and run.status == "running" else ""
    out.print(f"run {run.id}  {run.pipeline}  {run.status}{cancel}", highlight=False)
    out.print(
        f"version {run.digest}  parameters {json.dumps(run.parameters)}",
        highlight=False,
        markup=False,
    )
    extra = [f"retry of {run.retry_of}"] if run.retry_of else []
    extra += [f"schedule {run.schedule}"] if run.schedule else []
    if extra:
        out.print("  ".join(extra), highlight=False)
    table = _table(
        "node", "step", "state", "attempt", "cause", "reason", "wall", "peak mem", "host"
    )
    for t in tasks:
        attempts: list[Attempt | None] = list(t.attempts) or [None]
        for a in attempts:
            table.add_row(
                t.node_path if a is None or a is attempts[0] else "",
                t.step,
                t.state if a is None or a is attempts[-1] else "",
                str(a.number) if a else "",
                a.cause if a else "",
                (a.reason or "") if a else (t.reason or ""),
                f"{a.wall_time:.2f}s" if a and a.wall_time is not None else "",
                format_bytes(a.peak_memory) if a and a.peak_memory is not None else "",
                (a.host or "") if a else "",
            )
    out.print(table)
    if run.error:
        out.print(f"\nerror: {run.error}", highlight=False, markup=False)
    if run.outputs:
        out.print("\noutputs:")
        for line in _output_lines(client, run):
            out.print(f"  {line}", highlight=False, markup=False)


def cancel_run(client: Client, run_id: str) -> None:
    """Ask the server to cancel; a run that already ended is left as it is (exit 0, as locally)."""
    try:
        run = client.cancel_run(run_id)
    except ConflictError as exc:
        err.print(str(exc), highlight=False, markup=False)
        return
    if run.status in ("succeeded", "failed") or (
        run.status == "cancelled" and not run.cancel_requested
    ):
        err.print(f"run {run.id} had already finished ({run.status})", highlight=False)
    elif run.status == "cancelled":
        err.print(f"run {run.id} cancelled", highlight=False)
    else:
        err.print(
            f"run {run.id}: cancel requested; the server stops its running tasks", highlight=False
        )


def retry_run(client: Client, run_id: str, json_output: bool) -> None:
    run = client.retry_run(run_id)
    if json_output:
        emit_json(_dump(run))
        return
    err.print(f"run {run.id} retries run {run_id} (finished tasks are reused)", highlight=False)
    print(run.id)


# -- logs --------------------------------------------------------------------------------------
def show_logs(
    client: Client,
    run_id: str,
    node: str | None,
    follow: bool,
    attempt: int | None,
    json_output: bool,
) -> None:
    def entry(line: Any) -> dict[str, Any]:
        return {
            "node": line.node_path,
            "attempt": line.attempt,
            "time": line.time,
            "stream": line.stream,
            "line": line.line,
        }

    def wanted(line: Any) -> bool:
        return attempt is None or line.attempt == attempt

    if follow:
        for line in client.follow_logs(run_id, node=node):
            if not wanted(line):
                continue
            if json_output:  # one JSON object per line, as they come
                sys.stdout.write(json.dumps(entry(line)) + "\n")
            else:
                sys.stdout.write(
                    f"{line.node_path}#{line.attempt} {line.time[11:23]} {line.line}\n"
                )
            sys.stdout.flush()
        return
    lines: list[LogLine] = []
    cursor: str | None = None
    while True:
        page = client.logs(run_id, cursor, node=node)
        lines.extend(line for line in page.items if wanted(line))
        if not page.items or page.cursor == cursor:
            break
        cursor = page.cursor
    if json_output:
        emit_json({"run_id": run_id, "lines": [entry(line) for line in lines]})
        return
    for line in lines:
        sys.stdout.write(f"{line.node_path}#{line.attempt} {line.time[11:23]} {line.line}\n")


# -- artifacts ---------------------------------------------------------------------------------
def list_artifacts(client: Client, run_id: str, json_output: bool) -> None:
    artifacts = client.artifacts(run_id)
    if json_output:
        emit_json({"artifacts": [_dump(a) for a in artifacts]})
        return
    table = _table("artifact", "node", "output", "type", "size", "sha256")
    for a in artifacts:
        table.add_row(a.id, a.node_path, a.output_name, a.type, format_bytes(a.size), a.sha256[:12])
    out.print(table)


def resolve_artifact(client: Client, ref: str) -> Artifact:
    """An artifact by id, or by ``RUN/NODE/OUTPUT`` (the node path may contain slashes)."""
    if "/" not in ref:
        return client.get_artifact(ref)
    run_id, _, rest = ref.partition("/")
    node, _, output = rest.rpartition("/")
    found = client.artifacts(run_id)
    for a in found:
        if a.node_path == node and a.output_name == output:
            return a
    known = ", ".join(f"{a.node_path}/{a.output_name}" for a in found) or "(none)"
    raise NotFoundError(f"run {run_id} has no artifact {node}/{output}; its artifacts: {known}")


def get_artifact(client: Client, ref: str, dest: Path) -> None:
    """Download (streamed, resumable, sha256-verified); directory artifacts are unpacked."""
    art = resolve_artifact(client, ref)
    if art.format == "dir":
        import tempfile

        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tar_path = Path(tmp) / "dir.tar"
            client.download_artifact(art.id, tar_path, artifact=art)
            from argosy.safe_paths import extract_tar

            extract_tar(tar_path, dest, what=f"directory artifact {art.id}")
    else:
        if dest.is_dir():
            value = art.value if isinstance(art.value, dict) else {}
            from argosy.safe_paths import check_name

            dest = dest / check_name(
                value.get("filename")
                or f"{art.node_path}.{art.output_name}.{art.format}".replace("/", "_"),
                "artifact file name",
            )
        client.download_artifact(art.id, dest, artifact=art)
    err.print(
        f"wrote {art.node_path}/{art.output_name} ({art.type}, {format_bytes(art.size)}, "
        f"sha256 {art.sha256[:12]}) to {dest}",
        highlight=False,
    )


# -- schedules ---------------------------------------------------------------------------------
def _schedule_parameters(
    client: Client, pipeline: str, version: str | None, params: list[str]
) -> dict[str, Any]:
    """``-p`` values typed by the pipeline version's parameter annotations (as for runs)."""
    text = _parse_params(params)
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
) -> None:
    from pydantic import ValidationError

    parameters = _schedule_parameters(client, pipeline, version, params)
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
        emit_json(_dump(schedule))
        return
    err.print(
        f"schedule {schedule.name}: {schedule.pipeline} at '{schedule.cron}' "
        f"({schedule.timezone}); next run {_iso(schedule.next_fire_at) or 'none'}",
        highlight=False,
        markup=False,
    )


def list_schedules(client: Client, json_output: bool) -> None:
    schedules = client.list_schedules()
    if json_output:
        emit_json({"schedules": [_dump(s) for s in schedules]})
        return
    table = _table("schedule", "pipeline", "version", "cron", "timezone", "state", "next", "last")
    for s in schedules:
        table.add_row(
            s.name, s.pipeline, s.version or "(newest)", s.cron, s.timezone,
            "paused" if s.paused else "active", _iso(s.next_fire_at), _iso(s.last_fire_at),
        )  # fmt: skip
    out.print(table)


def show_schedule(client: Client, name: str, json_output: bool) -> None:
    schedule = client.get_schedule(name)
    fires = client.schedule_fires(name)
    if json_output:
        emit_json({**_dump(schedule), "fires": [_dump(f) for f in fires]})
        return
    state = "paused" if schedule.paused else "active"
    out.print(
        f"schedule {schedule.name}  {schedule.pipeline} {schedule.version or '(newest)'}  "
        f"'{schedule.cron}' {schedule.timezone}  {state}  next {_iso(schedule.next_fire_at)}",
        highlight=False,
        markup=False,
    )
    out.print(f"parameters {json.dumps(schedule.parameters)}", highlight=False, markup=False)
    table = _table("fire time", "outcome", "run", "detail")
    for f in fires:
        table.add_row(_iso(f.fire_time), f.outcome, f.run_id or "", f.detail or "")
    out.print(table)


def schedule_action(client: Client, name: str, action: str) -> None:
    if action == "pause":
        client.pause_schedule(name)
        err.print(f"schedule {name} paused", highlight=False)
    elif action == "resume":
        schedule = client.resume_schedule(name)
        err.print(
            f"schedule {name} resumed; next run {_iso(schedule.next_fire_at) or 'none'}",
            highlight=False,
        )
    else:
        client.delete_schedule(name)
        err.print(f"schedule {name} deleted (its runs are kept)", highlight=False)


# -- helpers -----------------------------------------------------------------------------------
def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold")
    for col in columns:
        table.add_column(col)
    return table
