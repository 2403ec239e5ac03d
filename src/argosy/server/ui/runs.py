"""Run pages: the run list, a run with its graph, a step's side panel, a log download, and
the cancel and retry buttons.

The run page draws the pipeline graph on the server (:mod:`argosy.server.ui.graph`) with each
box in its tasks' state. The page's script then follows the run's event stream — the API's
``/logs/stream?events=task`` (:mod:`argosy.server.routes.logs`), authorized like every API
request — and recolours boxes as ``event: task`` arrive, without reloading. A step's panel is
a fragment of this module, loaded into the page (or opened as a page of its own); while the run
goes on its log is tailed from the same stream (``events=line&node=...``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import ContextDep, Principal, TenantDep
from argosy.server.routes import service_context
from argosy.server.ui import graph
from argosy.server.ui.home import Home, ServerHome
from argosy.server.ui.pages import render, tenant_url, viewer
from argosy.server.ui.security import Page, PageProblem, as_page_errors
from argosy.service import events, logs, pipelines, runs
from argosy.states import RUN_DONE

router = APIRouter(include_in_schema=False)

RunId = Annotated[str, Path(min_length=4, max_length=26, pattern=r"^[0-9A-Za-z]+$")]
NodePath = Annotated[str, Path(min_length=1, max_length=512)]
Text = Annotated[str | None, Query(max_length=255)]
PAGE_SIZE = 50
TAIL_LINES = 300
TAIL_PAGES = 20  # at most this many pages of log lines are read for a panel's tail
STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")


def home_of(request: Request) -> Home:
    found: Home | None = getattr(request.app.state, "ui_home", None)
    return found or ServerHome()


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PageProblem(
            422, f"{name} {value[:40]!r} is not a date and time (use 2025-01-31T09:30)",
            code="validation_error",
        ) from None  # fmt: skip
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/t/{tenant}/runs", name="ui_runs")
def runs_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_READ)],
    context: ContextDep,
    pipeline: Text = None,
    status: Text = None,
    created_by: Text = None,
    schedule: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Runs, newest first, filtered, in pages of 50; pick 2-10 to compare."""
    ctx = service_context(context, tenant, principal)
    filters = {
        "pipeline": pipeline or None, "status": status or None,
        "created_by": created_by or None, "schedule": schedule or None,
        "since": since or None, "until": until or None,
    }  # fmt: skip
    with as_page_errors():
        page = runs.list_runs(
            ctx, pipeline=filters["pipeline"], status=filters["status"],
            created_by=filters["created_by"], schedule=filters["schedule"],
            since=_time(since, "since"), until=_time(until, "until"), limit=PAGE_SIZE,
            cursor=cursor or None,
        )  # fmt: skip
        names = [p.name for p in pipelines.list_pipelines(ctx, limit=200).items]
    view = viewer(request, context, principal, tenant)
    return render(
        request, "runs.html", view, page=page, filters=filters, pipelines=names,
        statuses=STATUSES, cursor=cursor,
    )  # fmt: skip


def _boxes(drawing: graph.Drawing, state: api.RunState) -> dict[str, dict[str, Any]]:
    """Each box's state, and for a fan-out its iterations' counts."""
    found: dict[str, dict[str, Any]] = {}
    keys = {b.node.key for b in drawing.boxes}
    grouped: dict[str, list[api.TaskEvent]] = {}
    for task in state.tasks:
        key = graph.node_key(task.node_path)
        while key not in keys and "/" in key:  # inside a collapsed sub-pipeline
            key = key.rsplit("/", 1)[0]
        grouped.setdefault(key, []).append(task)
    for box in drawing.boxes:
        tasks = grouped.get(box.node.key, [])
        iterations = [t for t in tasks if "[" in t.node_path]
        done = sum(1 for t in iterations if t.state in ("succeeded", "cached"))
        found[box.node.key] = {
            "state": graph.aggregate(t.state for t in tasks) if tasks else "pending",
            "iterations": len(iterations),
            "done": done,
            "reason": next((t.reason for t in tasks if t.reason), None),
        }
    return found


@router.get("/t/{tenant}/runs/{run_id}", name="ui_run")
def run_page(
    request: Request,
    run_id: RunId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_READ)],
    context: ContextDep,
    collapse: Annotated[list[str] | None, Query(max_length=512)] = None,
    step: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The run: its status and parameters, the graph with live states, and a step's panel."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        run = runs.get_run(ctx, run_id)
        state = events.run_state(ctx, run.id)
        spec = pipelines.run_spec(ctx, run.id)
        panel = _panel(ctx, run, step) if step else None
    drawing = graph.draw(spec, collapse or ())
    view = viewer(request, context, principal, tenant)
    return render(
        request, "run.html", view, run=run, drawing=drawing, boxes=_boxes(drawing, state),
        collapsed=list(collapse or ()), panel=panel, done=run.status in RUN_DONE,
        counts=_counts(state),
    )  # fmt: skip


