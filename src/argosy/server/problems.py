"""Error responses as RFC 9457 ``application/problem+json`` documents.

Every error the API returns is a :class:`~argosy.api.Problem`: ``title`` (the HTTP
reason), ``status``, ``detail`` (one sentence: what happened and what to do next) and a stable
``code`` clients may branch on. The mapping from Argosy's error hierarchy is in one table
(:data:`STATUS_OF`), so a new error class gets the right status in every route at once.

A database that cannot be reached (a transient SQLAlchemy error, a pool timeout) is a
``503`` with ``Retry-After``: the request can be repeated as is once the database is back,
and the server process itself keeps running.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy import errors
from argosy.api import Problem
from argosy.stores.metadata.db import error_summary, is_transient

log = logging.getLogger("argosy.server")

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_S = 5  # what a 503 asks the client to wait before trying again

# most specific class first: the first isinstance match wins
STATUS_OF: list[tuple[type[errors.ArgosyError], int, str]] = [
    (errors.NotFoundError, 404, "not_found"),
    (errors.QuotaExceededError, 413, "quota_exceeded"),
    (errors.VersionConflictError, 409, "version_tag_conflict"),
    (errors.ConflictError, 409, "conflict"),
    (errors.UsageError, 422, "invalid_request"),
    (errors.PipelineDefinitionError, 422, "invalid_pipeline"),
    (errors.IntegrityError, 500, "stored_data_corrupted"),
    (errors.StoreError, 503, "store_unavailable"),
    (errors.RunBusyError, 409, "run_busy"),
    (errors.SerializationError, 500, "serialization_error"),
    (errors.ExecutionError, 500, "execution_error"),
    (errors.ServerError, 502, "upstream_error"),
]

DESCRIPTIONS = {
    400: "The request is malformed",
    404: "What the request names does not exist",
    409: "The request conflicts with the current state",
    413: "The request or what it would store is too large (`detail` names the limit)",
    416: "The requested byte range is outside the content",
    422: "The request is invalid: `detail` names the field and the fix",
    500: "An unexpected error (logged by the server)",
    503: "The metadata database or artifact store is unavailable; retry after `Retry-After` seconds",
}


class ApiProblem(Exception):
    """Raised by a route to answer with a specific problem (status, code, detail, headers)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


def title_of(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A ``application/problem+json`` response following the ``Problem`` model."""
    body = Problem(
        title=title_of(status), status=status, detail=detail, code=code, instance=instance,
        **(extra or {}),
    ).model_dump(mode="json", exclude_none=True)  # fmt: skip
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status documented as a ``Problem`` (422 and 503
    are always included: every route validates its input and reads the database)."""
    wanted = sorted({*statuses, 422, 503})
    return {s: {"model": Problem, "description": DESCRIPTIONS.get(s, title_of(s))} for s in wanted}


def unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not reachable now" (503, retry) rather than a refusal:
    a transient error, a pool timeout, or any failure to connect or to keep the connection."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if is_transient(exc) or exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError | InterfaceError):
        state = getattr(getattr(exc, "orig", None), "sqlstate", None)
        # no SQLSTATE: the connection could not be opened or was lost; 08xxx: connection
        # exceptions; 57P0x: the server is shutting down or not accepting connections
        return state is None or str(state).startswith(("08", "57P"))
    return False


def _unavailable(detail: str, request: Request) -> JSONResponse:
    return problem_response(
        503, detail, code="unavailable", instance=request.url.path,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )  # fmt: skip


def _field(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where = parts[0]
        rest = ".".join(parts[1:])
        return f"{where} field {rest!r}" if rest else f"the request {where}"
    return ".".join(parts) or "the request"


def validation_detail(exc_errors: Iterable[Any]) -> str:
    """One line per failing field: where, and pydantic's message."""
    items = list(exc_errors)
    parts = []
    for err in items[:5]:
        loc = err.get("loc", ()) if isinstance(err, dict) else ()
        msg = err.get("msg", "invalid") if isinstance(err, dict) else str(err)
        if isinstance(err, dict) and err.get("type") == "extra_forbidden":
            msg = "unknown field (remove it; check its spelling against the API reference)"
        parts.append(f"{_field(loc)}: {msg}")
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return "; ".join(parts) + more + "; fix the request and send it again"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into a problem response."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, code=exc.code, instance=request.url.path,
            headers=exc.headers, extra=exc.extra,
        )  # fmt: skip

    @app.exception_handler(errors.ArgosyError)
    async def _argosy(request: Request, exc: errors.ArgosyError) -> JSONResponse:
        status, code = 500, "internal_error"
        for cls, s, c in STATUS_OF:
            if isinstance(exc, cls):
                status, code = s, c
                break
        if status == 503:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return _unavailable(f"{exc}; retry later", request)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return problem_response(
            status, str(exc), code=exc.code or code, instance=request.url.path,
            extra=dict(exc.extra),
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422, validation_detail(exc.errors()), code="validation_error",
            instance=request.url.path,
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else title_of(exc.status_code)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no API route {request.url.path!r}; see /api/v1/docs for the routes there are"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /api/v1/docs"
        return problem_response(
            exc.status_code, detail, code=None, instance=request.url.path,
            headers=dict(exc.headers or {}),
        )  # fmt: skip

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if unavailable(exc):
            log.warning("%s %s: database unavailable: %s", request.method, request.url.path,
                        error_summary(exc))  # fmt: skip
            return _unavailable(
                f"the metadata database is unavailable ({error_summary(exc)}); the request "
                f"was not completed: retry it in {RETRY_AFTER_S} seconds",
                request,
            )
        log.exception("%s %s: database error", request.method, request.url.path)
        return problem_response(
            500, "the metadata database refused the request; the server logged the error: "
            "report it to the platform team with this request's time", code="database_error",
            instance=request.url.path,
        )  # fmt: skip

    app.add_middleware(CatchAll)


def internal_error(path: str) -> JSONResponse:
    return problem_response(
        500, "an unexpected error occurred; the server logged it: report it to the platform "
        "team with this request's time", code="internal_error", instance=path,
    )  # fmt: skip


class CatchAll:
    """Any exception no handler took becomes a logged 500 problem (once: Starlette's own
    last-resort handler would log it again and re-raise it to the ASGI server). A response
    already being streamed cannot change its status: that exception is left to Starlette."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("%s %s: unexpected error", scope.get("method"), scope.get("path"))
            await internal_error(str(scope.get("path", "")))(scope, receive, send)


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Publish error responses as ``application/problem+json`` (FastAPI documents every
    response under the route's media type, ``application/json``)."""
    ref = "#/components/schemas/Problem"
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if status[:1] not in ("4", "5"):
                    continue
                content = response.get("content", {})
                doc = content.get("application/json")
                if doc is not None and doc.get("schema", {}).get("$ref") == ref:
                    content[MEDIA_TYPE] = content.pop("application/json")
    components = schema.get("components", {}).get("schemas", {})
    text = repr(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in components and f"/{unused}'" not in text:
            components.pop(unused)
    return schema
