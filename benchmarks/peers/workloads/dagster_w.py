"""The peer suite's workloads in Dagster, in Dagster's own virtualenv: jobs on the
``multiprocess_executor`` (each op a process), run with ``execute_job`` on a temporary
instance, written from Dagster's documentation. Dagster has no cache for job steps: no W5.

    python dagster_w.py W1|W2|W3|W4|W6 WORKDIR
"""

import sys
from pathlib import Path

from dagster import (
    DagsterInstance,
    DynamicOut,
    DynamicOutput,
    execute_job,
    job,
    multiprocess_executor,
    op,
    reconstructable,
)


@op
def first() -> dict:
    return {"x": 1}


@op
def bump(d: dict) -> dict:
    return {"x": d["x"] + 1}


@op
def zero() -> int:
    return 1


@op
def inc(x: int) -> int:
    return x + 1


@op(out=DynamicOut())
def items():
    for i in range(16):
        yield DynamicOutput(i, mapping_key=str(i))


@op
def total(xs: list) -> int:
    return sum(xs)


@op
def make_array():
    import numpy as np

    return np.ones(12_500_000, dtype=np.float64)


@op
def sum_array(arr) -> float:
    return float(arr.sum())


@op
def load():
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=2000, n_features=8, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    return frame


@op
def clean(frame):
    return frame.dropna().reset_index(drop=True)


@op
def scale(frame):
    from sklearn.preprocessing import StandardScaler

    features = [c for c in frame.columns if c != "label"]
    out = frame.copy()
    out[features] = StandardScaler().fit_transform(frame[features])
    return out


@op
def split_train(frame):
    return frame.iloc[: int(len(frame) * 0.8)]


@op
def fit(frame) -> list:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression().fit(frame.drop(columns="label"), frame["label"])
    return [*m.coef_[0].tolist(), float(m.intercept_[0])]


@op
def evaluate(frame, weights: list) -> float:
    import numpy as np

    s = frame.drop(columns="label").to_numpy() @ np.array(weights[:-1]) + weights[-1]
    return float(((s > 0).astype(int) == frame["label"].to_numpy()).mean())


@job(executor_def=multiprocess_executor)
def w1():
    d = first()
    for i in range(3):
        d = bump.alias(f"bump_{i}")(d)


@job(executor_def=multiprocess_executor)
def w2():
    total(items().map(inc).collect())


@job(executor_def=multiprocess_executor)
def w3():
    sum_array(make_array())


@job(executor_def=multiprocess_executor)
def w4():
    x = zero()
    for i in range(49):
        x = inc.alias(f"inc_{i}")(x)


@job(executor_def=multiprocess_executor)
def w6():
    frame = scale(clean(load()))
    evaluate(frame, fit(split_train(frame)))


def main() -> None:
    workload, work = sys.argv[1], Path(sys.argv[2])
    jobs = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W6": w6}
    if workload not in jobs:
        raise SystemExit(f"{workload}: not supported by Dagster jobs")
    (work / "dagster").mkdir(parents=True, exist_ok=True)
    with DagsterInstance.local_temp(str(work / "dagster")) as instance:
        result = execute_job(reconstructable(jobs[workload]), instance=instance)
        if not result.success:
            raise SystemExit(f"{workload} failed")


if __name__ == "__main__":
    main()
