"""Identifiers: sortable, globally unique ULIDs, so histories from two databases can merge."""

from __future__ import annotations

from ulid import ULID


def new_id() -> str:
    """A new ULID as its 26-character Crockford base32 string (sorts by creation time)."""
    return str(ULID())
