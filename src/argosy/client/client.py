"""A typed, synchronous client of the Argosy server's REST API (``/api/v1``).

Every method returns the pydantic documents of :mod:`argosy.api`, so the CLI, CI
scripts and notebooks read the same shapes the server writes. Failures become Argosy errors
with the server's own explanation (the problem document's ``detail``):

* the server cannot be reached (DNS, refused, timeout) or refuses the token: ``ServerError``
  (the CLI exits 3);
* 404: ``NotFoundError``; 409: ``ConflictError`` (``VersionConflictError`` when a version
  name already names other content); 400/422: ``UsageError`` (the CLI exits 2);
* anything else (a 5xx that persists): ``ArgosyError`` (exit 1).

Requests that are safe to repeat (GET/HEAD, blob uploads, which are content-addressed, and run
creation, which carries an ``Idempotency-Key``) are retried on connection errors, 429 and 503
with a bounded exponential backoff that honours ``Retry-After``. Any request is retried when
the connection could not even be opened, since the server then never saw it.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel

from argosy import api as models
from argosy.api import (
    API_PREFIX,
    Artifact,
    Blob,
    Health,
    LogLine,
    LogPage,
    Page,
    Pipeline,
    PipelineVersion,
    PipelineVersionCreate,
    PipelineVersionPushed,
    Problem,
    Run,
    RunCreate,
    Schedule,
    ScheduleCreate,
    ScheduleFire,
    Task,
)
from argosy.errors import (
    ArgosyError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    QuotaExceededError,
    ServerError,
    UsageError,
    VersionConflictError,
)

if TYPE_CHECKING:
    from argosy.spec.compile import CompiledPipeline

M = TypeVar("M", bound=BaseModel)

RUN_DONE = frozenset({"succeeded", "failed", "cancelled"})
RETRY_STATUSES = frozenset({429, 503})
CHUNK = 1 << 20


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


class Client:
    """One server, one tenant, one token; use as a context manager (or call :meth:`close`).

    ``retries`` bounds how many times one request is repeated, ``backoff`` is the first wait
    (doubled each time, at most ``max_backoff``, with jitter). ``transport`` replaces httpx's
    network transport (tests pass an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        tenant: str = "default",
        timeout: float = 30.0,
        *,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        refresh: Callable[[], str | None] | None = None,
    ) -> None:
        """``refresh``: called once when the server answers 401, for a new access token (the
        CLI trades a stored refresh token at the identity provider); None: no refresh."""
        if not url.startswith(("http://", "https://")):
            raise UsageError(
                f"server URL {url!r} must start with http:// or https://; "
                "check --server / ARGOSY_SERVER"
            )
        self.url = url.rstrip("/")
        self.tenant = tenant
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.refresh = refresh
        headers = {"Accept": "application/json", "User-Agent": _user_agent()}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )

    # -- plumbing ------------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _t(self, path: str) -> str:
        """A tenant-scoped API path."""
        return f"{API_PREFIX}/tenants/{self.tenant}{path}"

    def _wait_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.8, 1.2)
        if response is not None:
            after = _retry_after(response.headers.get("Retry-After"))
            if after is not None:
                delay = min(max(after, 0.0), 30.0)
        _sleep(delay)

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request (retrying when that is safe) and raise an Argosy error unless it is
        a 2xx or one of ``ok``. A ``stream=True`` response must be closed by the caller."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        attempt = 0
        refreshed = False
        while True:
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the server
                if attempt < self.retries:
                    self._wait_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise self._unreachable(exc) from None
            except httpx.TransportError as exc:
                if idempotent and attempt < self.retries:
                    self._wait_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise self._unreachable(exc) from None
            if response.status_code in RETRY_STATUSES and idempotent and attempt < self.retries:
                response.close()
                self._wait_before_retry(attempt, response)
                attempt += 1
                continue
            if response.is_success or response.status_code in ok:
                return response
            if response.status_code == 401 and self.refresh is not None and not refreshed:
                refreshed = True
                token = self.refresh()  # an expired access token: try a refreshed one once
                if token:
                    response.close()
                    self._http.headers["Authorization"] = f"Bearer {token}"
                    continue
            if stream:
                response.read()
                response.close()
            raise self._error(response)

    def _unreachable(self, exc: Exception) -> ServerError:
        why = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return ServerError(
                f"the Argosy server at {self.url} did not answer in time ({type(exc).__name__}); "
                "it may be overloaded: retry later, or check --server / ARGOSY_SERVER"
            )
        if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServerError(
                f"lost the connection to the Argosy server at {self.url}: {why}; "
                "retry, or check --server / ARGOSY_SERVER"
            )
        return ServerError(
            f"cannot reach the Argosy server at {self.url}: {why}; check --server / ARGOSY_SERVER"
        )

    def _error(self, response: httpx.Response) -> ArgosyError:
        """The Argosy error for a failed response, worded with the server's problem detail."""
        status = response.status_code
        problem = _problem(response)
        detail = (
            problem.detail if problem else (response.text.strip()[:300] or response.reason_phrase)
        )
        code = problem.code if problem else None
        if status == 401:
            return ServerError(
                f"the Argosy server at {self.url} refused the token (401): {detail}; "
                "check ARGOSY_TOKEN, or log in again with 'argosy login'"
            )
        if status == 403:
            return ServerError(
                f"the Argosy server at {self.url} refused access (403): {detail}; "
                "check ARGOSY_TOKEN and its roles in this tenant"
            )
        if status == 404:
            return NotFoundError(detail, code=code)
        if status == 409:
            conflict = VersionConflictError if code == "version_tag_conflict" else ConflictError
            return conflict(detail, code=code)
        if status == 413:
            return QuotaExceededError(detail, code=code)
        if status in (400, 422):
            return UsageError(detail, code=code)
        if status == 503:
            return ServerError(f"the Argosy server at {self.url} is unavailable (503): {detail}")
        return ArgosyError(f"the Argosy server answered {status}: {detail}")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ArgosyError(
                f"the server at {self.url} answered {method} {path} with something that is not "
                f"JSON ({response.headers.get('content-type', 'no content type')}); "
                "is --server an Argosy server?"
            ) from None

    def _one(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._json(method, path, **kwargs))

    def _many(self, model: type[M], path: str, params: Mapping[str, Any] | None = None) -> list[M]:
        """A list endpoint's items, whether it answers a bare list or pages (all followed)."""
        found: list[M] = []
        query = dict(params or {})
        while True:
            doc = self._json("GET", path, params=query)
            if isinstance(doc, list):
                return [model.model_validate(d) for d in doc]
            found.extend(model.model_validate(d) for d in doc["items"])
            cursor = doc.get("next_cursor")
            if not cursor:
                return found
            query["cursor"] = cursor

    # -- health --------------------------------------------------------------------------------
    def health(self) -> Health:
        """``/healthz``: the process is up."""
        return self._one(Health, "GET", "/healthz", ok=(503,))

    def ready(self) -> Health:
        """``/readyz``: the server can serve (database and store reachable); 503 is returned, not raised."""
        return self._one(Health, "GET", "/readyz", ok=(503,))

    # -- blobs and pipelines -------------------------------------------------------------------
    def has_blob(self, sha256: str) -> bool:
        """Whether the tenant's store holds the blob (``sha256`` hex, ``sha256:`` prefix allowed)."""
        hexdigest = sha256.removeprefix("sha256:")
        response = self._send("HEAD", self._t(f"/blobs/{hexdigest}"), ok=(404,))
        return response.status_code != 404

    def upload_blob(self, data: bytes, sha256: str | None = None) -> Blob:
        """Store bytes under their sha256 (computed here; a given one must match)."""
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256.removeprefix("sha256:") != actual:
            raise IntegrityError(f"blob said to be {sha256} hashes to sha256:{actual}")
        return self._one(
            Blob,
            "PUT",
            self._t(f"/blobs/{actual}"),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def push_pipeline(
        self, compiled: CompiledPipeline, version: str | None = None
    ) -> PipelineVersionPushed:
        """Upload the compiled pipeline's missing blobs, then its spec as a version (tagged
        ``version`` if given). Pushing the same content again is harmless (``created`` false)."""
        for key, data in compiled.blobs.items():
            if not self.has_blob(key):
                self.upload_blob(data, key)
        body = PipelineVersionCreate(spec=compiled.spec.model_dump(mode="json"), version=version)
        return self._one(
            PipelineVersionPushed,
            "POST",
            self._t(f"/pipelines/{compiled.spec.name}/versions"),
            json=body.model_dump(mode="json"),
        )

    def list_pipelines(self) -> list[Pipeline]:
        return self._many(Pipeline, self._t("/pipelines"))

    def get_pipeline(self, name: str) -> Pipeline:
        return self._one(Pipeline, "GET", self._t(f"/pipelines/{name}"))

    def list_versions(self, pipeline: str) -> list[PipelineVersion]:
        return self._many(PipelineVersion, self._t(f"/pipelines/{pipeline}/versions"))

    def get_version(self, pipeline: str, ref: str) -> PipelineVersion:
        """One version (a tag, a digest or a version id), with its spec."""
        return self._one(PipelineVersion, "GET", self._t(f"/pipelines/{pipeline}/versions/{ref}"))

    # -- runs ----------------------------------------------------------------------------------
    def create_run(
        self,
        pipeline: str,
        version: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        fail_fast: bool = False,
        no_cache: bool = False,
        idempotency_key: str | None = None,
        files: Mapping[str, models.UploadedPath] | None = None,
        name: str | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Run:
        """Start a run of a pushed version (default: the newest). The ``Idempotency-Key``
        (a fresh uuid4 unless given) makes the retries of this call create one run only.
        ``files``: path parameter value -> the upload holding its bytes."""
        body = RunCreate(
            pipeline=pipeline,
            version=version,
            parameters=dict(parameters or {}),
            fail_fast=fail_fast,
            no_cache=no_cache,
            files=dict(files or {}),
            name=name,
            description=description,
            tags=dict(tags or {}),
        )
        return self._one(
            Run,
            "POST",
            self._t("/runs"),
            json=body.model_dump(mode="json"),
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
            idempotent=True,
        )

    def get_run(self, run_id: str) -> Run:
        return self._one(Run, "GET", self._t(f"/runs/{run_id}"))

    def run_detail(self, run_id: str) -> models.RunDetail:
        """The run with its tasks (attempts, outputs, log tails) and metrics."""
        return self._one(models.RunDetail, "GET", self._t(f"/runs/{run_id}/detail"))

    def reproduce_run(self, run_id: str) -> Run:
        """A new run of a finished run's version and parameters, caching off."""
        return self._one(Run, "POST", self._t(f"/runs/{run_id}/reproduce"), idempotent=False)

    def diff_runs(self, run_a: str, run_b: str) -> models.RunDiff:
        return self._one(models.RunDiff, "GET", self._t(f"/runs/{run_a}/diff/{run_b}"))

    def runs_page(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Page[Run]:
        """One page of runs, newest first (``tags``: every ``key: value`` given)."""
        params: dict[str, Any] = {"pipeline": pipeline, "status": status, "limit": limit,
                                  "cursor": cursor, "name": name}  # fmt: skip
        params = {k: v for k, v in params.items() if v is not None}
        if tags:
            params["tag"] = [f"{k}={v}" for k, v in tags.items()]
        doc = self._json("GET", self._t("/runs"), params=params)
        return Page[Run].model_validate(doc)

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        page_size: int = 100,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[Run]:
        """Runs, newest first, following the pages' cursors (at most ``limit`` in all)."""
        cursor: str | None = None
        count = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - count)
            page = self.runs_page(
                pipeline=pipeline, status=status, limit=size, cursor=cursor, name=name, tags=tags
            )
            for run in page.items:
                yield run
                count += 1
                if limit is not None and count >= limit:
                    return
            cursor = page.next_cursor
            if not cursor or not page.items:
                return

    def tasks(self, run_id: str) -> list[Task]:
        return self._many(Task, self._t(f"/runs/{run_id}/tasks"))

    def cancel_run(self, run_id: str) -> Run:
        """Ask for the run to be cancelled (idempotent: cancelling twice is the same)."""
        return self._one(Run, "POST", self._t(f"/runs/{run_id}/cancel"), idempotent=True)

    def retry_run(self, run_id: str) -> Run:
        """A new run of the same version and parameters that reuses the finished tasks."""
        return self._one(Run, "POST", self._t(f"/runs/{run_id}/retry"), idempotent=False)

    def wait(
        self,
        run_id: str,
        poll: float = 1.0,
        *,
        timeout: float | None = None,
        on_tasks: Callable[[Run, list[Task]], None] | None = None,
    ) -> Run:
        """Poll until the run has finished and return it; ``on_tasks`` sees every poll's
        tasks (for progress). Raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if on_tasks is not None:
                on_tasks(run, self.tasks(run_id))
            if run.status in RUN_DONE:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout} s")
            _sleep(poll)

    # -- uploads -------------------------------------------------------------------------------
    def start_upload(self, body: models.UploadCreate) -> models.Upload:
        return self._one(
            models.Upload, "POST", self._t("/uploads"), json=body.model_dump(mode="json"),
            idempotent=False,
        )  # fmt: skip

    def get_upload(self, upload_id: str) -> models.Upload:
        return self._one(models.Upload, "GET", self._t(f"/uploads/{upload_id}"))

    def put_upload_chunk(self, upload_id: str, offset: int, data: bytes) -> models.Upload:
        """Send bytes at ``offset`` (retried safely: a repeated chunk is a 409 the caller
        resolves by asking the upload's ``received``)."""
        return self._one(
            models.Upload, "PUT", self._t(f"/uploads/{upload_id}"), params={"offset": offset},
            content=data, headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip

    def complete_upload(self, upload_id: str) -> models.Upload:
        return self._one(
            models.Upload, "POST", self._t(f"/uploads/{upload_id}/complete"), idempotent=True
        )

    # -- artifacts -----------------------------------------------------------------------------
    def artifacts(self, run_id: str) -> list[Artifact]:
        return self._many(Artifact, self._t(f"/runs/{run_id}/artifacts"))

    def get_artifact(self, artifact_id: str) -> Artifact:
        return self._one(Artifact, "GET", self._t(f"/artifacts/{artifact_id}"))

    def resolve_artifact(self, ref: str) -> Artifact:
        """An artifact by id (or unique prefix), or by ``RUN/NODE/OUTPUT``."""
        if "/" not in ref:
            return self.get_artifact(ref)
        run_id, _, rest = ref.partition("/")
        return self._one(Artifact, "GET", self._t(f"/runs/{run_id}/artifacts/{rest}"))

    def lineage(self, artifact_id: str, direction: str = "up") -> models.Lineage:
        return self._one(
            models.Lineage, "GET", self._t(f"/artifacts/{artifact_id}/lineage"),
            params={"direction": direction},
        )  # fmt: skip

    def download_artifact(
        self,
        artifact_id: str,
        dest: Path,
        *,
        resume: bool = True,
        artifact: Artifact | None = None,
    ) -> Artifact:
        """Stream an artifact's bytes to ``dest``, verified against its sha256.

        Bytes arrive in ``dest + ".part"`` and are renamed to ``dest`` only once they hash
        right, so ``dest`` never holds a partial or corrupt file. With ``resume``, an existing
        ``.part`` file (an interrupted download) is continued with an HTTP ``Range`` request,
        and a dropped connection is continued the same way (up to ``retries`` times).
        """
        art = artifact or self.get_artifact(artifact_id)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        if not resume:
            part.unlink(missing_ok=True)
        drops = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if have > art.size:
                part.unlink()
                have = 0
            if have < art.size or art.size == 0:
                try:
                    self._fetch_into(art, part, have)
                except ServerError:
                    drops += 1
                    if drops > self.retries or not part.exists():
                        raise
                    self._wait_before_retry(drops - 1, None)
                    continue
            digest = _file_sha256(part)
            if digest == art.sha256.removeprefix("sha256:"):
                part.replace(dest)
                return art
            part.unlink()
            if have == 0:
                raise IntegrityError(
                    f"artifact {art.id} downloaded from {self.url} hashes to sha256 {digest}, "
                    f"not {art.sha256}; the server's store may be corrupt"
                )
            # the kept partial bytes were not a prefix of this artifact: start over once

    def _fetch_into(self, art: Artifact, part: Path, have: int) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        response = self._send(
            "GET", self._t(f"/artifacts/{art.id}/content"), stream=True, headers=headers
        )
        try:
            append = have > 0 and response.status_code == 206
            with part.open("ab" if append else "wb") as fh:
                try:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                except httpx.TransportError as exc:
                    raise self._unreachable(exc) from None
        finally:
            response.close()

    # -- logs ----------------------------------------------------------------------------------
    def logs(
        self,
        run_id: str,
        cursor: str | None = None,
        *,
        node: str | None = None,
        attempt: int | None = None,
        limit: int | None = None,
    ) -> LogPage:
        """Log lines written after ``cursor`` (all from the start without one)."""
        params = {"cursor": cursor, "node": node, "attempt": attempt, "limit": limit}
        return self._one(
            LogPage,
            "GET",
            self._t(f"/runs/{run_id}/logs"),
            params={k: v for k, v in params.items() if v is not None},
        )

    def follow_logs(
        self,
        run_id: str,
        *,
        node: str | None = None,
        attempt: int | None = None,
        idle_timeout: float = 60.0,
    ) -> Iterator[LogLine]:
        """Log lines as they are written, until the run ends (Server-Sent Events).

        A dropped stream is reopened with ``Last-Event-ID`` (the last event id seen) and lines
        seen already are skipped, so every line is yielded once.
        """
        last_id: str | None = None
        seen: set[tuple[str, int, str, str, str]] = set()
        drops = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            params: dict[str, Any] = {"node": node} if node else {}
            if attempt is not None:
                params["attempt"] = attempt
            response = self._send(
                "GET",
                self._t(f"/runs/{run_id}/logs/stream"),
                stream=True,
                headers=headers,
                params=params,
                timeout=httpx.Timeout(idle_timeout, connect=10.0),
            )
            try:
                for event, data, event_id in _sse_events(response.iter_lines()):
                    drops = 0
                    if event_id is not None:
                        last_id = event_id
                    if event == "end":
                        return
                    if event != "line":
                        continue
                    line = LogLine.model_validate_json(data)
                    key = (line.node_path, line.attempt, line.time, line.stream, line.line)
                    if key in seen:
                        continue
                    seen.add(key)
                    yield line
            except httpx.TransportError as exc:
                drops += 1
                if drops > self.retries:
                    raise self._unreachable(exc) from None
                self._wait_before_retry(drops - 1, None)
            finally:
                response.close()
            # the stream ended without "end" (a proxy or server restart): reconnect

    # -- schedules -----------------------------------------------------------------------------
    def create_schedule(self, schedule: ScheduleCreate) -> Schedule:
        return self._one(
            Schedule,
            "POST",
            self._t("/schedules"),
            json=schedule.model_dump(mode="json"),
            idempotent=False,
        )

    def list_schedules(self) -> list[Schedule]:
        return self._many(Schedule, self._t("/schedules"))

    def get_schedule(self, name: str) -> Schedule:
        return self._one(Schedule, "GET", self._t(f"/schedules/{name}"))

    def delete_schedule(self, name: str) -> None:
        self._send("DELETE", self._t(f"/schedules/{name}"))

    def pause_schedule(self, name: str) -> Schedule:
        return self._one(Schedule, "POST", self._t(f"/schedules/{name}/pause"), idempotent=True)

    def resume_schedule(self, name: str) -> Schedule:
        return self._one(Schedule, "POST", self._t(f"/schedules/{name}/resume"), idempotent=True)

    def schedule_fires(self, name: str) -> list[ScheduleFire]:
        return self._many(ScheduleFire, self._t(f"/schedules/{name}/fires"))

    # -- tenants, members, API tokens, identity ------------------------------------------------
    def me(self) -> models.Me:
        return self._one(models.Me, "GET", f"{API_PREFIX}/me")

    def list_tenants(self) -> list[models.Tenant]:
        return self._many(models.Tenant, f"{API_PREFIX}/tenants")

    def create_tenant(self, name: str, display_name: str | None = None) -> models.Tenant:
        body = models.TenantCreate(name=name, display_name=display_name)
        return self._one(
            models.Tenant, "POST", f"{API_PREFIX}/tenants", json=body.model_dump(mode="json")
        )

    def set_quotas(self, name: str, quotas: models.TenantQuotas) -> models.Tenant:
        """Replace a tenant's quotas (platform admins)."""
        body = quotas.model_dump(exclude_none=True)
        return self._one(
            models.Tenant, "PUT", f"{models.API_PREFIX}/tenants/{name}/quotas", json=body
        )

    def get_tenant(self, name: str) -> models.Tenant:
        return self._one(models.Tenant, "GET", f"{API_PREFIX}/tenants/{name}")

    def archive_tenant(self, name: str) -> models.Tenant:
        return self._one(
            models.Tenant, "POST", f"{API_PREFIX}/tenants/{name}/archive", idempotent=True
        )

    def list_members(self) -> list[models.Member]:
        return self._many(models.Member, self._t("/members"))

    def add_member(self, role: str, subject_kind: str, subject: str) -> models.Member:
        body = {"role": role, "subject_kind": subject_kind, "subject": subject}
        return self._one(models.Member, "POST", self._t("/members"), json=body, idempotent=True)

    def remove_member(self, binding_id: str) -> None:
        self._send("DELETE", self._t(f"/members/{binding_id}"))

    def create_token(self, name: str, role: str, expires_in_days: float) -> models.ApiTokenCreated:
        body = {"name": name, "role": role, "expires_in_days": expires_in_days}
        return self._one(models.ApiTokenCreated, "POST", self._t("/tokens"), json=body)

    def list_tokens(self) -> list[models.ApiToken]:
        return self._many(models.ApiToken, self._t("/tokens"))

    def revoke_token(self, token_id: str) -> models.ApiToken:
        return self._one(models.ApiToken, "DELETE", self._t(f"/tokens/{token_id}"))

    # -- secrets ---------------------------------------------------------------------------------
    def set_secret(self, name: str, value: str) -> models.SecretInfo:
        """Store a secret (encrypted on the server; the value never comes back)."""
        body = models.SecretSet(value=value).model_dump()
        return self._one(models.SecretInfo, "PUT", self._t(f"/secrets/{name}"), json=body)

    def list_secrets(self) -> list[models.SecretInfo]:
        return self._many(models.SecretInfo, self._t("/secrets"))

    def delete_secret(self, name: str) -> None:
        self._send("DELETE", self._t(f"/secrets/{name}"))

    # -- the model registry ----------------------------------------------------------------------
    def register_model(
        self, name: str, body: models.ModelVersionCreate
    ) -> models.ModelVersionRegistered:
        """Register an artifact as a version of ``name`` (the same artifact again: its version)."""
        return self._one(
            models.ModelVersionRegistered, "POST", self._t(f"/models/{name}/versions"),
            json=body.model_dump(mode="json", exclude_none=True), idempotent=True,
        )  # fmt: skip

    def list_models(self) -> list[models.Model]:
        return self._many(models.Model, self._t("/models"))

    def get_model(self, name: str) -> models.Model:
        return self._one(models.Model, "GET", self._t(f"/models/{name}"))

    def list_model_versions(self, name: str) -> list[models.ModelVersion]:
        return self._many(models.ModelVersion, self._t(f"/models/{name}/versions"))

    def get_model_version(self, name: str, which: str | None = None) -> models.ModelVersion:
        """A version by number, by alias, or the newest (``None``)."""
        ref = which or "latest"
        return self._one(models.ModelVersion, "GET", self._t(f"/models/{name}/versions/{ref}"))

    def promote_model(
        self, name: str, alias: str, version: int, reason: str | None = None
    ) -> models.AliasEvent | models.PromotionRequest:
        """The move, or (202: the tenant's policy reserves the alias) a pending request; a
        retry finds the same request, so the PUT stays safe to repeat."""
        body = models.ModelPromote(version=version, reason=reason).model_dump(exclude_none=True)
        response = self._send(
            "PUT", self._t(f"/models/{name}/aliases/{alias}"), json=body, idempotent=True
        )
        if response.status_code == 202:
            return models.PromotionRequest.model_validate(response.json())
        return models.AliasEvent.model_validate(response.json())

    def list_promotions(self, state: str | None = None) -> list[models.PromotionRequest]:
        params = {"state": state} if state else None
        return self._many(models.PromotionRequest, self._t("/promotions"), params)

    def get_promotion(self, request_id: str) -> models.PromotionRequest:
        return self._one(models.PromotionRequest, "GET", self._t(f"/promotions/{request_id}"))

    def decide_promotion(
        self, request_id: str, approve: bool, comment: str | None = None
    ) -> models.PromotionRequest:
        body = models.PromotionDecision(approve=approve, comment=comment).model_dump()
        return self._one(
            models.PromotionRequest, "POST", self._t(f"/promotions/{request_id}/decision"),
            json=body,
        )  # fmt: skip

    def promotion_policy(self) -> models.PromotionPolicy:
        return self._one(models.PromotionPolicy, "GET", self._t("/promotion-policy"))

    def set_promotion_policy(self, body: models.PromotionPolicyUpdate) -> models.PromotionPolicy:
        return self._one(
            models.PromotionPolicy, "PUT", self._t("/promotion-policy"),
            json=body.model_dump(exclude_unset=True),
        )  # fmt: skip

    def demote_model(self, name: str, alias: str, reason: str | None = None) -> models.AliasEvent:
        params = {"reason": reason} if reason else None
        return self._one(
            models.AliasEvent, "DELETE", self._t(f"/models/{name}/aliases/{alias}"), params=params
        )

    def model_alias_at(self, name: str, alias: str, at: str | None = None) -> models.AliasState:
        params = {"at": at} if at else None
        return self._one(
            models.AliasState, "GET", self._t(f"/models/{name}/aliases/{alias}"), params=params
        )

    def model_history(self, name: str, alias: str | None = None) -> list[models.AliasEvent]:
        params = {"alias": alias} if alias else None
        return self._many(models.AliasEvent, self._t(f"/models/{name}/history"), params)

    # -- triggers --------------------------------------------------------------------------------
    def create_trigger(self, body: models.TriggerCreate) -> models.Trigger:
        return self._one(
            models.Trigger, "POST", self._t("/triggers"), json=body.model_dump(mode="json"),
            idempotent=False,
        )  # fmt: skip

    def list_triggers(self) -> list[models.Trigger]:
        return self._many(models.Trigger, self._t("/triggers"))

    def get_trigger(self, name: str) -> models.Trigger:
        return self._one(models.Trigger, "GET", self._t(f"/triggers/{name}"))

    def pause_trigger(self, name: str) -> models.Trigger:
        return self._one(
            models.Trigger, "POST", self._t(f"/triggers/{name}/pause"), idempotent=True
        )

    def resume_trigger(self, name: str) -> models.Trigger:
        return self._one(
            models.Trigger, "POST", self._t(f"/triggers/{name}/resume"), idempotent=True
        )

    def delete_trigger(self, name: str) -> None:
        self._send("DELETE", self._t(f"/triggers/{name}"))

    def trigger_fires(self, name: str) -> list[models.TriggerFire]:
        return self._many(models.TriggerFire, self._t(f"/triggers/{name}/fires"))


# -- helpers -----------------------------------------------------------------------------------
def _user_agent() -> str:
    import argosy

    return f"argosy-client/{getattr(argosy, '__version__', '0')}"


def _problem(response: httpx.Response) -> Problem | None:
    """The response's problem document; FastAPI's own ``{"detail": ...}`` bodies too."""
    try:
        doc = response.json()
    except ValueError:
        return None
    if not isinstance(doc, dict) or "detail" not in doc:
        return None
    detail = doc["detail"]
    if isinstance(detail, list):  # a framework validation error: [{loc, msg, ...}]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', d)}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    elif not isinstance(detail, str):
        detail = json.dumps(detail)
    return Problem(
        title=str(doc.get("title") or response.reason_phrase),
        status=int(doc.get("status") or response.status_code),
        detail=detail,
        code=doc.get("code"),
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each Server-Sent Event in a stream of lines."""
    event = "message"
    data: list[str] = []
    event_id: str | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            elif event == "end":
                yield event, "", event_id
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if data or event == "end":
        yield event, "\n".join(data), event_id
