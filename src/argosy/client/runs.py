"""The Python API: run pipelines and inspect runs from a notebook, a script or CI.

::

    import argosy
    from my_project.pipelines import train

    run = train.run(n_estimators=200)            # the engine, isolated steps, caching, lineage
    run.status, run.metrics                       # 'succeeded', {'evaluate.output': {...}}
    model = run.outputs["model"].load()          # loaded by its format: the fitted estimator
    run["train"].attempts                        # attempts with times and resource use
    print(run.logs("train"))
    run.lineage("model")                          # where the model came from

    argosy.connect("https://argosy.example.com", token=...)   # the same calls, on a server
    for r in argosy.runs(pipeline="train", status="failed"):
        r.retry()

Every call goes through the backend protocol (:mod:`argosy.client.backend`): the local
state folder by default (``ARGOSY_HOME`` or the project's ``.argosy``), a server after
:func:`connect` or with ``ARGOSY_SERVER`` set. In Jupyter a :class:`Run` shows as a table
of its tasks, refreshed each time it is displayed.
"""

from __future__ import annotations

import html
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argosy import api
from argosy.errors import UsageError

if TYPE_CHECKING:
    from argosy.client.backend import Backend
    from argosy.sdk.pipeline import Pipeline

DONE = frozenset({"succeeded", "failed", "cancelled"})
WAIT_POLL_SECONDS = 0.5

_default: Backend | None = None
_lock = threading.Lock()


def connect(
    url: str | None = None, *, token: str | None = None, tenant: str | None = None
) -> Backend:
    """Make later calls act on the server at ``url`` (``token``: an API or OIDC access token,
    default ``ARGOSY_TOKEN`` or the one ``argosy login`` stored; ``tenant``: default
    ``ARGOSY_TENANT``). Without ``url`` and without ``ARGOSY_SERVER``: the local state folder.
    Returns the backend, which ``backend=`` arguments also take."""
    global _default
    from argosy.client.backend import open_backend
    from argosy.config import load_settings

    overrides: dict[str, Any] = {"server": url, "token": token, "tenant": tenant}
    backend = open_backend(load_settings(**{k: v for k, v in overrides.items() if v is not None}))
    with _lock:
        if _default is not None:
            _default.close()
        _default = backend
    return backend


def backend_of(backend: Backend | None = None) -> Backend:
    """``backend``, else the one :func:`connect` chose, else the settings' (opened once)."""
    global _default
    if backend is not None:
        return backend
    with _lock:
        if _default is None:
            from argosy.client.backend import open_backend
            from argosy.config import load_settings

            _default = open_backend(load_settings())
        return _default


def runs(
    *,
    pipeline: str | None = None,
    status: str | None = None,
    limit: int = 20,
    backend: Backend | None = None,
) -> list[Run]:
    """Runs, newest first (optionally of one pipeline, in one status)."""
    found = backend_of(backend)
    return [
        Run(r.id, backend=found, _doc=r)
        for r in found.list_runs(pipeline=pipeline, status=status, limit=limit)
    ]


def start(
    pipeline: Pipeline,
    parameters: Mapping[str, Any],
    *,
    backend: Backend | None,
    wait: bool,
    fail_fast: bool,
    no_cache: bool,
    version: str | None,
    progress: bool,
) -> Run:
    """Compile ``pipeline``, create a run with ``parameters`` and follow or detach it."""
    from argosy.config import load_settings
    from argosy.spec.compile import compile_pipeline
    from argosy.spec.parameters import bind_parameters

    found = backend_of(backend)
    found.prewarm()  # a local run's first step need not start a fresh interpreter
    compiled = compile_pipeline(pipeline, cache_dir=load_settings().home / "cache")
    bound = bind_parameters(compiled.spec, {}, dict(parameters))
    created = found.submit(compiled, bound, version=version, fail_fast=fail_fast, no_cache=no_cache)
    run = Run(created.id, backend=found, _doc=created)
    if wait:
        run._follow(progress)
    elif found.server_url is None:  # locally this process executes it: in the background
        run._thread = threading.Thread(
            target=run._follow, args=(False,), name=f"argosy-run-{run.id}", daemon=True
        )
        run._thread.start()
    return run


