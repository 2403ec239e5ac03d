"""Benchmark pipelines made of trivial steps, so that orchestration cost dominates.

Every step is ``x + 1`` on an int (the same logic the plain-Python baseline runs with
``python -c``). ``cache=False`` keeps every run honest should the engine learn to cache.
"""

from __future__ import annotations

from argosy import pipeline, step

CHAIN_LENGTH = 50
FAN_WIDTH = 16


@step(cache=False)
def inc(x: int) -> int:
    """The trivial step: add one."""
    return x + 1


@step(cache=False, cpu=0.5)
def inc_half(x: int) -> int:
    """The same trivial step, asking for half a core (two fit per core)."""
    return x + 1


@step(cache=False)
def join(
    a0: int, a1: int, a2: int, a3: int, a4: int, a5: int, a6: int, a7: int,
    a8: int, a9: int, a10: int, a11: int, a12: int, a13: int, a14: int, a15: int,
) -> int:  # fmt: skip
    """Sum the 16 branches of the fan-out."""
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15


@pipeline
def chain3(start: int = 0) -> int:
    """Three trivial steps in a row (fixed start-up)."""
    x = inc(x=start)
    x = inc(x=x)
    return inc(x=x)


@pipeline
def chain50(start: int = 0) -> int:
    """A chain of 50 trivial steps: inc, inc-2, ... inc-50."""
    x = inc(x=start)
    for _ in range(CHAIN_LENGTH - 1):
        x = inc(x=x)
    return x


@pipeline
def fanout16(start: int = 0) -> int:
    """1 -> 16 parallel -> 1, each branch asking for one core (the default)."""
    seed = inc(x=start)
    branches = [inc(x=seed) for _ in range(FAN_WIDTH)]
    return join(*branches)


@pipeline
def fanout16_half(start: int = 0) -> int:
    """The same fan-out with branches at cpu=0.5, so twice as many run at once."""
    seed = inc(x=start)
    branches = [inc_half(x=seed) for _ in range(FAN_WIDTH)]
    return join(*branches)


@step
def inc_cached(x: int) -> int:
    """The trivial step with caching on (the default), for the all-hit re-run."""
    return x + 1


@pipeline
def cached4(start: int = 0) -> int:
    """Four cacheable steps in a row: run once, then every re-run hits the cache."""
    x = inc_cached(x=start)
    x = inc_cached(x=x)
    x = inc_cached(x=x)
    return inc_cached(x=x)
