"""The backend protocol: what the CLI and the Python API need from "where runs live".

Two implementations answer it with the same documents (:mod:`argosy.api`):

* :class:`~argosy.client.local.LocalBackend` calls the application layer
  (:mod:`argosy.service`) on the local state folder, and executes runs in this process with
  the engine (isolated step processes);
* :class:`~argosy.client.http.HttpBackend` calls an Argosy server's REST API through the
  typed :class:`~argosy.client.client.Client`; the server executes the runs.

So every command and every Python call is written once: ``argosy runs show RUN`` prints the
same JSON document whether the run is on a laptop or on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from argosy import api
from argosy.client.operations import OperationsBackend

if TYPE_CHECKING:
    from argosy.config import Settings
    from argosy.engine.engine import TaskView
    from argosy.spec.compile import CompiledPipeline
    from argosy.spec.models import PipelineSpec

OnChange = Callable[[str, list["TaskView"]], None]
"""Progress: called with the run id and its tasks whenever a task changes."""


class Backend(OperationsBackend, Protocol):
    """One tenant's runs, pipelines and artifacts, locally or on a server."""

    tenant: str

    @property
    def where(self) -> str:
        """Where the state lives, for messages ("the state folder X", "the server at URL")."""

    @property
    def server_url(self) -> str | None:
        """The server's URL, or None locally (commands add ``--server URL`` to hints)."""

    def close(self) -> None: ...

    def prewarm(self) -> None:
        """About to submit a run and follow it: start now what executing it here will need
        (local mode: the first step's warm parent, while the pipeline is compiled and
        submitted); a server's backend has nothing to start."""

    # -- pipelines -----------------------------------------------------------------------------
    def push_pipeline(
        self, compiled: CompiledPipeline, version: str | None
    ) -> api.PipelineVersionPushed: ...

    def list_pipelines(self) -> list[api.Pipeline]: ...

    def list_versions(self, pipeline: str) -> list[api.PipelineVersion]: ...

    def get_version(self, pipeline: str, ref: str | None) -> api.PipelineVersion: ...

    def run_spec(self, run_ref: str) -> PipelineSpec: ...

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
        """Push the pipeline and create a run of it (pending; see :meth:`follow`), with its
        name, description and tags if ``labels``."""

    def follow(self, run_id: str, on_change: OnChange | None = None) -> api.Run:
        """Until the run has finished: locally, execute it here (Ctrl-C cancels it); on a
        server, watch it (Ctrl-C stops watching, the run goes on). Returns the final run."""

    def detach(self, run_id: str) -> None:
        """Let the run go on without this process (locally: in a background process)."""

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 20,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[api.Run]: ...

    def get_run(self, ref: str) -> api.Run: ...

    def run_detail(self, ref: str) -> api.RunDetail: ...

    def cancel_run(self, ref: str) -> tuple[api.Run, str]:
        """The run and the outcome: ``requested``, ``cancelled`` or ``already_cancelled``
        (a run that finished otherwise raises ``ConflictError``)."""

    def retry_run(self, ref: str) -> api.Run: ...

    def reproduce_run(self, ref: str) -> api.Run: ...

    def resume_run(self, ref: str) -> api.Run: ...

    def diff_runs(self, ref_a: str, ref_b: str) -> api.RunDiff: ...

    # -- artifacts and logs --------------------------------------------------------------------
    def list_artifacts(self, run_ref: str) -> list[api.Artifact]: ...

    def get_artifact(self, ref: str) -> api.Artifact: ...

    def download(self, artifact: api.Artifact, dest: Path) -> None:
        """The artifact's bytes (a directory artifact: its tar) into ``dest``, verified."""

    def lineage(self, ref: str, direction: Literal["up", "down"]) -> api.Lineage: ...

    def upload(self, path: Path) -> api.Upload:
        """Store a local file (or a folder, as a tar) as a blob of the tenant, verified."""

    def logs(
        self, run_ref: str, *, node: str | None = None, attempt: int | None = None
    ) -> list[api.LogLine]: ...

    def follow_logs(
        self, run_ref: str, *, node: str | None = None, attempt: int | None = None
    ) -> Iterator[api.LogLine]:
        """Lines as they are written, until the run has finished."""

    # -- the model registry (argosy.service.models) --------------------------------------------
    def register_model(
        self, name: str, body: api.ModelVersionCreate
    ) -> api.ModelVersionRegistered: ...

    def list_models(self) -> list[api.Model]: ...

    def get_model(self, name: str) -> api.Model: ...

    def list_model_versions(self, name: str) -> list[api.ModelVersion]: ...

    def get_model_version(self, name: str, which: str | None) -> api.ModelVersion:
        """A version by number, by alias, or the newest (``None``)."""

    def promote_model(
        self, name: str, alias: str, version: int, reason: str | None
    ) -> api.AliasEvent | api.PromotionRequest:
        """The move, or a pending request when the tenant's policy reserves the alias."""

    def list_promotions(self, state: str | None) -> list[api.PromotionRequest]: ...

    def get_promotion(self, request_id: str) -> api.PromotionRequest: ...

    def decide_promotion(
        self, request_id: str, approve: bool, comment: str | None
    ) -> api.PromotionRequest:
        """Approve (the alias moves) or deny; never by the requester."""

    def promotion_policy(self) -> api.PromotionPolicy: ...

    def set_promotion_policy(self, body: api.PromotionPolicyUpdate) -> api.PromotionPolicy: ...

    def demote_model(self, name: str, alias: str, reason: str | None) -> api.AliasEvent: ...

    def model_alias_at(self, name: str, alias: str, at: datetime | None) -> api.AliasState:
        """The version the alias pointed at, at ``at`` (default: now)."""

    def model_history(self, name: str, alias: str | None) -> list[api.AliasEvent]: ...


def open_backend(settings: Settings) -> Backend:
    """The server of ``settings.server`` (with its token), else the local state folder."""
    if settings.server:
        from argosy.client.http import HttpBackend, open_client

        return HttpBackend(open_client(settings), settings)
    from argosy.client.local import LocalBackend

    return LocalBackend(settings)