class Output:
    """One output of a run or task: its artifact, and ``load()`` to get the value back."""

    def __init__(self, ref: api.ArtifactRef, backend: Backend) -> None:
        self.ref = ref
        self._backend = backend

    def __repr__(self) -> str:
        return f"<Output {self.ref.ref} {self.ref.type} sha256:{self.ref.sha256[:12]}>"

    @property
    def value(self) -> Any:
        """The value when it is small JSON (shown without loading), else None."""
        return self.ref.value

    def load(self, *, into: Path | None = None) -> Any:
        """The value, read by the artifact's format (a DataFrame comes back a DataFrame, an
        array memory-mapped, a model by its serializer). Files and folders are written under
        ``into`` (default: a new temporary folder) and their path is returned. Pickled and
        joblib artifacts load only in the tenant that wrote them."""
        from argosy.runtime import formats

        if self.ref.value is not None:  # small JSON, already here
            from argosy.sdk.types import METRICS, Metrics

            if self.ref.type == METRICS:
                return Metrics(self.ref.value)
            return self.ref.value
        scratch = into or Path(tempfile.mkdtemp(prefix="argosy-load-"))
        scratch.mkdir(parents=True, exist_ok=True)
        artifact = self._backend.get_artifact(self.ref.artifact_id)
        blob = scratch / f".blob-{self.ref.sha256}"
        self._backend.download(artifact, blob)
        tenant = self._backend.tenant
        return formats.read_value(
            blob, self.ref.format, self.ref.type, scratch=scratch, tenant=tenant,
            artifact_tenant=tenant,
        )  # fmt: skip


class Task:
    """One task of a run (a node path): its state, attempts, outputs and logs."""

    def __init__(self, doc: api.Task, run: Run) -> None:
        self.doc = doc
        self._run = run

    def __repr__(self) -> str:
        return f"<Task {self.doc.node_path} {self.doc.state}>"

    @property
    def node_path(self) -> str:
        return self.doc.node_path

    @property
    def state(self) -> str:
        return self.doc.state

    @property
    def attempts(self) -> list[api.Attempt]:
        return list(self.doc.attempts)

    @property
    def outputs(self) -> dict[str, Output]:
        return {k: Output(v, self._run.backend) for k, v in self.doc.outputs.items()}

    def logs(self, attempt: int | None = None) -> str:
        return self._run.logs(self.doc.node_path, attempt=attempt)


