"""Uploads: local files and folders sent for runs in resumable, verified chunks
(:mod:`argosy.service.uploads`).

``POST .../uploads`` declares one (413 ``storage_quota_exceeded`` past the tenant's quota;
complete at once if the bytes are stored already), ``PUT .../uploads/{id}?offset=N`` sends
the bytes at ``N`` (409 ``upload_offset`` with ``received`` when another offset is due: ask
``GET .../uploads/{id}`` and continue from ``received``), ``POST .../uploads/{id}/complete``
verifies the sha256 and stores the blob (422 ``upload_corrupted`` when it does not match).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import problem_responses
from argosy.server.routes import service_context, tenant_router
from argosy.server.routes.blobs import Upload as Body
from argosy.server.routes.blobs import upload_body
from argosy.service import uploads

router = tenant_router("uploads")

UploadIdPath = Annotated[str, Path(pattern=r"^[0-9A-Z]{26}$", description="the upload's id")]
CHUNK_BODY = {
    "requestBody": {
        "required": True,
        "description": f"the bytes at `offset` (at most {uploads.MAX_CHUNK_BYTES} per request)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/uploads",
    response_model=api.Upload,
    status_code=201,
    summary="Start an upload",
    responses=problem_responses(413, 422),
)
def create_upload(
    body: api.UploadCreate,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.BLOB_WRITE)],
    context: ContextDep,
) -> api.Upload:
    """Declare a file (or a folder's tar) to upload; ``completed`` at once when its bytes
    are stored already."""
    return uploads.create_upload(service_context(context, tenant, principal), body)


@router.get(
    "/uploads/{upload_id}",
    response_model=api.Upload,
    summary="Get an upload (how many bytes it has)",
    responses=problem_responses(404),
)
def get_upload(
    upload_id: UploadIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.BLOB_WRITE)],
    context: ContextDep,
) -> api.Upload:
    return uploads.get_upload(service_context(context, tenant, principal), upload_id)


@router.put(
    "/uploads/{upload_id}",
    response_model=api.Upload,
    summary="Send the bytes at an offset",
    responses=problem_responses(404, 409, 422),
    openapi_extra=CHUNK_BODY,
)
def put_chunk(
    upload_id: UploadIdPath,
    offset: Annotated[
        int, Query(ge=0, description="where these bytes go: the upload's `received`")
    ],
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.BLOB_WRITE)],
    context: ContextDep,
    chunk: Annotated[Body, Depends(upload_body)],
) -> api.Upload:
    return uploads.append(
        service_context(context, tenant, principal), upload_id, offset, chunk.path
    )


@router.post(
    "/uploads/{upload_id}/complete",
    response_model=api.Upload,
    summary="Verify and store an upload",
    responses=problem_responses(404, 422),
)
def complete_upload(
    upload_id: UploadIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.BLOB_WRITE)],
    context: ContextDep,
) -> api.Upload:
    """Join the chunks, check their sha256 against the declared one, store the blob."""
    return uploads.complete(
        service_context(context, tenant, principal), upload_id, context.settings.home / "uploads"
    )
