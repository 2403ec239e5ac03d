"""Blobs: the content-addressed bytes a pipeline version references (code packages,
environment manifests), uploaded before the version that needs them is pushed.

``PUT .../blobs/{sha256}`` streams the body to a temporary file while hashing it (constant
memory, any size), checks the hash against the URL, and stores the file in the tenant's
artifact store. Uploading the same bytes again is harmless (200 instead of 201).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated

import anyio
from fastapi import Depends, Path, Request, Response

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses
from argosy.server.routes import tenant_router
from argosy.stores.artifacts.blobs import BlobInfo

router = tenant_router("blobs")

SHA256_PATTERN = r"^[0-9a-f]{64}$"
Sha256Path = Annotated[
    str, Path(pattern=SHA256_PATTERN, description="the blob's sha256: 64 lowercase hex digits")
]
WRITE_BATCH = 1024 * 1024  # bytes buffered before one write to the temporary file


@dataclass
class Upload:
    """A request body spooled to a temporary file, with its sha256 and size."""

    path: FsPath
    sha256: str
    size: int


async def upload_body(request: Request, context: ContextDep) -> AsyncIterator[Upload]:
    """Stream the request body to a temporary file next to the store, hashing as it comes.

    The file is removed after the request unless the store took it (``put_file(move=True)``).
    """
    folder = context.settings.home / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix="blob-", suffix=".part")
    path = FsPath(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            pending: list[bytes] = []
            buffered = 0
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BATCH:
                    await anyio.to_thread.run_sync(fh.write, b"".join(pending))
                    pending, buffered = [], 0
            if pending:
                await anyio.to_thread.run_sync(fh.write, b"".join(pending))
        yield Upload(path, digest.hexdigest(), size)
    finally:
        path.unlink(missing_ok=True)


BLOB_BODY = {
    "requestBody": {
        "required": True,
        "description": "the blob's bytes (any size; streamed)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/blobs/{sha256}",
    response_model=api.Blob,
    status_code=201,
    summary="Upload a blob",
    responses={200: {"model": api.Blob, "description": "already stored"}, **problem_responses()},
    openapi_extra=BLOB_BODY,
)
def put_blob(
    sha256: Sha256Path,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.BLOB_WRITE)],
    context: ContextDep,
    upload: Annotated[Upload, Depends(upload_body)],
    response: Response,
) -> api.Blob:
    """Store the body as the blob ``sha256`` (201), or confirm it is already stored (200).

    A body whose sha256 differs from the URL's is refused (422 ``blob_hash_mismatch``).
    """
    if upload.sha256 != sha256:
        raise ApiProblem(
            422,
            f"the uploaded bytes hash to sha256 {upload.sha256} ({upload.size} bytes), not "
            f"{sha256}; the upload was corrupted or the URL names another blob: upload again",
            code="blob_hash_mismatch",
        )
    store = context.store(tenant)
    if store.has_blob(sha256):
        response.status_code = 200
        return api.Blob(sha256=sha256, size=upload.size)
    store.put_file(upload.path, BlobInfo(sha256, upload.size), move=True)
    return api.Blob(sha256=sha256, size=upload.size)


@router.head(
    "/blobs/{sha256}",
    status_code=200,
    summary="Check that a blob is stored",
    response_class=Response,
    responses={200: {"description": "the blob is stored"}, **problem_responses(404)},
)
def head_blob(
    sha256: Sha256Path,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.PIPELINE_READ)],
    context: ContextDep,
) -> Response:
    """200 if the tenant's store holds the blob, 404 if it must be uploaded."""
    if not context.store(tenant).has_blob(sha256):
        raise ApiProblem(
            404,
            f"blob sha256:{sha256} is not stored in tenant {tenant!r}; upload it with "
            f"PUT /api/v1/tenants/{tenant}/blobs/{sha256}",
            code="blob_not_found",
        )
    return Response(status_code=200)
