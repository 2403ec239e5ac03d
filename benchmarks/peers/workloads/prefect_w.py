"""The peer suite's workloads in Prefect 3, in Prefect's own virtualenv: flows whose tasks run
on the ``ProcessPoolTaskRunner`` (each task in a worker process), against the temporary local
server Prefect starts by itself, written from Prefect's documentation. W5: the W1 flow with
``cache_policy=INPUTS`` tasks, run a second time.

    python prefect_w.py W1|W2|W3|W4|W5|W6 WORKDIR
"""

import os
import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner

RUNNER = ProcessPoolTaskRunner(max_workers=2)


@task(cache_policy=NO_CACHE)
def bump(d: dict) -> dict:
    return {"x": d["x"] + 1}


@task(cache_policy=INPUTS, persist_result=True)
def bump_cached(d: dict) -> dict:
    return {"x": d["x"] + 1}


@task(cache_policy=NO_CACHE)
def inc(x: int) -> int:
    return x + 1


@task(cache_policy=NO_CACHE)
def items(n: int) -> list:
    return list(range(n))


@task(cache_policy=NO_CACHE)
def total(xs: list) -> int:
    return sum(xs)


@task(cache_policy=NO_CACHE)
def make_array(n: int):
    import numpy as np

    return np.ones(n, dtype=np.float64)


@task(cache_policy=NO_CACHE)
def sum_array(arr) -> float:
    return float(arr.sum())


@task(cache_policy=NO_CACHE)
def load(rows: int):
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=8, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    return frame


@task(cache_policy=NO_CACHE)
def clean(frame):
    return frame.dropna().reset_index(drop=True)


@task(cache_policy=NO_CACHE)
def scale(frame):
    from sklearn.preprocessing import StandardScaler

    features = [c for c in frame.columns if c != "label"]
    out = frame.copy()
    out[features] = StandardScaler().fit_transform(frame[features])
    return out


@task(cache_policy=NO_CACHE)
def split_train(frame):
    return frame.iloc[: int(len(frame) * 0.8)]


@task(cache_policy=NO_CACHE)
def fit(frame) -> list:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression().fit(frame.drop(columns="label"), frame["label"])
    return [*m.coef_[0].tolist(), float(m.intercept_[0])]


@task(cache_policy=NO_CACHE)
def evaluate(frame, weights: list) -> float:
    import numpy as np

    s = frame.drop(columns="label").to_numpy() @ np.array(weights[:-1]) + weights[-1]
    return float(((s > 0).astype(int) == frame["label"].to_numpy()).mean())


@flow(task_runner=RUNNER)
def w1() -> dict:
    d = {"x": 0}
    for _ in range(4):
        d = bump.submit(d).result()
    return d


@flow(task_runner=RUNNER)
def w5() -> dict:
    d = {"x": 0}
    for _ in range(4):
        d = bump_cached.submit(d).result()
    return d


@flow(task_runner=RUNNER)
def w2() -> int:
    listed = items.submit(16).result()
    done = [f.result() for f in inc.map(listed)]
    return total.submit(done).result()


@flow(task_runner=RUNNER)
def w3() -> float:
    return sum_array.submit(make_array.submit(12_500_000).result()).result()


@flow(task_runner=RUNNER)
def w4() -> int:
    x = 0
    for _ in range(50):
        x = inc.submit(x).result()
    return x


@flow(task_runner=RUNNER)
def w6() -> float:
    frame = scale.submit(clean.submit(load.submit(2000).result()).result()).result()
    weights = fit.submit(split_train.submit(frame).result()).result()
    return evaluate.submit(frame, weights).result()


def main() -> None:
    workload, work = sys.argv[1], Path(sys.argv[2])
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6}[workload]()


if __name__ == "__main__":
    main()
