"""The one periodic sweeper: whatever way a run ended (success, failure, cancel, timeout, an
engine or server crash), what its attempts left behind goes — processes, attempt folders
(scratch and temp files), pods and their secrets — through each executor's ``sweep`` hook
(``Executor.sweep``: the local executor's processes and folders, the Kubernetes executor's
Jobs and Secrets). An attempt is live while its row says it is running; anything of an attempt
that is not is an orphan. What was removed is counted in ``argosy_orphans_removed_total{kind}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select

from argosy.executors.base import Executor
from argosy.ops import counters
from argosy.states import AttemptState
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Attempt

log = logging.getLogger("argosy.sweeper")


def is_live_in(metadata: MetadataStore) -> object:
    """``is_live(attempt_id)``: its row says running (a fresh look each call)."""

    def is_live(attempt_id: str) -> bool:
        with metadata.session() as s:
            state = s.scalar(select(Attempt.state).where(Attempt.id == attempt_id))
        return state == AttemptState.RUNNING

    return is_live


def sweep(metadata: MetadataStore, executors: Iterable[Executor]) -> dict[str, int]:
    """One sweep over ``executors``; how many of each kind were removed."""
    is_live = is_live_in(metadata)
    found: dict[str, int] = {}
    for executor in executors:
        try:
            removed = executor.sweep(is_live)  # type: ignore[arg-type]
        except Exception:  # one executor's trouble does not stop the others
            log.exception("sweep of %s failed", type(executor).__name__)
            continue
        for item in removed:
            kind = item.split(":", 1)[0] if ":" in item else "job"
            found[kind] = found.get(kind, 0) + 1
    for kind, n in found.items():
        counters.add("orphans_removed", kind, n)
        log.info("sweeper removed %d orphaned %s(s)", n, kind)
    return found
