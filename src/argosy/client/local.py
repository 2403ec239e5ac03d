"""Local mode: the state folder's metadata DB and artifact store, the local executor and
the engine — and :class:`LocalBackend`, the backend protocol on top of them.

The backend calls the application layer (:mod:`argosy.service`) for every read and every
change, exactly as the server's routes do; what only this home does is execute runs in the
calling process (``follow``), or in a background process (``detach``).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from argosy import api, plugins
from argosy.client.operations import LocalOperations
from argosy.config import Settings
from argosy.engine.engine import Engine, ProgressCallback
from argosy.executors.base import Capacity, Executor
from argosy.stores.artifacts.blobs import ArtifactStore, open_artifact_store
from argosy.stores.metadata.db import MetadataStore

if TYPE_CHECKING:
    from argosy.client.backend import OnChange
    from argosy.service import ServiceContext
    from argosy.spec.compile import CompiledPipeline
    from argosy.spec.models import PipelineSpec

FOLLOW_POLL_SECONDS = 0.5


def read_secrets_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments, optional ``export``, optional quotes)."""
    if not path.is_file():
        return {}
    secrets: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        secrets[key.strip()] = value
    return secrets


def local_secrets(settings: Settings) -> dict[str, str]:
    """Secrets for local runs: the secrets file, overridden by environment variables."""
    found = read_secrets_file(settings.resolved_secrets_file)
    found.update(os.environ)
    return found


def check_path_parameters(spec: PipelineSpec, parameters: Mapping[str, Any], cwd: Path) -> None:
    """Every ``Path`` parameter names a file or folder that exists, relative paths read from
    ``cwd`` (as the engine will read them): checked before the run is created (exit 2)."""
    from argosy.client.uploads import path_parameters
    from argosy.errors import UsageError

    for name in sorted(path_parameters(spec)):
        value = parameters.get(name)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        if not (path if path.is_absolute() else cwd / path).exists():
            raise UsageError(
                f"parameter {name!r} names {value!r}, which does not exist (relative paths are "
                f"read from the current folder, {cwd}); pass an existing file or folder"
            )


@dataclass
class Local:
    """Everything local mode needs, opened once per command."""

    settings: Settings
    metadata: MetadataStore
    store: ArtifactStore

    @property
    def capacity(self) -> Capacity:
        s = self.settings
        return Capacity(cpu=s.max_cpus, memory=s.max_memory, gpu=s.max_gpus)

    def prewarm(self) -> None:
        """Make the executor of the next :meth:`engine` now and have it start what its first
        task will need (a warm parent), while the run is still being compiled and submitted."""
        if "_executor" not in self.__dict__:
            self.__dict__["_executor"] = executor = self._executor()
            executor.prewarm()

    def _executor(self) -> Executor:
        s = self.settings
        executor: Executor = plugins.executor_class(plugins.DEFAULT_EXECUTOR)(
            self.store, s.attempts_dir, self.capacity, memory_margin=s.memory_margin,
            log_cap=s.log_cap_bytes, interpreter=self._interpreter, warm_workers=s.warm_workers,
            warm_wait=s.warm_workers_wait, container_mode=s.container_mode,
            container_uid_base=s.container_uid_base,
        )  # fmt: skip
        return executor

    def engine(self, on_change: ProgressCallback | None = None) -> Engine:
        s = self.settings
        executor = self.__dict__.pop("_executor", None) or self._executor()
        return Engine(
            self.metadata,
            self.store,
            executor,
            user=s.user,
            cache_dir=str(s.home / "cache"),
            store_url=s.artifacts_url,
            store_options=s.artifact_options(),
            secrets=local_secrets(s),
            on_change=on_change,
            poll_interval=s.poll_interval,
            cache=s.cache,
            cache_ttl=s.cache_ttl,
            db_retry_seconds=s.db_retry_seconds,
        )

    def _interpreter(self, launch: Any) -> str:
        """This Python, or the environment of a step with its own packages (made once)."""
        if not launch.invocation.step.get("implementation", {}).get("requirements"):
            return sys.executable
        from argosy.server.environments import Environments

        envs = self.__dict__.get("_envs")
        if envs is None:
            s = self.settings
            envs = self.__dict__["_envs"] = Environments(s.home / "environments", s.home / "cache")
        python: str = envs.interpreter(launch, self.store)
        return python


