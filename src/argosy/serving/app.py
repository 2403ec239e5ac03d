"""The prediction service of one model alias (``argosy models serve MODEL@ALIAS``).

``POST /predict`` answers with the version the alias points at; a background thread reads the
alias every ``poll`` seconds and, when it moved, loads the new version completely before
swapping one reference, so a request is answered wholly by the old version or wholly by the
new one and none fails during a swap. ``GET /health`` (open), ``GET /metadata`` (model,
version, schemas, metrics, lineage link), ``GET /metrics`` (Prometheus, open).

``/predict`` and ``/metadata`` need ``Authorization: Bearer TOKEN`` unless the service was
started with ``--insecure``: with a server, any token the server accepts with at least the
viewer role on the model's tenant (the service asks the server, and remembers the answer for
:data:`TOKEN_CACHE_S` seconds); locally, the token in ``ARGOSY_SERVING_TOKEN``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from argosy import api
from argosy.serving.metrics import ServingMetrics
from argosy.serving.model import LoadedModel, RequestProblem

if TYPE_CHECKING:
    from argosy.client.backend import Backend

log = logging.getLogger("argosy.serving")

TOKEN_CACHE_S = 30.0
MAX_BODY_BYTES = 64 * 1024 * 1024
PROBLEM = "application/problem+json"


# -- who may call ----------------------------------------------------------------------------
class Tokens(Protocol):
    def allows(self, token: str) -> bool:
        """Whether a request with this bearer token may be answered."""


class Insecure:
    """``--insecure``: everyone (the service says so at start)."""

    def allows(self, token: str) -> bool:
        return True


class StaticToken:
    """Local mode: the one token the service was given."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def allows(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._token)


class ServerTokens:
    """The server decides: a token that may read the model (viewer on its tenant) may predict.
    Answers (yes and no) are remembered for ``ttl`` seconds, keyed by the token's sha256."""

    def __init__(self, server: str, tenant: str, model: str, ttl: float = TOKEN_CACHE_S) -> None:
        import httpx

        self._url = f"{server.rstrip('/')}{api.API_PREFIX}/tenants/{tenant}/models/{model}"
        self._ttl = ttl
        self._seen: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=10)

    def allows(self, token: str) -> bool:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            found = self._seen.get(key)
        if found is not None and found[1] > now:
            return found[0]
        response = self._http.get(self._url, headers={"Authorization": f"Bearer {token}"})
        if response.status_code not in (200, 401, 403, 404):
            response.raise_for_status()  # the server is in trouble: not a "no"
        allowed = response.status_code == 200
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = (allowed, now + self._ttl)
        return allowed


# -- which version -------------------------------------------------------------------------
def load_version(backend: Backend, version: api.ModelVersion) -> Any:
    """The model object of ``version``, read by its serializer (tenant-checked)."""
    from argosy.client.runs import Output

    art = backend.get_artifact(version.artifact_id)
    ref = api.ArtifactRef(
        artifact_id=art.id, ref=art.ref, type=art.type, format=art.format, sha256=art.sha256,
        size=art.size,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="argosy-serve-") as tmp:
        return Output(ref, backend).load(into=Path(tmp))


class Follower:
    """The loaded version of ``model@which``, replaced when the alias moves."""

    def __init__(
        self,
        backend: Backend,
        model: str,
        which: str | None,
        metrics: ServingMetrics,
        *,
        poll: float = 5.0,
        follow: bool = True,
        loader: Callable[[Backend, api.ModelVersion], Any] = load_version,
    ) -> None:
        self.backend, self.model, self.which = backend, model, which
        self.metrics, self.poll, self.follow, self.loader = metrics, poll, follow, loader
        self.alias_missing = False
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current = self._load(backend.get_model_version(model, which))
        metrics.swapped(self.current.version.version, first=True)

    def _load(self, version: api.ModelVersion) -> LoadedModel:
        return LoadedModel.of(version, self.loader(self.backend, version))

    def check(self) -> bool:
        """Read the alias once; load and swap when it moved. Whether it swapped."""
        from argosy.errors import NotFoundError

        try:
            found = self.backend.get_model_version(self.model, self.which)
        except NotFoundError as exc:  # demoted: keep serving what was served, and say so
            self.alias_missing, self.last_error = True, str(exc)
            return False
        self.alias_missing = False
        if found.id == self.current.version.id:
            return False
        loaded = self._load(found)  # completely, before anyone sees it
        self.current = loaded  # one reference: requests hold the version they started with
        self.metrics.swapped(found.version, first=False)
        log.warning(
            "%s@%s: now serving version %s", self.model, self.which or "latest", found.version
        )
        return True

    def start(self) -> None:
        if not self.follow or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="argosy-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check()
                self.last_error = None if not self.alias_missing else self.last_error
            except Exception as exc:  # a server or store away: keep serving, try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not check %s: %s", self.model, self.last_error)


