"""Keyset pagination on row ids (ULIDs sort by creation time).

A page holds the ``limit`` newest rows older than the cursor; ``next_cursor`` is an opaque
token for the last row returned (``None`` on the last page). Keyset pages stay fast at any
depth and never skip or repeat a row when rows are added meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

from argosy.errors import UsageError

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The row id a cursor stands for; ``UsageError`` for anything this API did not hand out."""
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        value = ""
    if not _ULID.match(value):
        raise UsageError(
            f"invalid cursor {cursor!r}; pass the next_cursor of the previous page unchanged, "
            "or omit cursor for the first page",
            code="invalid_cursor",
        )
    return value


def paged(rows: Sequence[Any], limit: int) -> tuple[list[Any], str | None]:
    """Rows fetched with ``limit + 1`` -> (this page's rows, the next page's cursor or None)."""
    kept = list(rows[:limit])
    more = len(rows) > limit and bool(kept)
    return kept, encode_cursor(kept[-1].id) if more else None