def open_local(settings: Settings) -> Local:
    settings.home.mkdir(parents=True, exist_ok=True)
    metadata = MetadataStore.open(settings.metadata_url)
    store = open_artifact_store(
        settings.artifacts_url, settings.tenant, settings.artifact_options()
    )
    if settings.encryption:  # local mode: off unless ARGOSY_ENCRYPTION=true
        from argosy.stores.keys import TenantKeys, provider_from_settings

        keys = TenantKeys(metadata, provider_from_settings(settings))
        keys.all_keys(settings.tenant)  # unwrapped now: reads inside a session need no other
        store = store.with_cipher(keys.cipher(settings.tenant))
    return Local(settings, metadata, store)


class LocalBackend(LocalOperations):
    """The backend protocol (:mod:`argosy.client.backend`) on the local state folder."""

    def __init__(self, settings: Settings, local: Local | None = None) -> None:
        self.settings = settings
        self.local = local or open_local(settings)
        self.tenant = settings.tenant
        # set when a run this process executes ends: following its logs reads the last
        # lines at once instead of at the next poll
        self._ended = threading.Event()

    @property
    def where(self) -> str:
        return f"the state folder {self.settings.home}"

    def prewarm(self) -> None:
        self.local.prewarm()

    @property
    def server_url(self) -> str | None:
        return None

    def close(self) -> None:
        """The executor :meth:`prewarm` made, if no run used it (its parent started ahead);
        the metadata store's connections are pooled per process."""
        unused = self.local.__dict__.pop("_executor", None)
        if unused is not None:
            unused.close()

    @property
    def ctx(self) -> ServiceContext:
        from argosy.service import ServiceContext

        s = self.settings
        return ServiceContext(
            metadata=self.local.metadata, store=self.local.store, tenant=s.tenant, actor=s.user,
            attempts_dir=s.attempts_dir, max_parameter_bytes=s.max_parameter_bytes,
        )  # fmt: skip

    # -- pipelines -----------------------------------------------------------------------------
    def push_pipeline(
        self, compiled: CompiledPipeline, version: str | None
    ) -> api.PipelineVersionPushed:
        from argosy.errors import IntegrityError
        from argosy.service import pipelines

        for digest, data in compiled.blobs.items():
            if "sha256:" + self.local.store.put_bytes(data).sha256 != digest:
                raise IntegrityError(f"blob {digest} changed while being stored; compile again")
        doc = compiled.spec.model_dump(mode="json")
        return pipelines.push_version(self.ctx, compiled.spec.name, doc, version)

    def list_pipelines(self) -> list[api.Pipeline]:
        from argosy.service import pipelines

        return _all_pages(lambda cursor: pipelines.list_pipelines(self.ctx, cursor=cursor))

    def list_versions(self, pipeline: str) -> list[api.PipelineVersion]:
        from argosy.service import pipelines

        return _all_pages(lambda c: pipelines.list_versions(self.ctx, pipeline, cursor=c))

    def get_version(self, pipeline: str, ref: str | None) -> api.PipelineVersion:
        from argosy.service import pipelines

        return pipelines.get_version(self.ctx, pipeline, ref)

    def run_spec(self, run_ref: str) -> PipelineSpec:
        from argosy.service import pipelines

        return pipelines.run_spec(self.ctx, run_ref)

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
        """Check the run fits this machine (resources, secrets), store the pipeline version,
        and create the run for this process to execute."""
        from argosy.service import runs
        from argosy.spec.validate import validate_for_executor

        s = self.settings
        validate_for_executor(
            compiled.spec, self.local.capacity, local_secrets(s), str(s.resolved_secrets_file)
        )
        check_path_parameters(compiled.spec, parameters, Path.cwd())
        self.push_pipeline(compiled, version)
        body = api.RunCreate(
            pipeline=compiled.spec.name, version=compiled.spec.digest,
            parameters=dict(parameters), fail_fast=fail_fast or s.fail_fast,
            no_cache=no_cache or not s.cache, **(labels.model_dump() if labels else {}),
        )  # fmt: skip
        return runs.create_run(self.ctx, body, queue=None, cwd=os.getcwd()).run

    def follow(self, run_id: str, on_change: OnChange | None = None) -> api.Run:
        """Execute the run here until it has finished. Ctrl-C (or SIGTERM) cancels it
        cleanly: running attempts are stopped, the rest never start."""
        engine = self.local.engine(on_change=on_change)
        in_main = threading.current_thread() is threading.main_thread()

        def cancel(signum: int, _frame: Any) -> None:
            if not engine.interrupted:
                sys.stderr.write(
                    "cancelling the run: stopping its tasks (press Ctrl-C again to stop at "
                    "once)...\n"
                )
                engine.interrupted = True
                return
            # the second time: no engine may be left behind with steps still running, so
            # every attempt's process tree is killed before this process exits
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            stop_all = getattr(engine.executor, "stop_all", None)
            killed = stop_all("cancelled") if stop_all is not None else 0
            sys.stderr.write(
                f"stopped at once: killed the process trees of {killed} running step(s) "
                f"(SIGKILL); record run {run_id} as cancelled with: argosy runs cancel "
                f"{run_id}\n"
            )
            raise StoppedAtOnce(run_id)

        previous = (
            {sig: signal.signal(sig, cancel) for sig in (signal.SIGINT, signal.SIGTERM)}
            if in_main
            else {}
        )
        gc.freeze()  # the imported modules are permanent: full collections need not scan them
        try:
            engine.execute(run_id)
        finally:
            self._ended.set()
            engine.executor.close()  # its warm workers
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.get_run(run_id)

    def detach(self, run_id: str) -> None:
        """Execute the run in a background process (``argosy runs resume RUN``) that outlives
        this one; its output goes to ``<state folder>/detached/RUN.log``."""
        logs = self.settings.home / "detached"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{run_id}.log").open("ab") as out:
            subprocess.Popen(
                [sys.executable, "-m", "argosy", "runs", "resume", run_id],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                env={**os.environ, "ARGOSY_HOME": str(self.settings.home)},
            )  # fmt: skip

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 20,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[api.Run]:
        from argosy.service import runs

        found: list[api.Run] = []
        cursor: str | None = None
        while len(found) < limit:
            page = runs.list_runs(
                self.ctx, pipeline=pipeline, status=status, limit=min(200, limit - len(found)),
                cursor=cursor, name=name, tags=dict(tags or {}),
            )  # fmt: skip
            found.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    def get_run(self, ref: str) -> api.Run:
        from argosy.service import runs

        return runs.get_run(self.ctx, ref)

    def run_detail(self, ref: str) -> api.RunDetail:
        from argosy.service import runs

        return runs.get_run_detail(self.ctx, ref)

    def cancel_run(self, ref: str) -> tuple[api.Run, str]:
        """Flag the run; if its engine is gone, recover it here (its orphaned processes are
        killed) so that the cancel takes effect now."""
        from argosy.service import runs

        run, outcome = runs.cancel_run(self.ctx, ref)
        if outcome == "requested" and run.status == "running" and not run.engine_alive:
            self.local.engine().execute(run.id)
            return self.get_run(run.id), "cancelled"
        return run, str(outcome)

    def retry_run(self, ref: str) -> api.Run:
        from argosy.service import runs

        return runs.retry_run(self.ctx, ref, queue=None)

    def reproduce_run(self, ref: str) -> api.Run:
        from argosy.service import runs

        return runs.reproduce_run(self.ctx, ref, queue=None)

    def resume_run(self, ref: str) -> api.Run:
        return self.get_run(ref)

    def diff_runs(self, ref_a: str, ref_b: str) -> api.RunDiff:
        from argosy.service import compare

        return compare.diff(self.ctx, ref_a, ref_b)

    # -- artifacts and logs --------------------------------------------------------------------
    def list_artifacts(self, run_ref: str) -> list[api.Artifact]:
        from argosy.service import artifacts

        return artifacts.list_artifacts(self.ctx, run_ref)

    def get_artifact(self, ref: str) -> api.Artifact:
        from argosy.service import artifacts

        return artifacts.get_artifact(self.ctx, ref)

    def download(self, artifact: api.Artifact, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.local.store.copy_blob_to(artifact.sha256, dest)

    def lineage(self, ref: str, direction: Literal["up", "down"]) -> api.Lineage:
        from argosy.service import artifacts

        return artifacts.get_lineage(self.ctx, ref, direction)

    def upload(self, path: Path) -> api.Upload:
        """The blob is stored at once (no transfer to resume); the upload is recorded so that
        it counts against the tenant's storage the way a server's does."""
        import tempfile

        from argosy.service import uploads

        if path.is_dir():
            from argosy.runtime.formats import write_value

            with tempfile.TemporaryDirectory() as tmp:
                tar = Path(tmp) / "folder.tar"
                write_value(path, "path", None, tar, what=f"folder {str(path)!r}")
                info = self.local.store.put_file(tar, move=True)
            fmt, filename = "dir", None
        else:
            info = self.local.store.put_file(path)
            fmt, filename = "file", path.name
        body = {"sha256": info.sha256, "size": info.size, "format": fmt, "filename": filename}
        return uploads.create_upload(self.ctx, api.UploadCreate.model_validate(body))

    def logs(
        self, run_ref: str, *, node: str | None = None, attempt: int | None = None
    ) -> list[api.LogLine]:
        from argosy.service import logs

        return list(logs.read_all(self.ctx, run_ref, node=node, attempt=attempt))

    def follow_logs(
        self, run_ref: str, *, node: str | None = None, attempt: int | None = None
    ) -> Iterator[api.LogLine]:
        from argosy.service import logs

        cursor: str | None = None
        while True:
            page = logs.read(self.ctx, run_ref, node=node, attempt=attempt, cursor=cursor)
            yield from page.items
            cursor = page.cursor
            if page.finished:
                return
            if len(page.items) < logs.PAGE_LINES:
                self._ended.wait(FOLLOW_POLL_SECONDS)

    # -- the model registry --------------------------------------------------------------------
    def register_model(self, name: str, body: api.ModelVersionCreate) -> api.ModelVersionRegistered:
        from argosy.service import models

        return models.register(self.ctx, name, body)

    def list_models(self) -> list[api.Model]:
        from argosy.service import models

        return _all_pages(lambda cursor: models.list_models(self.ctx, cursor=cursor))

    def get_model(self, name: str) -> api.Model:
        from argosy.service import models

        return models.get_model(self.ctx, name)

    def list_model_versions(self, name: str) -> list[api.ModelVersion]:
        from argosy.service import models

        return _all_pages(lambda cursor: models.list_versions(self.ctx, name, cursor=cursor))

    def get_model_version(self, name: str, which: str | None) -> api.ModelVersion:
        from argosy.service import models

        return models.get_version(self.ctx, name, which)

    def promote_model(
        self, name: str, alias: str, version: int, reason: str | None
    ) -> api.AliasEvent | api.PromotionRequest:
        from argosy.service import promotions

        body = api.ModelPromote(version=version, reason=reason)
        return promotions.promote(self.ctx, name, alias, body, self._now())

    def list_promotions(self, state: str | None) -> list[api.PromotionRequest]:
        from argosy.service import promotions

        return promotions.list_requests(self.ctx, self._now(), state)

    def get_promotion(self, request_id: str) -> api.PromotionRequest:
        from argosy.service import promotions

        return promotions.get(self.ctx, request_id, self._now())

    def decide_promotion(
        self, request_id: str, approve: bool, comment: str | None
    ) -> api.PromotionRequest:
        from argosy.service import promotions

        body = api.PromotionDecision(approve=approve, comment=comment)
        return promotions.decide(self.ctx, request_id, body, self._now())

    def promotion_policy(self) -> api.PromotionPolicy:
        from argosy.service import promotions

        return promotions.get_policy(self.ctx)

    def set_promotion_policy(self, body: api.PromotionPolicyUpdate) -> api.PromotionPolicy:
        from argosy.service import promotions

        return promotions.set_policy(self.ctx, body)

    def demote_model(self, name: str, alias: str, reason: str | None) -> api.AliasEvent:
        from argosy.service import models

        return models.demote(self.ctx, name, alias, reason)

    def model_alias_at(self, name: str, alias: str, at: datetime | None) -> api.AliasState:
        from argosy.service import models

        return models.alias_at(self.ctx, name, alias, at)

    def model_history(self, name: str, alias: str | None) -> list[api.AliasEvent]:
        from argosy.service import models

        return _all_pages(lambda cursor: models.history(self.ctx, name, alias=alias, cursor=cursor))


class StoppedAtOnce(KeyboardInterrupt):
    """A second Ctrl-C: the run's step processes were killed and this process stops."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def _all_pages(fetch: Any) -> list[Any]:
    """Every item of a paged service call (``fetch(cursor) -> Page``)."""
    found: list[Any] = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return found
