"""The prediction service's Prometheus metrics, written in the text exposition format
(``GET /metrics``): requests by outcome, rows predicted, latency, errors, the version served
and how often it was swapped. Thread-safe; nothing to install."""

from __future__ import annotations

import threading
from collections import Counter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (version, status code)
        self.rows: Counter[str] = Counter()  # version -> rows predicted
        self.errors: Counter[str] = Counter()  # kind -> count (invalid, failed, unauthorized)
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.swaps = 0
        self.version: int | None = None
        self.in_flight = 0

    def observe(self, version: int | None, status: int, seconds: float, rows: int) -> None:
        with self._lock:
            v = str(version) if version is not None else ""
            self.requests[v, str(status)] += 1
            if rows:
                self.rows[v] += rows
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def swapped(self, version: int, first: bool) -> None:
        with self._lock:
            self.version = version
            if not first:
                self.swaps += 1

    def render(self) -> str:
        m = f'model="{_escape(self.model)}"'
        with self._lock:
            lines = [
                "# HELP argosy_predict_requests_total Prediction requests by version and status.",
                "# TYPE argosy_predict_requests_total counter",
                *(
                    f'argosy_predict_requests_total{{{m},version="{v}",status="{s}"}} {n}'
                    for (v, s), n in sorted(self.requests.items())
                ),
                "# HELP argosy_predict_rows_total Rows predicted, by version.",
                "# TYPE argosy_predict_rows_total counter",
                *(
                    f'argosy_predict_rows_total{{{m},version="{v}"}} {n}'
                    for v, n in sorted(self.rows.items())
                ),
                "# HELP argosy_predict_errors_total Refused or failed requests, by kind.",
                "# TYPE argosy_predict_errors_total counter",
                *(
                    f'argosy_predict_errors_total{{{m},kind="{k}"}} {n}'
                    for k, n in sorted(self.errors.items())
                ),
                "# HELP argosy_predict_latency_seconds Time to answer /predict.",
                "# TYPE argosy_predict_latency_seconds histogram",
                *(
                    f'argosy_predict_latency_seconds_bucket{{{m},le="{b}"}} {n}'
                    for b, n in zip(LATENCY_BUCKETS, self.buckets, strict=True)
                ),
                f'argosy_predict_latency_seconds_bucket{{{m},le="+Inf"}} {self.latency_count}',
                f"argosy_predict_latency_seconds_sum{{{m}}} {self.latency_sum:.6f}",
                f"argosy_predict_latency_seconds_count{{{m}}} {self.latency_count}",
                "# HELP argosy_model_version The model version being served.",
                "# TYPE argosy_model_version gauge",
                f"argosy_model_version{{{m}}} {self.version if self.version is not None else 0}",
                "# HELP argosy_model_swaps_total Times the served version was replaced.",
                "# TYPE argosy_model_swaps_total counter",
                f"argosy_model_swaps_total{{{m}}} {self.swaps}",
            ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
