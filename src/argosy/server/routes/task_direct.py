"""Direct transfers between a task and S3: the task store hands out presigned URLs, so a task's
bytes go task <-> object store and the server carries only metadata (issue 15, data path).

Same token, same rules as ``task_store.py`` — this only changes where the bytes travel:

- **Reads.** ``GET /api/v1/task-store/{blob key}`` with ``X-Argosy-Direct: s3`` is answered
  with ``307`` to a presigned GET of exactly that object, once :func:`task_store.allowed` has
  let the attempt read it (its inputs, code, environment, its own uploads). Encrypted tenants
  too: the object is ciphertext, and the task decrypts it with the data keys its invocation
  carries, as it does with bytes the server streams (and verifies the plaintext's sha256).
- **Uploads.** ``POST /api/v1/task-store-uploads {key}`` for a blob key answers ``201`` with a
  presigned PUT of exactly that key that writes it only if it does not exist
  (``If-None-Match: *``) and only with bytes whose sha256 is the key's (the signed
  ``x-amz-checksum-sha256``; S3 refuses other bytes). The task sends the bytes, then
  ``POST /api/v1/task-store-uploads/done {key, etag}``: the server checks the object is there
  with that ETag (the task can know it only from its own PUT's answer — or the bytes' MD5, which
  again needs the bytes) and S3's recorded checksum when it keeps one, and records the blob as
  the attempt's upload (``auth/uploads.py``), so the accepted-outputs rule holds unchanged.
  ``409``: the blob exists already — the task proves it holds it by uploading through the task
  store, which hashes the bytes and keeps its copy. ``204``: no direct upload here (not S3,
  turned off, or the tenant's artifacts are encrypted at rest: the server must see the
  plaintext's hash, which S3's checksum of the ciphertext cannot tell) — upload through the
  task store.

Old task runtimes never send ``X-Argosy-Direct`` nor call these routes, and keep working.
The routes are on the task store's router (``task_store.py`` imports this module).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict

from argosy.auth.uploads import remember_upload
from argosy.errors import StoreError
from argosy.server.identity import ContextDep
from argosy.server.problems import ApiProblem
from argosy.server.routes.task_store import _BLOB, ClaimsDep, _grant, allowed, router
from argosy.stores.artifacts.s3 import S3ByteStore

DIRECT_HEADER = "x-argosy-direct"


def _s3(context: Any, tenant: str) -> S3ByteStore | None:
    """The tenant's S3 byte store, when presigned URLs are on for this deployment."""
    if not getattr(context.settings, "task_store_presign", False):
        return None
    backend = context.store(tenant).backend
    return backend if isinstance(backend, S3ByteStore) else None


def presigned_read(request: Request, context: Any, tenant: str, key: str) -> Response | None:
    """307 to a presigned GET of ``key`` (a blob the caller may read: checked already), when
    the task asked for it; None to stream the bytes through the server."""
    if request.headers.get(DIRECT_HEADER) != "s3" or _BLOB.match(key) is None:
        return None
    s3 = _s3(context, tenant)
    if s3 is None:
        return None
    try:
        url = s3.presigned_get(key, context.settings.presign_seconds)
    except StoreError:
        return None  # the bytes through the server, then
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str


class UploadDone(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    etag: str


def _blob_sha(claims: Any, key: str) -> str:
    blob = _BLOB.match(key)
    if blob is None or blob.group("tenant") != claims.tenant:
        raise ApiProblem(422, f"{key!r} is not a blob key of tenant {claims.tenant}: only blobs "
                         "are uploaded directly", code="not_a_blob_key")  # fmt: skip
    return blob.group("sha")


@router.post("/task-store-uploads")
def start_upload(body: UploadRequest, claims: ClaimsDep, context: ContextDep) -> Response:
    """A presigned PUT for exactly ``key``, once (see the module docstring)."""
    allowed(context, claims, body.key, "write")
    sha = _blob_sha(claims, body.key)
    s3 = _s3(context, claims.tenant)
    if s3 is None or context.store(claims.tenant).cipher is not None:
        return Response(status_code=204)
    try:
        if s3.exists(body.key):
            return JSONResponse({"detail": "stored already: upload it through the task store "
                                 "to prove the attempt holds it"}, status_code=409)  # fmt: skip
        seconds = context.settings.presign_seconds
        url, headers = s3.presigned_put(body.key, sha, seconds)
    except StoreError as exc:
        raise ApiProblem(503, str(exc), code="store_unavailable") from None
    return JSONResponse({"url": url, "headers": headers, "expires_in": seconds}, status_code=201)


@router.post("/task-store-uploads/done")
def finish_upload(body: UploadDone, claims: ClaimsDep, context: ContextDep) -> Response:
    """Record a direct upload as the attempt's, once S3 has the object as the task says."""
    allowed(context, claims, body.key, "write")
    sha = _blob_sha(claims, body.key)
    s3 = _s3(context, claims.tenant)
    if s3 is None:
        raise ApiProblem(409, "direct uploads are off here: upload through the task store",
                         code="direct_upload_off")  # fmt: skip
    try:
        found = s3.describe(body.key)
    except StoreError as exc:
        raise ApiProblem(503, str(exc), code="store_unavailable") from None
    if found is None or found["etag"] != body.etag.strip('"'):
        raise ApiProblem(422, f"{body.key!r} is not the object this attempt uploaded (no such "
                         "object, or another ETag): upload it again", code="upload_not_found")  # fmt: skip
    if found["sha256"] not in (None, sha):
        raise ApiProblem(422, f"S3 recorded sha256:{found['sha256']} for {body.key!r}, not the "
                         "key's hash", code="blob_hash_mismatch")  # fmt: skip
    remember_upload(context.metadata, tenant=claims.tenant, attempt_id=claims.attempt_id,
                    sha256=sha, size=found["size"])  # fmt: skip
    _grant(context, claims).written.add(sha)
    return Response(status_code=201)
