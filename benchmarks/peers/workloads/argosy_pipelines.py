"""The peer suite's workloads in Argosy (run as ``argosy run FILE:wN``; see ../README.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from argosy import pipeline, step


@step(cache=False)
def bump(d: dict) -> dict:
    return {"x": d["x"] + 1}


@step(cache=False)
def inc(x: int) -> int:
    return x + 1


@step(cache=False)
def items(n: int) -> list:
    return list(range(n))


@step(cache=False)
def total(xs: list) -> int:
    return sum(xs)


@step(cache=False)
def make_array(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float64)


@step(cache=False)
def sum_array(arr: np.ndarray) -> float:
    return float(arr.sum())


@step
def bump_cached(d: dict) -> dict:
    return {"x": d["x"] + 1}


@pipeline
def w1() -> dict:
    """W1: a chain of 4 steps passing a dict."""
    d = {"x": 0}
    for _ in range(4):
        d = bump(d=d)
    return d


@pipeline
def w2() -> int:
    """W2: produce -> 16 x work -> join."""
    return total(xs=inc.map(items(n=16)))


@pipeline
def w3() -> float:
    """W3: a 100 MB float64 array from one step to the next."""
    return sum_array(arr=make_array(n=12_500_000))


@pipeline
def w4() -> int:
    """W4: a chain of 50 steps."""
    x = 0
    for _ in range(50):
        x = inc(x=x)
    return x


@pipeline
def w5() -> dict:
    """W5: W1 with caching on (the suite runs it once, then measures the cache-hit re-run)."""
    d = {"x": 0}
    for _ in range(4):
        d = bump_cached(d=d)
    return d


@step(cache=False)
def load(rows: int) -> pd.DataFrame:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=8, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    return frame


@step(cache=False)
def clean(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.dropna().reset_index(drop=True)


@step(cache=False)
def scale(frame: pd.DataFrame) -> pd.DataFrame:
    from sklearn.preprocessing import StandardScaler

    features = [c for c in frame.columns if c != "label"]
    out = frame.copy()
    out[features] = StandardScaler().fit_transform(frame[features])
    return out


@step(cache=False)
def split_train(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[: int(len(frame) * 0.8)]


@step(cache=False)
def fit(frame: pd.DataFrame) -> list:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(frame.drop(columns="label"), frame["label"])
    return [*model.coef_[0].tolist(), float(model.intercept_[0])]


@step(cache=False)
def evaluate(frame: pd.DataFrame, weights: list) -> float:
    x = frame.drop(columns="label").to_numpy()
    scores = x @ np.array(weights[:-1]) + weights[-1]
    return float(((scores > 0).astype(int) == frame["label"].to_numpy()).mean())


@pipeline
def w6() -> float:
    """W6: 6 steps with pandas and scikit-learn (load, clean, scale, split, fit, evaluate)."""
    frame = scale(frame=clean(frame=load(rows=2000)))
    return evaluate(frame=frame, weights=fit(frame=split_train(frame=frame)))
