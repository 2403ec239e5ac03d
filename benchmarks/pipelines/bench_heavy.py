"""A benchmark pipeline whose steps' module imports pandas and scikit-learn, as real steps do.

Importing them costs a fresh interpreter half a second or more; issue 19's target is that such
a step starts within 20 ms of its inputs being ready on the second and later tasks of a run
(the first ones may start fresh while the warm parent imports them). ``cache=False`` keeps
every run honest.
"""

from __future__ import annotations

import pandas as pd
import sklearn.linear_model  # noqa: F401  (what a training step's module imports)

from argosy import pipeline, step

HEAVY_LENGTH = 8


@step(cache=False)
def inc_frame(x: int) -> int:
    """Add one, through pandas."""
    return int(pd.Series([x]).add(1).iloc[0])


@pipeline
def heavy_chain(start: int = 0) -> int:
    """A chain of 8 such steps: inc-frame, inc-frame-2, ..."""
    x = inc_frame(x=start)
    for _ in range(HEAVY_LENGTH - 1):
        x = inc_frame(x=x)
    return x
