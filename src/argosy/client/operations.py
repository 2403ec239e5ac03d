"""The operations part of the backend protocol (log search, costs, clean-up, retention and
retrievals), in both homes: :class:`LocalOperations` calls the application layer on the
local state folder, :class:`HttpOperations` the server's REST API. ``LocalBackend`` and
``HttpBackend`` inherit them, so each command is written once (``cli/operations.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from argosy.api import API_PREFIX
from argosy.api import ops as api_ops

if TYPE_CHECKING:
    from argosy.client.client import Client
    from argosy.config import Settings
    from argosy.service import ServiceContext


class OperationsBackend(Protocol):
    """What the operations commands need from where runs live."""

    def search_logs(
        self,
        query: str,
        *,
        run: str | None = None,
        pipeline: str | None = None,
        step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        stream: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> api_ops.LogSearchPage:
        """Lines of the tenant's task logs holding every word of ``query``, newest first."""

    def cost_report(
        self,
        by: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        run: str | None = None,
        all_tenants: bool = False,
    ) -> api_ops.CostReport:
        """The tenant's cost grouped ``by`` (``all_tenants``: every tenant's, admins only)."""

    def budget(self) -> api_ops.Budget:
        """The tenant's monthly budget and its month-to-date cost."""

    def delete_runs(self, refs: list[str]) -> api_ops.RunsDeleted:
        """Delete runs: their rows and bytes together."""

    def gc(self, dry_run: bool) -> api_ops.GcReport:
        """Unreferenced blobs, records of deleted runs, leftover folders: reported or removed."""

    def retention_policy(self) -> api_ops.RetentionPolicy: ...

    def set_retention(self, update: api_ops.RetentionPolicyUpdate) -> api_ops.RetentionPolicy: ...

    def list_holds(self) -> list[api_ops.LegalHold]: ...

    def place_hold(self, target: str, reason: str) -> api_ops.LegalHold: ...

    def release_hold(self, hold_id: str) -> api_ops.LegalHold: ...

    def list_retrievals(self, state: str | None = None) -> list[api_ops.Retrieval]: ...

    def request_retrieval(self, target: str, reason: str) -> api_ops.Retrieval: ...

    def decide_retrieval(
        self, retrieval_id: str, approve: bool, comment: str | None
    ) -> api_ops.Retrieval: ...

    def run_lifecycle(self) -> api_ops.LifecycleReport:
        """One pass of the lifecycle job now (on a server: every tenant; admins)."""


def _params(**values: Any) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in values.items()
        if v is not None
    }