# -- the application ---------------------------------------------------------------------------
def _problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="argosy"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def create_app(
    follower: Follower,
    tokens: Tokens,
    metrics: ServingMetrics,
    *,
    lineage: Callable[[api.ModelVersion], dict[str, Any]] | None = None,
) -> FastAPI:
    """The service's ASGI application (``lineage``: the lineage link of a version)."""
    which = follower.which or "latest"
    app = FastAPI(
        title=f"Argosy prediction service: {follower.model}@{which}",
        docs_url=None, redoc_url=None, openapi_url=None,
    )  # fmt: skip

    async def refused(request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if isinstance(tokens, Insecure):
            return None
        if scheme.lower() != "bearer" or not token.strip():
            metrics.error("unauthorized")
            return _problem(
                401, "Unauthorized", "send Authorization: Bearer TOKEN (an Argosy token with "
                "the viewer role on the model's tenant)", code="unauthenticated",
            )  # fmt: skip
        try:
            allowed = await run_in_threadpool(tokens.allows, token.strip())
        except Exception as exc:
            metrics.error("auth_unavailable")
            return _problem(503, "Service Unavailable", f"cannot check the token now: {exc}")
        if not allowed:
            metrics.error("forbidden")
            return _problem(
                403, "Forbidden", "this token may not read the model (needs the viewer role on "
                "its tenant)", code="forbidden",
            )  # fmt: skip
        return None

    @app.get("/health")
    def health() -> dict[str, Any]:
        v = follower.current.version
        return {
            "status": "ok", "model": v.model, "alias": which, "version": v.version,
            "signature": v.signature, "alias_missing": follower.alias_missing,
            "last_error": follower.last_error,
        }  # fmt: skip

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/metadata", response_model=None)
    async def metadata(request: Request) -> Any:
        if (no := await refused(request)) is not None:
            return no
        loaded = follower.current
        v = loaded.version
        return {
            "model": v.model, "alias": which, "version": v.version, "version_id": v.id,
            "artifact": v.artifact, "sha256": v.sha256, "format": v.format, "type": v.type,
            "run_id": v.run_id, "pipeline": v.pipeline, "pipeline_digest": v.pipeline_digest,
            "training_data": v.training_data,
            "input_schema": v.input_schema.model_dump() if v.input_schema else None,
            "output_schema": v.output_schema.model_dump() if v.output_schema else None,
            "columns": [c.name for c in loaded.columns], "signature": v.signature,
            "metrics": v.metrics, "lineage": lineage(v) if lineage else {"artifact": v.artifact},
            "loaded_at": loaded.loaded_at,
        }  # fmt: skip

    @app.post("/predict", response_model=None)
    async def predict(request: Request) -> Any:
        started = time.perf_counter()
        if (no := await refused(request)) is not None:
            metrics.observe(None, no.status_code, time.perf_counter() - started, 0)
            return no
        loaded = follower.current  # this request's version, whatever swaps meanwhile
        version = loaded.version.version
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _problem(413, "Content Too Large", f"at most {MAX_BODY_BYTES} bytes")
        try:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise RequestProblem(
                    [{"row": None, "field": "body", "message": f"not JSON: {exc}"}]
                ) from None
            predictions = await run_in_threadpool(loaded.predict, body)
        except RequestProblem as problem:
            metrics.error("invalid")
            metrics.observe(version, 422, time.perf_counter() - started, 0)
            return _problem(
                422, "Unprocessable Content", str(problem), code="invalid_request",
                errors=problem.problems, error_count=problem.total,
                field=problem.problems[0]["field"],
            )  # fmt: skip
        except Exception as exc:  # the model itself failed
            metrics.error("failed")
            metrics.observe(version, 500, time.perf_counter() - started, 0)
            log.exception("prediction failed")
            return _problem(
                500, "Prediction Failed", f"{type(exc).__name__}: {exc}", code="prediction_failed"
            )
        metrics.observe(version, 200, time.perf_counter() - started, len(predictions))
        return {"model": loaded.version.model, "version": version, "predictions": predictions}

    return app