def _counts(state: api.RunState) -> dict[str, int]:
    found: dict[str, int] = {}
    for t in state.tasks:
        found[t.state] = found.get(t.state, 0) + 1
    return found


def _tail(ctx: Any, run_id: str, node: str) -> tuple[list[api.LogLine], str | None]:
    """The last lines of a node's log (every attempt), and the cursor after them."""
    last: deque[api.LogLine] = deque(maxlen=TAIL_LINES)
    cursor: str | None = None
    for _ in range(TAIL_PAGES):
        page = logs.read(ctx, run_id, node=node, cursor=cursor)
        last.extend(page.items)
        cursor = page.cursor
        if len(page.items) < logs.PAGE_LINES:
            break
    return list(last), cursor


def _panel(ctx: Any, run: api.Run, node: str) -> dict[str, Any]:
    """What a step's panel shows: its task (if the node is one), its iterations (if it is a
    fan-out), its step's definition, and its log tail."""
    state = events.run_state(ctx, run.id)
    key = graph.node_key(node)
    iterations = [t for t in state.tasks if "[" in t.node_path and graph.node_key(t.node_path)
                  == key and t.node_path != node]  # fmt: skip
    paths = {t.node_path for t in state.tasks}
    task = runs.get_task(ctx, run.id, node) if node in paths else None
    if task is None and not iterations:
        runs.get_task(ctx, run.id, node)  # the NotFoundError naming the run's nodes
    spec = pipelines.run_spec(ctx, run.id)
    step = spec.steps.get(task.step) if task is not None else None
    location = spec.location(node) or (spec.location(f"step:{task.step}") if task else None)
    lines: list[api.LogLine] = []
    cursor = None
    if task is not None:
        lines, cursor = _tail(ctx, run.id, node)
    return {
        "node": node, "key": key, "task": task, "step": step, "iterations": iterations,
        "lines": lines, "cursor": cursor, "location": location,
        "mapped": bool(iterations) and "[" not in node,
    }  # fmt: skip


@router.get("/t/{tenant}/runs/{run_id}/steps/{node:path}", name="ui_step")
def step_page(
    request: Request,
    run_id: RunId,
    node: NodePath,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_READ)],
    context: ContextDep,
    fragment: bool = False,
) -> Response:
    """A step's panel: parameters, artifacts, attempts, cache, exit reason, log (live tail,
    search, download). ``fragment``: the panel alone, for the run page's script."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        run = runs.get_run(ctx, run_id)
        panel = _panel(ctx, run, node)
    view = viewer(request, context, principal, tenant)
    template = "step_fragment.html" if fragment else "step_page.html"
    return render(request, template, view, run=run, panel=panel, done=run.status in RUN_DONE)


@router.get("/t/{tenant}/runs/{run_id}/log.txt", name="ui_log_download")
def log_download(
    run_id: RunId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.LOG_READ)],
    context: ContextDep,
    node: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The log as plain text (one line per log line: time, node#attempt, stream, text)."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        resolved = logs.resolve(ctx, run_id, node or None)

    def lines() -> Iterator[str]:
        for line in logs.read_all(ctx, resolved, node=node or None):
            yield f"{line.time} {line.node_path}#{line.attempt} {line.stream}: {line.line}\n"

    name = f"{resolved}-{(node or 'all').replace('/', '_')}.log"
    safe = "".join(c if c.isalnum() or c in "-_.[]" else "_" for c in name)
    return StreamingResponse(
        lines(), media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )  # fmt: skip


@router.post("/t/{tenant}/runs/{run_id}/cancel", name="ui_cancel")
def cancel(
    request: Request,
    run_id: RunId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_CANCEL)],
    context: ContextDep,
) -> Response:
    """Ask the run to stop (the Cancel button); answers the run's status."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        run = home_of(request).cancel(ctx, run_id)
    return JSONResponse({"run_id": run.id, "status": run.status})


@router.post("/t/{tenant}/runs/{run_id}/retry", name="ui_retry", status_code=201)
def retry(
    request: Request,
    run_id: RunId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_RETRY)],
    context: ContextDep,
) -> Response:
    """A new run of a failed or cancelled run (the Retry button); answers where it is."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        run = home_of(request).retry(ctx, run_id)
    location = tenant_url(tenant, "runs", run.id)
    return JSONResponse({"run_id": run.id, "location": location}, status_code=201)
