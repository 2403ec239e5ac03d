"""What ``argosy admin audit ...`` does: check and export the audit log, directly on the
metadata database (ARGOSY_DATABASE_URL, or the state folder's SQLite), like ``admin backup``.

``verify`` exits 0 when the chain is intact and 1 listing each break (edited, deleted or
reordered events); ``export`` writes JSON lines to stdout, oldest first.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from argosy.config import Settings
from argosy.errors import UsageError

if TYPE_CHECKING:
    from argosy.stores.metadata.db import MetadataStore

_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _store(settings: Settings) -> MetadataStore:
    from argosy.stores.metadata.db import MetadataStore, open_engine

    return MetadataStore(open_engine(settings.metadata_url, migrate=False))


def parse_since(text: str | None) -> datetime | None:
    """An ISO-8601 time (a date alone is its midnight UTC; no zone means UTC)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"invalid --since {text!r}: use an ISO-8601 time such as 2025-01-31 or "
            "2025-01-31T12:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def verify(settings: Settings, json_output: bool) -> int:
    from argosy.auth import audit

    store = _store(settings)
    try:
        with store.session() as session:
            total = audit.count(session)
            problems = audit.verify(session)
    finally:
        store.close()
    if json_output:
        doc = {
            "ok": not problems,
            "events": total,
            "problems": [{"kind": p.kind, "seq": p.seq, "message": p.message} for p in problems],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif problems:
        sys.stdout.write(f"audit log BROKEN: {len(problems)} problem(s) in {total} events\n")
        for p in problems:
            sys.stdout.write(f"  {p.kind}: {p.message}\n")
    else:
        sys.stdout.write(f"audit log intact: {total} events, hash chain verified\n")
    return 1 if problems else 0


def export(settings: Settings, since: str | None, tenant: str | None) -> int:
    from argosy.auth import audit

    if tenant is not None and not _TENANT.match(tenant):
        raise UsageError(f"invalid tenant {tenant!r}: a DNS-1123 label such as 'team-a'")
    start = parse_since(since)
    store = _store(settings)
    try:
        with store.session() as session:
            for line in audit.export(session, since=start, tenant=tenant):
                sys.stdout.write(line)
    except BrokenPipeError:
        pass
    finally:
        store.close()
    return 0
