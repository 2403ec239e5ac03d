"""Who executes what the UI starts: the server's queue, or this machine (``argosy ui``).

Launch, retry and cancel are the same service calls in both homes (:mod:`argosy.service.runs`);
only the queue differs. On a server a created run goes on the server queue and any instance's
coordinator claims it. In local mode (``argosy ui``) there is no coordinator: a run is created
for this machine and executed by a background ``argosy runs resume`` process, exactly as
``argosy run --detach`` does (:meth:`argosy.client.local.LocalBackend.detach`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from argosy import api
from argosy.service import ServiceContext, runs

if TYPE_CHECKING:
    from argosy.client.local import LocalBackend


class Home(Protocol):
    def create(self, ctx: ServiceContext, body: api.RunCreate) -> api.Run: ...
    def retry(self, ctx: ServiceContext, ref: str) -> api.Run: ...
    def cancel(self, ctx: ServiceContext, ref: str) -> api.Run: ...


class ServerHome:
    """Runs go on the server queue."""

    def create(self, ctx: ServiceContext, body: api.RunCreate) -> api.Run:
        return runs.create_run(ctx, body).run

    def retry(self, ctx: ServiceContext, ref: str) -> api.Run:
        return runs.retry_run(ctx, ref)

    def cancel(self, ctx: ServiceContext, ref: str) -> api.Run:
        return runs.cancel_run(ctx, ref)[0]


class LocalHome:
    """Runs are executed on this machine, in a background process each."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    def create(self, ctx: ServiceContext, body: api.RunCreate) -> api.Run:
        run = runs.create_run(ctx, body, queue=None).run
        self.backend.detach(run.id)
        return run

    def retry(self, ctx: ServiceContext, ref: str) -> api.Run:
        run = runs.retry_run(ctx, ref, queue=None)
        self.backend.detach(run.id)
        return run

    def cancel(self, ctx: ServiceContext, ref: str) -> api.Run:
        return self.backend.cancel_run(ref)[0]
