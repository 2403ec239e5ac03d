"""SCIM 2.0 endpoints (``/scim/v2``) for identity providers: Users, Groups and discovery.

Protected by one bearer token, ``settings.scim_token`` (compared in constant time); with no
token configured SCIM is disabled and every ``/scim/v2`` path answers 404. Responses are
``application/scim+json``; errors are SCIM error documents (RFC 7644 3.12). The logic lives in
:mod:`argosy.auth.scim`; this module parses requests and maps errors.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from argosy.auth import scim
from argosy.auth.policy import Action
from argosy.auth.principal import Principal
from argosy.server.identity import ACTION_ATTRIBUTE, already_admitted, context_of
from argosy.server.limits import accepts
from argosy.stores.metadata.tables import ScimGroup, User

T = TypeVar("T")
SCIM_PRINCIPAL = Principal(subject="scim", name="scim", kind="service")
MAX_BODY = 1024 * 1024


def scim_client(request: Request) -> None:
    """The caller must present ``settings.scim_token`` as its bearer token (404 if unset)."""
    if already_admitted(request, scim_client)[0]:
        return
    expected = context_of(request).settings.scim_token
    if not expected:
        raise HTTPException(404, "SCIM is disabled on this server: set ARGOSY_SCIM_TOKEN")
    request.state.action = Action.SCIM
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise scim.ScimError(401, "send the SCIM bearer token (Authorization: Bearer ...)")
    request.state.principal = SCIM_PRINCIPAL


setattr(scim_client, ACTION_ATTRIBUTE, Action.SCIM)  # the route table's declared action

# SCIM is its own protocol (RFC 7644), for identity providers: not in Argosy's OpenAPI document
router = APIRouter(
    prefix="/scim/v2", tags=["scim"], dependencies=[Depends(scim_client)], include_in_schema=False
)

StartQ = Annotated[int | None, Query(alias="startIndex", description="1-based index")]
CountQ = Annotated[int | None, Query(description="page size (at most 200)")]
FilterQ = Annotated[str | None, Query(max_length=1000, description='`attr eq "value"`')]


def scim_response(doc: Any, status: int = 200, location: str | None = None) -> JSONResponse:
    headers = {"Location": location} if location else None
    return JSONResponse(doc, status_code=status, media_type=scim.MEDIA_TYPE, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _actor(request: Request) -> scim.Actor:
    client = request.client
    return scim.Actor("scim", client.host if client else None)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise scim.ScimError(413, "the SCIM request body is larger than 1 MiB", "tooMany")
    try:
        doc = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # admission bounds depth first
        raise scim.ScimError(400, "the body is not JSON", "invalidSyntax") from None
    if not isinstance(doc, dict):
        raise scim.ScimError(400, "the body must be a JSON object", "invalidSyntax")
    return doc


async def _in_session(request: Request, fn: Callable[[Session], T]) -> T:
    """``fn(session)`` in one transaction, in the thread pool."""
    context = context_of(request)

    def run() -> T:
        with context.metadata.session() as session:
            return fn(session)

    return await run_in_threadpool(run)


def _list(
    session: Session,
    model: type[User] | type[ScimGroup],
    filters: dict[str, Any],
    text: str | None,
    start_index: int | None,
    count: int | None,
) -> tuple[list[Any], int, int]:
    condition = scim.parse_filter(text, filters)
    start, size = scim.page_bounds(start_index, count)
    query = select(model)
    total_query = select(func.count()).select_from(model)
    if condition is not None:
        query = query.where(condition)
        total_query = total_query.where(condition)
    total = int(session.execute(total_query).scalar_one())
    rows = list(session.scalars(query.order_by(model.id).offset(start - 1).limit(size)).all())
    return rows, total, start


# -- users ------------------------------------------------------------------------------------
@router.get("/Users", summary="List users (SCIM)")
async def list_users(
    request: Request,
    filter: FilterQ = None,
    start_index: StartQ = None,
    count: CountQ = None,
) -> Response:
    def run(session: Session) -> dict[str, Any]:
        rows, total, start = _list(session, User, scim.USER_FILTERS, filter, start_index, count)
        docs = [scim.user_document(u, _base(request)) for u in rows]
        return scim.list_document(docs, total, start)

    return scim_response(await _in_session(request, run))


@router.post("/Users", status_code=201, summary="Create a user (SCIM)")
@accepts("json", max_bytes=MAX_BODY)
async def create_user(request: Request) -> Response:
    body = await _body(request)
    request.state.action = "scim.user.create"

    def run(session: Session) -> dict[str, Any]:
        return scim.user_document(scim.create_user(session, body, _actor(request)), _base(request))

    doc = await _in_session(request, run)
    return scim_response(doc, 201, doc["meta"]["location"])


@router.get("/Users/{user_id}", summary="Get a user (SCIM)")
async def get_user(request: Request, user_id: str) -> Response:
    def run(session: Session) -> dict[str, Any]:
        return scim.user_document(scim.get_user(session, user_id), _base(request))

    return scim_response(await _in_session(request, run))


@router.put("/Users/{user_id}", summary="Replace a user (SCIM)")
@accepts("json", max_bytes=MAX_BODY)
async def replace_user(request: Request, user_id: str) -> Response:
    body = await _body(request)
    request.state.action = "scim.user.replace"

    def run(session: Session) -> dict[str, Any]:
        user = scim.get_user(session, user_id, lock=True)
        return scim.user_document(
            scim.replace_user(session, user, body, _actor(request)), _base(request)
        )

    return scim_response(await _in_session(request, run))


@router.patch("/Users/{user_id}", summary="Modify a user (SCIM PatchOp)")
@accepts("json", max_bytes=MAX_BODY)
async def patch_user(request: Request, user_id: str) -> Response:
    body = await _body(request)
    request.state.action = "scim.user.patch"

    def run(session: Session) -> dict[str, Any]:
        user = scim.get_user(session, user_id, lock=True)
        return scim.user_document(
            scim.patch_user(session, user, body, _actor(request)), _base(request)
        )

    return scim_response(await _in_session(request, run))


@router.delete("/Users/{user_id}", status_code=204, summary="Deprovision a user (SCIM)")
async def delete_user(request: Request, user_id: str) -> Response:
    """Deactivates the user (kept, so its tokens stay refused and its history named)."""
    request.state.action = "scim.user.delete"

    def run(session: Session) -> None:
        user = scim.get_user(session, user_id, lock=True)
        scim.set_active(session, user, False, _actor(request))

    await _in_session(request, run)
    return Response(status_code=204)


# -- groups -----------------------------------------------------------------------------------
@router.get("/Groups", summary="List groups (SCIM)")
async def list_groups(
    request: Request,
    filter: FilterQ = None,
    start_index: StartQ = None,
    count: CountQ = None,
    excluded: Annotated[str | None, Query(alias="excludedAttributes", max_length=200)] = None,
) -> Response:
    def run(session: Session) -> dict[str, Any]:
        rows, total, start = _list(
            session, ScimGroup, scim.GROUP_FILTERS, filter, start_index, count
        )
        names = scim.member_names(session, rows)
        docs = [scim.group_document(g, _base(request), names) for g in rows]
        if excluded and "members" in excluded.lower():
            for d in docs:
                d.pop("members", None)
        return scim.list_document(docs, total, start)

    return scim_response(await _in_session(request, run))


@router.post("/Groups", status_code=201, summary="Create a group (SCIM)")
@accepts("json", max_bytes=MAX_BODY)
async def create_group(request: Request) -> Response:
    body = await _body(request)
    request.state.action = "scim.group.create"

    def run(session: Session) -> dict[str, Any]:
        group = scim.create_group(session, body, _actor(request))
        return scim.group_document(group, _base(request), scim.member_names(session, [group]))

    doc = await _in_session(request, run)
    return scim_response(doc, 201, doc["meta"]["location"])


@router.get("/Groups/{group_id}", summary="Get a group (SCIM)")
async def get_group(request: Request, group_id: str) -> Response:
    def run(session: Session) -> dict[str, Any]:
        group = scim.get_group(session, group_id)
        return scim.group_document(group, _base(request), scim.member_names(session, [group]))

    return scim_response(await _in_session(request, run))


@router.put("/Groups/{group_id}", summary="Replace a group (SCIM)")
@accepts("json", max_bytes=MAX_BODY)
async def replace_group(request: Request, group_id: str) -> Response:
    body = await _body(request)
    request.state.action = "scim.group.replace"

    def run(session: Session) -> dict[str, Any]:
        group = scim.get_group(session, group_id, lock=True)
        scim.replace_group(session, group, body, _actor(request))
        return scim.group_document(group, _base(request), scim.member_names(session, [group]))

    return scim_response(await _in_session(request, run))


@router.patch("/Groups/{group_id}", summary="Modify a group (SCIM PatchOp)")
@accepts("json", max_bytes=MAX_BODY)
async def patch_group(request: Request, group_id: str) -> Response:
    body = await _body(request)
    request.state.action = "scim.group.patch"

    def run(session: Session) -> dict[str, Any]:
        group = scim.get_group(session, group_id, lock=True)
        scim.patch_group(session, group, body, _actor(request))
        return scim.group_document(group, _base(request), scim.member_names(session, [group]))

    return scim_response(await _in_session(request, run))


@router.delete("/Groups/{group_id}", status_code=204, summary="Delete a group (SCIM)")
async def delete_group(request: Request, group_id: str) -> Response:
    request.state.action = "scim.group.delete"

    def run(session: Session) -> None:
        scim.delete_group(session, scim.get_group(session, group_id, lock=True), _actor(request))

    await _in_session(request, run)
    return Response(status_code=204)


# -- discovery --------------------------------------------------------------------------------
@router.get("/ServiceProviderConfig", summary="SCIM service provider configuration")
def service_provider_config(request: Request) -> Response:
    return scim_response(scim.service_provider_config(_base(request)))


@router.get("/Schemas", summary="SCIM schemas")
def schemas(request: Request) -> Response:
    docs = scim.schemas(_base(request))
    return scim_response(scim.list_document(docs, len(docs), 1))


@router.get("/ResourceTypes", summary="SCIM resource types")
def resource_types(request: Request) -> Response:
    docs = scim.resource_types(_base(request))
    return scim_response(scim.list_document(docs, len(docs), 1))


def install(app: FastAPI) -> None:
    """Add the SCIM routes and the handler answering :class:`ScimError` as SCIM documents."""

    @app.exception_handler(scim.ScimError)
    async def _scim_error(request: Request, exc: scim.ScimError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="scim"'} if exc.status == 401 else None
        return JSONResponse(
            exc.document(), status_code=exc.status, media_type=scim.MEDIA_TYPE, headers=headers
        )

    app.include_router(router)
