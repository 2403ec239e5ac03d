"""A typed Python client of the Argosy server's REST API (used by the CLI, usable from notebooks).

``from argosy.client import Client`` imports httpx only when ``Client`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from argosy.client.client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from argosy.client.client import Client

        return Client
    raise AttributeError(f"module 'argosy.client' has no attribute {name!r}")
