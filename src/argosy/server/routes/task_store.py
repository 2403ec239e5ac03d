"""The task-store endpoint: the only way a task process on a server reaches artifacts.

Authorized by the attempt's task token (``auth/task_credentials.py``), not by a user's
identity, and only while its attempt runs (a settled attempt's token is void, 401); what a
token allows is decided by :func:`allowed`. Every refusal is a 403 problem
that the audit middleware records with the task as the actor.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from argosy.auth.policy import Action
from argosy.auth.principal import Principal
from argosy.auth.task_credentials import TaskClaims, TaskGrant, TaskTokenError, attempt_is_live
from argosy.auth.uploads import may_know, remember_upload
from argosy.errors import IntegrityError, StoreError
from argosy.server.identity import ContextDep, already_admitted, declares
from argosy.server.problems import ApiProblem
from argosy.server.routes.blobs import Upload, upload_body
from argosy.stores.encryption import MAGIC, is_encrypted

router = APIRouter(prefix="/api/v1", tags=["task-store"], include_in_schema=False)

_BLOB = re.compile(
    r"^tenants/(?P<tenant>[a-z0-9-]+)/blobs/sha256/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})$"
)


@declares(Action.TASK)
def task_claims(request: Request, context: ContextDep) -> TaskClaims:
    """The caller's task claims, from ``Authorization: Bearer argosy-task...``."""
    done, found = already_admitted(request, task_claims)
    if done:
        return found  # type: ignore[no-any-return]
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ").strip()
    request.state.action = Action.TASK
    if token and not token.startswith("argosy-task."):  # a user's or service's credential
        raise ApiProblem(403, "only task processes use the task store, with their task token",
                         code="task_access_denied")  # fmt: skip
    try:
        claims = context.task_tokens.verify(token)
    except TaskTokenError as exc:
        raise ApiProblem(
            401, f"{exc}; only task processes use this endpoint", code="invalid_task_token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None  # fmt: skip
    if not attempt_is_live(context.task_grants, context.metadata, claims.attempt_id,
                           shared=context.task_tokens.shared):  # fmt: skip
        raise ApiProblem(
            401, f"attempt {claims.attempt_id} ({claims.run_id}/{claims.node_path}) has ended: "
            "its task token is void", code="invalid_task_token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )  # fmt: skip
    request.state.principal = Principal(
        subject=f"task:{claims.attempt_id}", name=f"task {claims.run_id}/{claims.node_path}",
        kind="task",
    )  # fmt: skip
    return claims


ClaimsDep = Annotated[TaskClaims, Depends(task_claims)]


def _grant(context: Any, claims: TaskClaims) -> TaskGrant:
    grant: TaskGrant | None = context.task_grants.get(claims.attempt_id)
    if grant is None:
        raise ApiProblem(
            403, "this attempt is over: its task token is void", code="task_not_running"
        )
    return grant


def _deny(claims: TaskClaims, key: str, why: str) -> ApiProblem:
    return ApiProblem(
        403,
        f"attempt {claims.attempt_id} ({claims.run_id}/{claims.node_path}) may not {why} {key!r}",
        code="task_access_denied",
    )  # fmt: skip


def may_read(context: Any, claims: TaskClaims, sha256: str) -> bool:
    """Whether the attempt may read blob ``sha256``: one of its inputs (an input collection's
    elements included), its code or environment, or a blob it uploaded itself."""
    grant = _grant(context, claims)
    if may_know(grant.reads, grant.written, sha256):
        return True
    store = context.store(claims.tenant)
    for collection in list(grant.collections):  # elements of an input collection, read once
        grant.collections = [c for c in grant.collections if c != collection]
        for element in json.loads(store.read_blob(collection)):
            if element is not None:
                grant.reads.add(element["sha256"])
    return may_know(grant.reads, grant.written, sha256)


def allowed(context: Any, claims: TaskClaims, key: str, mode: str) -> None:
    """Raise 403 unless the attempt may ``mode`` (read|exists|write) ``key``."""
    if not key.startswith(f"tenants/{claims.tenant}/") or ".." in key.split("/"):
        raise _deny(claims, key, f"{mode} outside its tenant:")
    blob = _BLOB.match(key)
    if blob is not None:
        if mode in ("exists", "write"):
            return  # content-addressed: writing bytes (proved by their hash) or asking is safe
        if may_read(context, claims, blob.group("sha")):
            return
        raise _deny(claims, key, "read a blob that is not one of its inputs:")
    if key.startswith(claims.record_prefix):
        return
    if mode == "exists" and key.startswith(f"tenants/{claims.tenant}/quarantine/"):
        return
    raise _deny(claims, key, f"{mode} a record outside its own attempt:")


@router.head("/task-store/{key:path}")
def head_object(key: str, claims: ClaimsDep, context: ContextDep) -> Response:
    """Whether ``key`` exists — for a blob, only one the attempt uploaded or was granted: of
    any other it must upload the bytes (``auth/uploads.py``: accepted outputs)."""
    allowed(context, claims, key, "exists")
    blob = _BLOB.match(key)
    if blob is not None and not may_read(context, claims, blob.group("sha")):
        return Response(status_code=404)
    exists = context.store(claims.tenant).backend.exists(key)
    return Response(status_code=200 if exists else 404)


@router.get("/task-store/{key:path}")
def get_object(key: str, claims: ClaimsDep, context: ContextDep, request: Request) -> Response:
    allowed(context, claims, key, "read")
    from argosy.server.routes.task_direct import presigned_read

    direct = presigned_read(request, context, claims.tenant, key)  # S3: a presigned GET
    if direct is not None:
        return direct
    backend = context.store(claims.tenant).backend
    try:
        stream = backend.open(key)
    except FileNotFoundError:
        return Response(status_code=404)

    def chunks() -> Any:
        with stream:
            while chunk := stream.read(1024 * 1024):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@router.put("/task-store/{key:path}")
def put_object(
    key: str,
    claims: ClaimsDep,
    context: ContextDep,
    upload: Annotated[Upload, Depends(upload_body)],
) -> Response:
    allowed(context, claims, key, "write")
    store = context.store(claims.tenant)
    blob = _BLOB.match(key)
    try:
        if blob is not None:
            sha = blob.group("sha")
            if _plaintext_sha256(store, upload, key) != sha:
                raise ApiProblem(422,
                                 f"the body's plaintext does not hash to sha256:{sha}, the key's; "
                                 "blobs are stored under the hash of their bytes",
                                 code="blob_hash_mismatch")  # fmt: skip
            remember_upload(context.metadata, tenant=claims.tenant,  # proved: it holds them
                            attempt_id=claims.attempt_id, sha256=sha, size=upload.size)  # fmt: skip
            _grant(context, claims).written.add(sha)
            if store.backend.exists(key):
                return Response(status_code=200)  # stored already: the copy is discarded
        store.backend.put_file(key, upload.path, move=True)
    except StoreError as exc:
        raise ApiProblem(503, str(exc), code="store_unavailable") from None
    return Response(status_code=201)


def _plaintext_sha256(store: Any, upload: Upload, key: str) -> str | None:
    """The sha256 of an uploaded blob's plaintext (decrypted with the tenant's key when the
    task encrypted it); None if it cannot be decrypted."""
    with upload.path.open("rb") as f:
        encrypted = is_encrypted(f.read(len(MAGIC)))
    if not encrypted:
        return upload.sha256
    if store.cipher is None:
        return None
    try:
        with upload.path.open("rb") as f, open(os.devnull, "wb") as sink:
            sha, _ = store.cipher.decrypt_stream(f, sink, key)
    except IntegrityError:
        return None
    result: str = sha
    return result


@router.get("/task-store")
def list_objects(prefix: str, claims: ClaimsDep, context: ContextDep) -> dict[str, list[str]]:
    allowed(context, claims, prefix, "exists")
    return {"keys": list(context.store(claims.tenant).backend.list(prefix))}


class RenameBody(BaseModel):
    key: str
    new_key: str


@router.post("/task-store-rename")
def rename_object(body: RenameBody, claims: ClaimsDep, context: ContextDep) -> Response:
    """Only to quarantine a corrupted blob of its own tenant (``ArtifactStore._corrupted``)."""
    quarantine = f"tenants/{claims.tenant}/quarantine/"
    if _BLOB.match(body.key) is None or not body.new_key.startswith(quarantine):
        raise _deny(claims, body.key, "rename")
    allowed(context, claims, body.key, "exists")
    context.store(claims.tenant).backend.rename(body.key, body.new_key)
    return Response(status_code=204)


# presigned S3 transfers: routes on this router, same token and rules (task_direct.py)
from argosy.server.routes import task_direct as task_direct  # noqa: E402