class Run:
    """A run, locally or on a server; reads refresh it until it has finished."""

    def __init__(
        self,
        run_id: str,
        *,
        backend: Backend | None = None,
        _doc: api.Run | None = None,
    ) -> None:
        self.backend = backend_of(backend)
        self._doc: api.Run | api.RunDetail = _doc or self.backend.get_run(run_id)
        self.id = self._doc.id
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Run {self.id} {self._doc.pipeline} {self._doc.status}>"

    # -- state ---------------------------------------------------------------------------------
    def refresh(self) -> api.RunDetail:
        """Read the run again (its tasks, attempts, outputs and metrics)."""
        detail = self.backend.run_detail(self.id)
        self._doc = detail
        return detail

    @property
    def document(self) -> api.RunDetail:
        """The run document (what ``argosy runs show --output json`` prints)."""
        if isinstance(self._doc, api.RunDetail) and self._doc.status in DONE:
            return self._doc
        return self.refresh()

    @property
    def status(self) -> str:
        return self.document.status

    @property
    def pipeline(self) -> str:
        return self._doc.pipeline

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._doc.parameters)

    @property
    def tasks(self) -> dict[str, Task]:
        """Node path -> task, in plan order."""
        return {t.node_path: Task(t, self) for t in self.document.tasks}

    def __getitem__(self, node_path: str) -> Task:
        tasks = self.tasks
        if node_path not in tasks:
            raise KeyError(
                f"run {self.id} has no node {node_path!r}; its nodes are: {', '.join(tasks)}"
            )
        return tasks[node_path]

    @property
    def outputs(self) -> dict[str, Output]:
        """The pipeline's outputs."""
        return {k: Output(v, self.backend) for k, v in self.document.outputs.items()}

    @property
    def metrics(self) -> dict[str, Any]:
        """``NODE.OUTPUT`` -> the values of every ``Metrics`` output."""
        return dict(self.document.metrics)

    # -- reading -------------------------------------------------------------------------------
    def logs(self, node: str | None = None, *, attempt: int | None = None) -> str:
        """The captured output, as ``argosy logs`` prints it."""
        lines = self.backend.logs(self.id, node=node, attempt=attempt)
        return "".join(f"{x.node_path}#{x.attempt} {x.time[11:23]} {x.line}\n" for x in lines)

    def lineage(self, output: str, *, down: bool = False) -> api.Lineage:
        """Where a pipeline output (or ``NODE/OUTPUT``) came from, or what was made from it."""
        refs = self.document.outputs
        ref = refs[output].ref if output in refs else f"{self.id}/{output}"
        return self.backend.lineage(ref, "down" if down else "up")

    # -- acting --------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Run:
        """Until the run has finished (``TimeoutError`` after ``timeout`` seconds)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"run {self.id} is still running after {timeout} s")
        else:
            import time

            deadline = None if timeout is None else time.monotonic() + timeout
            while self.backend.get_run(self.id).status not in DONE:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"run {self.id} is still running after {timeout} s")
                time.sleep(WAIT_POLL_SECONDS)
        self.refresh()
        return self

    def cancel(self) -> Run:
        """Ask the run to stop; running attempts are killed, the rest never start."""
        self.backend.cancel_run(self.id)
        self.refresh()
        return self

    def retry(self, *, wait: bool = True) -> Run:
        """A new run reusing this failed or cancelled run's succeeded tasks."""
        created = self.backend.retry_run(self.id)
        run = Run(created.id, backend=self.backend, _doc=created)
        if wait:
            run._follow(False)
        elif self.backend.server_url is None:
            raise UsageError("a local retry runs in this process: call retry() with wait=True")
        return run

    def _follow(self, progress: bool) -> None:
        if progress:
            from rich.console import Console

            from argosy.cli.progress import Progress

            with Progress(Console(stderr=True)) as shown:
                self.backend.follow(self.id, shown)
        else:
            self.backend.follow(self.id)
        self.refresh()

    # -- notebooks -----------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        doc = self.document
        e = html.escape
        colour = {"succeeded": "#1a7f37", "failed": "#cf222e", "running": "#9a6700",
                  "cancelled": "#8250df", "cached": "#0969da", "skipped": "#6e7781"}  # fmt: skip
        rows = []
        for t in doc.tasks:
            last = t.attempts[-1] if t.attempts else None
            wall = f"{last.wall_time:.2f}s" if last and last.wall_time is not None else ""
            state = f'<span style="color:{colour.get(t.state, "inherit")}">{e(t.state)}</span>'
            rows.append(
                f"<tr><td>{e(t.node_path)}</td><td>{e(t.step)}</td><td>{state}</td>"
                f"<td>{len(t.attempts) or ''}</td><td>{wall}</td><td>{e(t.reason or '')}</td></tr>"
            )
        head = (
            f"<p><b>run {e(doc.id)}</b> of <b>{e(doc.pipeline)}</b>: "
            f'<span style="color:{colour.get(doc.status, "inherit")}">{e(doc.status)}</span></p>'
        )
        table = (
            "<table><thead><tr><th>node</th><th>step</th><th>state</th><th>attempts</th>"
            "<th>wall</th><th>reason</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
        return head + table
