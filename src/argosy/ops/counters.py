"""Process-wide counters that operations jobs add to and ``/metrics`` exports (no Prometheus
dependency here: the server's metrics module reads them at each scrape)."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counts: Counter[tuple[str, str]] = Counter()


def add(name: str, label: str = "", amount: int = 1) -> None:
    """Add ``amount`` to counter ``name`` (with one label value, e.g. the kind of orphan)."""
    if amount:
        with _lock:
            _counts[name, label] += amount


def snapshot(name: str) -> dict[str, int]:
    """The label values of counter ``name`` and their totals."""
    with _lock:
        return {label: n for (found, label), n in _counts.items() if found == name}
