"""The backend protocol (:mod:`argosy.client.backend`) on an Argosy server.

Every call is one or a few REST requests through :class:`~argosy.client.client.Client`;
the server authorizes them, calls the same application layer local mode calls, and executes
the runs. A run's local file parameters are uploaded first (content-addressed, resumable)
and named in the run request, so a pipeline that reads local files runs unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from argosy import api
from argosy.client.operations import HttpOperations
from argosy.errors import UsageError

if TYPE_CHECKING:
    from argosy.client.backend import OnChange
    from argosy.client.client import Client
    from argosy.config import Settings
    from argosy.spec.compile import CompiledPipeline
    from argosy.spec.models import PipelineSpec

POLL_SECONDS = 0.5


def open_client(settings: Settings) -> Client:
    """A client of ``settings.server`` with the tenant of the settings and its token
    (``ARGOSY_TOKEN``, else the one ``argosy login`` stored for that server)."""
    from argosy.client.client import Client
    from argosy.client.credentials import refresh_stored_token, stored_token

    server = settings.server
    assert server is not None
    if settings.token:  # ARGOSY_TOKEN: used as it is
        return Client(server, token=settings.token, tenant=settings.tenant)
    return Client(  # the token of 'argosy login', refreshed when it has expired
        server, token=stored_token(server), tenant=settings.tenant,
        refresh=lambda: refresh_stored_token(server),
    )  # fmt: skip


class HttpBackend(HttpOperations):
    """One server, one tenant, one token."""

    def __init__(self, client: Client, settings: Settings | None = None) -> None:
        self.client = client
        self.tenant = client.tenant
        self.settings = settings

    @property
    def where(self) -> str:
        return f"the server at {self.client.url}"

    @property
    def server_url(self) -> str | None:
        return self.client.url

    def close(self) -> None:
        self.client.close()

    def prewarm(self) -> None:
        """Nothing: the server executes the run."""

    # -- pipelines -----------------------------------------------------------------------------
    def push_pipeline(
        self, compiled: CompiledPipeline, version: str | None
    ) -> api.PipelineVersionPushed:
        return self.client.push_pipeline(compiled, version)

    def list_pipelines(self) -> list[api.Pipeline]:
        return self.client.list_pipelines()

    def list_versions(self, pipeline: str) -> list[api.PipelineVersion]:
        return self.client.list_versions(pipeline)

    def get_version(self, pipeline: str, ref: str | None) -> api.PipelineVersion:
        if ref is None:
            latest = self.client.get_pipeline(pipeline).latest_version
            if latest is None:
                raise UsageError(f"pipeline {pipeline!r} has no version; push one first")
            ref = latest.digest
        return self.client.get_version(pipeline, ref)

    def run_spec(self, run_ref: str) -> PipelineSpec:
        from argosy.spec.models import PipelineSpec

        run = self.client.get_run(run_ref)
        version = self.client.get_version(run.pipeline, run.pipeline_version_id)
        return PipelineSpec.model_validate(version.spec or {})

    # -- runs ----------------------------------------------------------------------------------
    def submit(
        self,
        compiled: CompiledPipeline,
        parameters: Mapping[str, Any],
        *,
        version: str | None = None,
        fail_fast: bool = False,
        no_cache: bool = False,
        labels: api.RunLabels | None = None,
    ) -> api.Run:
        from argosy.client.uploads import upload_path_parameters

        pushed = self.client.push_pipeline(compiled, version)
        files = upload_path_parameters(self.client, compiled.spec, parameters)
        return self.client.create_run(
            compiled.spec.name, pushed.version.digest, parameters, fail_fast=fail_fast,
            no_cache=no_cache, files=files, **(labels.model_dump() if labels else {}),
        )  # fmt: skip

    def follow(self, run_id: str, on_change: OnChange | None = None) -> api.Run:
        """Poll the run every half second until it has finished (the server executes it)."""
        if on_change is None:
            return self.client.wait(run_id, POLL_SECONDS)
        from argosy.engine.engine import TaskView

        def show(current: api.Run, tasks: list[api.Task]) -> None:
            on_change(
                current.id,
                [
                    TaskView(
                        id=t.id,
                        node_path=t.node_path,
                        step_name=t.step,
                        state=t.state,
                        attempt_count=len(t.attempts),
                        reason=t.reason,
                        failures=sum(1 for a in t.attempts if a.state == "failed"),
                    )
                    for t in tasks
                ],
            )

        return self.client.wait(run_id, POLL_SECONDS, on_tasks=show)

    def detach(self, run_id: str) -> None:
        """Nothing to do: the server executes the run whoever watches it."""

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 20,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[api.Run]:
        return list(
            self.client.list_runs(
                pipeline=pipeline, status=status, limit=limit, name=name, tags=tags
            )
        )

    def get_run(self, ref: str) -> api.Run:
        return self.client.get_run(ref)

    def run_detail(self, ref: str) -> api.RunDetail:
        return self.client.run_detail(ref)

    def cancel_run(self, ref: str) -> tuple[api.Run, str]:
        before = self.client.get_run(ref)
        run = self.client.cancel_run(ref)
        if before.status == "cancelled":
            return run, "already_cancelled"
        return run, "cancelled" if run.status == "cancelled" else "requested"

    def retry_run(self, ref: str) -> api.Run:
        return self.client.retry_run(ref)

    def reproduce_run(self, ref: str) -> api.Run:
        return self.client.reproduce_run(ref)

    def resume_run(self, ref: str) -> api.Run:
        raise UsageError(
            f"a server resumes its runs itself (an instance takes over a run whose engine "
            f"stopped); follow run {ref} with 'argosy runs show {ref} --server {self.client.url}'"
        )

    def diff_runs(self, ref_a: str, ref_b: str) -> api.RunDiff:
        return self.client.diff_runs(ref_a, ref_b)

    # -- artifacts and logs --------------------------------------------------------------------
    def list_artifacts(self, run_ref: str) -> list[api.Artifact]:
        return self.client.artifacts(run_ref)

    def get_artifact(self, ref: str) -> api.Artifact:
        return self.client.resolve_artifact(ref)

    def download(self, artifact: api.Artifact, dest: Path) -> None:
        self.client.download_artifact(artifact.id, dest, artifact=artifact)

    def lineage(self, ref: str, direction: Literal["up", "down"]) -> api.Lineage:
        return self.client.lineage(self.client.resolve_artifact(ref).id, direction)

    def upload(self, path: Path) -> api.Upload:
        from argosy.client.uploads import upload_path

        return upload_path(self.client, path)

    def logs(
        self, run_ref: str, *, node: str | None = None, attempt: int | None = None
    ) -> list[api.LogLine]:
        lines: list[api.LogLine] = []
        cursor: str | None = None
        while True:
            page = self.client.logs(run_ref, cursor, node=node, attempt=attempt)
            lines.extend(page.items)
            if not page.items:
                return lines
            cursor = page.cursor

    def follow_logs(
        self, run_ref: str, *, node: str | None = None, attempt: int | None = None
    ) -> Iterator[api.LogLine]:
        return self.client.follow_logs(run_ref, node=node, attempt=attempt)

    # -- the model registry --------------------------------------------------------------------
    def register_model(self, name: str, body: api.ModelVersionCreate) -> api.ModelVersionRegistered:
        return self.client.register_model(name, body)

    def list_models(self) -> list[api.Model]:
        return self.client.list_models()

    def get_model(self, name: str) -> api.Model:
        return self.client.get_model(name)

    def list_model_versions(self, name: str) -> list[api.ModelVersion]:
        return self.client.list_model_versions(name)

    def get_model_version(self, name: str, which: str | None) -> api.ModelVersion:
        return self.client.get_model_version(name, which)

    def promote_model(
        self, name: str, alias: str, version: int, reason: str | None
    ) -> api.AliasEvent | api.PromotionRequest:
        return self.client.promote_model(name, alias, version, reason)

    def list_promotions(self, state: str | None) -> list[api.PromotionRequest]:
        return self.client.list_promotions(state)

    def get_promotion(self, request_id: str) -> api.PromotionRequest:
        return self.client.get_promotion(request_id)

    def decide_promotion(
        self, request_id: str, approve: bool, comment: str | None
    ) -> api.PromotionRequest:
        return self.client.decide_promotion(request_id, approve, comment)

    def promotion_policy(self) -> api.PromotionPolicy:
        return self.client.promotion_policy()

    def set_promotion_policy(self, body: api.PromotionPolicyUpdate) -> api.PromotionPolicy:
        return self.client.set_promotion_policy(body)

    def demote_model(self, name: str, alias: str, reason: str | None) -> api.AliasEvent:
        return self.client.demote_model(name, alias, reason)

    def model_alias_at(self, name: str, alias: str, at: datetime | None) -> api.AliasState:
        return self.client.model_alias_at(name, alias, at.isoformat() if at else None)

    def model_history(self, name: str, alias: str | None) -> list[api.AliasEvent]:
        return self.client.model_history(name, alias)
