"""Artifact pages: the artifact with a preview of its content (:mod:`argosy.service.previews`),
its image bytes for an inline picture, and its lineage drawn as a graph.

Downloads use the API's ``/artifacts/{id}/content`` (same origin, same authorization). The
image route answers only bytes whose first bytes are a PNG, JPEG, GIF or WebP image, with that
media type and ``nosniff``: an artifact can never be served as a page or a script.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from argosy.auth.policy import Action
from argosy.server.identity import ContextDep, Principal, TenantDep
from argosy.server.routes import service_context
from argosy.server.ui import graph
from argosy.server.ui.pages import render, viewer
from argosy.server.ui.security import Page, as_page_errors
from argosy.service import artifacts, previews

router = APIRouter(include_in_schema=False)

ArtifactId = Annotated[str, Path(min_length=4, max_length=26, pattern=r"^[0-9A-Za-z]+$")]
CHUNK = 256 * 1024


@router.get("/t/{tenant}/artifacts/{artifact_id}", name="ui_artifact")
def artifact_page(
    request: Request,
    artifact_id: ArtifactId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.ARTIFACT_READ)],
    context: ContextDep,
) -> Response:
    """Size, sha256, where it came from, a preview by format, and a download link."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        art = artifacts.get_artifact(ctx, artifact_id)
        shown = previews.preview(ctx, art.id)
    view = viewer(request, context, principal, tenant)
    return render(request, "artifact.html", view, art=art, preview=shown)


@router.get("/t/{tenant}/artifacts/{artifact_id}/image", name="ui_artifact_image")
def artifact_image(
    artifact_id: ArtifactId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.ARTIFACT_READ)],
    context: ContextDep,
) -> Response:
    """The artifact's bytes as an image (404 unless they are a PNG, JPEG, GIF or WebP)."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        media, stream = previews.image(ctx, artifact_id)

    def chunks() -> Any:
        with stream:
            while chunk := stream.read(CHUNK):
                yield chunk

    return StreamingResponse(
        chunks(), media_type=media,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"},
    )  # fmt: skip


@router.get("/t/{tenant}/artifacts/{artifact_id}/lineage", name="ui_lineage")
def lineage_page(
    request: Request,
    artifact_id: ArtifactId,
    tenant: TenantDep,
    principal: Annotated[Principal, Page(Action.ARTIFACT_READ)],
    context: ContextDep,
    direction: Annotated[Literal["up", "down"], Query()] = "up",
) -> Response:
    """Where the artifact came from (``up``) or what was made from it (``down``), drawn: each
    task links to its step in its run, each artifact to its page."""
    ctx = service_context(context, tenant, principal)
    with as_page_errors():
        art = artifacts.get_artifact(ctx, artifact_id)
        tree = artifacts.get_lineage(ctx, art.id, direction, depth=16)
    nodes, edges, docs = graph.lineage_graph(tree.artifact, direction)
    drawing = graph.layout(nodes, edges)
    view = viewer(request, context, principal, tenant)
    return render(
        request, "lineage.html", view, art=art, drawing=drawing, docs=docs, direction=direction
    )
