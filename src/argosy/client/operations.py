"""The operations part of the backend protocol (log search, costs, clean-up, retention and
retrievals), in both homes: :class:`LocalOperations` calls the application layer on the
local state folder, :class:`HttpOperations` the server's REST API. ``LocalBackend`` and
``HttpBackend`` inherit them, so each command is written once (``cli/operations.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from argosy.api import ops as api_ops

if TYPE_CHECKING:
    from argosy.client.client import Client
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


def _params(**values: Any) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in values.items()
        if v is not None
    }


class LocalOperations:
    """The operations protocol on the local state folder (the application layer)."""

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
