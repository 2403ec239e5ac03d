"""Benchmark pipeline: pass a 100 MB float64 array from one step to the next.

The producer returns ``np.full(n, value)`` annotated ``np.ndarray`` (stored as ``.npy``,
hashed); the consumer receives it (verified, memory-mapped) and sums it. The benchmark passes a
new ``value`` each run, so every run stores a new blob (no deduplication).
"""

from __future__ import annotations

import numpy as np

from argosy import pipeline, step

ARRAY_BYTES = 100_000_000  # 100 MB
ARRAY_LENGTH = ARRAY_BYTES // 8  # float64


@step(cache=False)
def produce(n: int = ARRAY_LENGTH, value: float = 1.0) -> np.ndarray:
    """A 100 MB array, every element ``value``."""
    return np.full(n, value, dtype=np.float64)


@step(cache=False)
def consume(arr: np.ndarray) -> float:
    """Read every element: the sum."""
    return float(arr.sum())


@pipeline
def pass_array(n: int = ARRAY_LENGTH, value: float = 1.0) -> float:
    """produce -> consume."""
    return consume(arr=produce(n=n, value=value))
