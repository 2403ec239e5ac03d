"""The comparison page: 2-10 runs (picked in the run list), or the iterations of one mapped
node of a run (``train[0]`` ... ``train[5]``, from its step panel), side by side with the
differences highlighted, the best value of each metric marked, and the metrics charted
(server-drawn SVG bars: no chart script).

"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import ContextDep, Principal, TenantDep
from argosy.server.routes import service_context
from argosy.server.ui.pages import render, viewer
from argosy.server.ui.security import Page, as_page_errors
from argosy.service import compare

router = APIRouter(include_in_schema=False)

CHART_WIDTH = 320
BAR_HEIGHT = 18


def charts(comparison: api.Comparison) -> list[dict[str, Any]]:
    """One horizontal bar chart per numeric metric. Bars start at 0, or — when every value is
    positive and they lie close together (accuracies of 0.97-0.99) — a little below the
    smallest, so that differences show; the chart says where its axis starts."""
    found = []
    for row in comparison.metrics:
        numbers = [v if isinstance(v, int | float) and not isinstance(v, bool) else None
                   for v in row.values]  # fmt: skip
        present = [v for v in numbers if v is not None]
        if not present:
            continue
        top, low = max(present), min(present)
        start = 0.0
        if low > 0 and top > 0 and (top - low) / top < 0.5:
            start = low - (top - low) * 0.25 if top > low else low * 0.9
        span = (top - start) or 1.0
        bars = [
            {"label": c.label, "value": v,
             "width": 0 if v is None else max(2.0, (v - start) / span * CHART_WIDTH),
             "best": i == row.best, "y": i * (BAR_HEIGHT + 6)}
            for i, (c, v) in enumerate(zip(comparison.columns, numbers, strict=True))
        ]  # fmt: skip
        height = len(bars) * (BAR_HEIGHT + 6)
        found.append({"key": row.key, "bars": bars, "height": height, "width": CHART_WIDTH,
                      "start": start})  # fmt: skip
    return found


@router.get("/t/{tenant}/compare", name="ui_compare")
def compare_page(
    request: Request,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.RUN_READ)],
    context: ContextDep,
    run: Annotated[list[str] | None, Query(max_length=26)] = None,
    node: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """``?run=A&run=B...``: runs; ``?run=A&node=train``: the iterations of ``train``."""
    ctx = service_context(context, tenant, principal)
    picked = list(dict.fromkeys(run or []))
    with as_page_errors():
        if node:
            found = compare.compare_iterations(ctx, picked[0] if picked else "", node)
        else:
            found = compare.compare_runs(ctx, picked)
    view = viewer(request, context, principal, tenant)
    return render(request, "compare.html", view, comparison=found, charts=charts(found),
                  node=node)  # fmt: skip