class LocalOperations:
    """The operations protocol on the local state folder (the application layer)."""

    settings: Settings

    @property
    def ctx(self) -> ServiceContext:
        raise NotImplementedError  # LocalBackend's

    def search_logs(
        self,
        query: str,
        *,
        run: str | None = None,
        pipeline: str | None = None,
        step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        stream: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> api_ops.LogSearchPage:
        from argosy.service import search

        return search.search_logs(
            self.ctx, query, run=run, pipeline=pipeline, step=step, since=since, until=until,
            stream=stream, cursor=cursor, limit=limit,
        )  # fmt: skip

    def cost_report(
        self,
        by: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        run: str | None = None,
        all_tenants: bool = False,
    ) -> api_ops.CostReport:
        from argosy.service import costs

        prices = self.settings.prices_file
        if all_tenants:
            return costs.cost_report_all(
                self.ctx.metadata, by, since=since, until=until, prices_file=prices
            )
        return costs.cost_report(
            self.ctx, by, since=since, until=until, run=run, prices_file=prices
        )

    def budget(self) -> api_ops.Budget:
        from argosy.service import costs

        return costs.budget(self.ctx, prices_file=self.settings.prices_file)

    def delete_runs(self, refs: list[str]) -> api_ops.RunsDeleted:
        from argosy.service import cleanup

        return cleanup.delete_runs(self.ctx, refs)

    def gc(self, dry_run: bool) -> api_ops.GcReport:
        from argosy.service import cleanup

        return cleanup.gc(self.ctx, dry_run=dry_run, cache_dir=self.settings.home / "cache")

    def _now(self) -> datetime:
        from argosy.server.clock import clock_for

        return clock_for(self.settings.clock_file).now()

    def retention_policy(self) -> api_ops.RetentionPolicy:
        from argosy.service import retention

        return retention.get_policy(self.ctx, self.settings)

    def set_retention(self, update: api_ops.RetentionPolicyUpdate) -> api_ops.RetentionPolicy:
        from argosy.service import retention

        return retention.set_policy(self.ctx, update, self.settings)

    def list_holds(self) -> list[api_ops.LegalHold]:
        from argosy.service import retention

        return retention.list_holds(self.ctx)

    def place_hold(self, target: str, reason: str) -> api_ops.LegalHold:
        from argosy.service import retention

        body = api_ops.LegalHoldCreate(target=target, reason=reason)
        return retention.place_hold(self.ctx, body, self._now())

    def release_hold(self, hold_id: str) -> api_ops.LegalHold:
        from argosy.service import retention

        return retention.release_hold(self.ctx, hold_id, self._now())

    def list_retrievals(self, state: str | None = None) -> list[api_ops.Retrieval]:
        from argosy.service import retention

        return retention.list_retrievals(self.ctx, state)

    def request_retrieval(self, target: str, reason: str) -> api_ops.Retrieval:
        from argosy.service import retention

        body = api_ops.RetrievalCreate(target=target, reason=reason)
        return retention.request_retrieval(self.ctx, body, self._now())

    def decide_retrieval(
        self, retrieval_id: str, approve: bool, comment: str | None
    ) -> api_ops.Retrieval:
        from argosy.service import retention

        body = api_ops.RetrievalDecision(approve=approve, comment=comment)
        return retention.decide_retrieval(
            self.ctx, retrieval_id, body, self._now(), self.settings,
            self.settings.archive_storage_class,
        )  # fmt: skip

    def run_lifecycle(self) -> api_ops.LifecycleReport:
        from argosy.service import retention

        return retention.run_lifecycle(self.ctx, self.settings, self._now())


class HttpOperations:
    """The operations protocol on a server (its REST API)."""

    client: Client

    def search_logs(
        self,
        query: str,
        *,
        run: str | None = None,
        pipeline: str | None = None,
        step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        stream: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> api_ops.LogSearchPage:
        params = _params(
            q=query, run=run, pipeline=pipeline, step=step, since=since, until=until,
            stream=stream, cursor=cursor, limit=limit,
        )  # fmt: skip
        c = self.client
        return c._one(api_ops.LogSearchPage, "GET", c._t("/logs/search"), params=params)

    def cost_report(
        self,
        by: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        run: str | None = None,
        all_tenants: bool = False,
    ) -> api_ops.CostReport:
        c = self.client
        params = _params(by=by, since=since, until=until, run=run)
        path = f"{API_PREFIX}/costs" if all_tenants else c._t("/costs")
        return c._one(api_ops.CostReport, "GET", path, params=params)

    def budget(self) -> api_ops.Budget:
        c = self.client
        return c._one(api_ops.Budget, "GET", c._t("/costs/budget"))

    def delete_runs(self, refs: list[str]) -> api_ops.RunsDeleted:
        c = self.client
        done = api_ops.RunsDeleted(runs=[], artifacts=0, blobs_freed=0, bytes_freed=0)
        for ref in refs:
            one = c._one(api_ops.RunsDeleted, "DELETE", c._t(f"/runs/{ref}"))
            done.runs += one.runs
            done.artifacts += one.artifacts
            done.blobs_freed += one.blobs_freed
            done.bytes_freed += one.bytes_freed
        return done

    def gc(self, dry_run: bool) -> api_ops.GcReport:
        c = self.client
        params = {"dry_run": "true" if dry_run else "false"}
        return c._one(api_ops.GcReport, "POST", f"{API_PREFIX}/gc", params=params)

    def retention_policy(self) -> api_ops.RetentionPolicy:
        c = self.client
        return c._one(api_ops.RetentionPolicy, "GET", c._t("/retention"))

    def set_retention(self, update: api_ops.RetentionPolicyUpdate) -> api_ops.RetentionPolicy:
        c = self.client
        body = update.model_dump(mode="json", exclude_unset=True)
        return c._one(api_ops.RetentionPolicy, "PUT", c._t("/retention"), json=body)

    def list_holds(self) -> list[api_ops.LegalHold]:
        c = self.client
        return [api_ops.LegalHold.model_validate(d) for d in c._json("GET", c._t("/holds"))]

    def place_hold(self, target: str, reason: str) -> api_ops.LegalHold:
        c = self.client
        body = {"target": target, "reason": reason}
        return c._one(api_ops.LegalHold, "POST", c._t("/holds"), json=body)

    def release_hold(self, hold_id: str) -> api_ops.LegalHold:
        c = self.client
        return c._one(api_ops.LegalHold, "POST", c._t(f"/holds/{hold_id}/release"))

    def list_retrievals(self, state: str | None = None) -> list[api_ops.Retrieval]:
        c = self.client
        found = c._json("GET", c._t("/retrievals"), params=_params(state=state))
        return [api_ops.Retrieval.model_validate(d) for d in found]

    def request_retrieval(self, target: str, reason: str) -> api_ops.Retrieval:
        c = self.client
        body = {"target": target, "reason": reason}
        return c._one(api_ops.Retrieval, "POST", c._t("/retrievals"), json=body)

    def decide_retrieval(
        self, retrieval_id: str, approve: bool, comment: str | None
    ) -> api_ops.Retrieval:
        c = self.client
        body = {"approve": approve, "comment": comment}
        path = c._t(f"/retrievals/{retrieval_id}/decision")
        return c._one(api_ops.Retrieval, "POST", path, json=body)

    def run_lifecycle(self) -> api_ops.LifecycleReport:
        c = self.client
        return c._one(api_ops.LifecycleReport, "POST", f"{API_PREFIX}/lifecycle")
