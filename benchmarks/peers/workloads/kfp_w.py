"""The peer suite's workloads in Kubeflow Pipelines' local runner (``kfp.local``), in kfp's own
virtualenv: ``SubprocessRunner(use_venv=False)`` (each task a subprocess of this interpreter,
without its per-task ``pip install``), written from kfp's documentation.

    python kfp_w.py W1|W2|W3|W4|W5|W6 WORKDIR
"""

import sys
from pathlib import Path

from kfp.dsl import Artifact, Input, Output

from kfp import dsl, local

# the fastest documented local set-up: tasks are subprocesses of this environment, and
# install_kfp_package=False avoids the per-task 'pip install kfp' of the generated command
component = dsl.component(install_kfp_package=False, base_image="python:3.11")


@component
def bump(d: dict) -> dict:
    return {"x": d["x"] + 1}


@component
def inc(x: int) -> int:
    return x + 1


@component
def items(n: int) -> list:
    return list(range(n))


@component
def total(xs: list) -> int:
    return int(sum(xs))  # collected numbers arrive as floats


@component
def make_array(n: int, arr: Output[Artifact]):
    import numpy as np

    with open(arr.path, "wb") as f:
        np.save(f, np.ones(n, dtype=np.float64))


@component
def sum_array(arr: Input[Artifact]) -> float:
    import numpy as np

    return float(np.load(arr.path, mmap_mode="r").sum())


@component
def load(rows: int, out: Output[Artifact]):
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=8, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    frame.to_parquet(out.path)


@component
def clean(data: Input[Artifact], out: Output[Artifact]):
    import pandas as pd

    pd.read_parquet(data.path).dropna().reset_index(drop=True).to_parquet(out.path)


@component
def scale(data: Input[Artifact], out: Output[Artifact]):
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    frame = pd.read_parquet(data.path)
    features = [c for c in frame.columns if c != "label"]
    frame[features] = StandardScaler().fit_transform(frame[features])
    frame.to_parquet(out.path)


@component
def split_train(data: Input[Artifact], out: Output[Artifact]):
    import pandas as pd

    frame = pd.read_parquet(data.path)
    frame.iloc[: int(len(frame) * 0.8)].to_parquet(out.path)


@component
def fit(data: Input[Artifact]) -> list:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_parquet(data.path)
    model = LogisticRegression().fit(frame.drop(columns="label"), frame["label"])
    return [*model.coef_[0].tolist(), float(model.intercept_[0])]


@component
def evaluate(data: Input[Artifact], weights: list) -> float:
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(data.path)
    scores = frame.drop(columns="label").to_numpy() @ np.array(weights[:-1]) + weights[-1]
    return float(((scores > 0).astype(int) == frame["label"].to_numpy()).mean())


@dsl.pipeline
def w1():
    t = bump(d={"x": 0})
    for _ in range(3):
        t = bump(d=t.output)


@dsl.pipeline
def w2():
    listed = items(n=16)
    with dsl.ParallelFor(listed.output) as item:
        done = inc(x=item)
    total(xs=dsl.Collected(done.output))


@dsl.pipeline
def w3():
    sum_array(arr=make_array(n=12_500_000).outputs["arr"])


@dsl.pipeline
def w4():
    t = inc(x=0)
    for _ in range(49):
        t = inc(x=t.output)


@dsl.pipeline
def w6():
    scaled = scale(data=clean(data=load(rows=2000).outputs["out"]).outputs["out"])
    trained = fit(data=split_train(data=scaled.outputs["out"]).outputs["out"])
    evaluate(data=scaled.outputs["out"], weights=trained.output)


def main() -> None:
    workload, work = sys.argv[1], Path(sys.argv[2])
    caching = workload == "W5"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "out"),
               enable_caching=caching, cache_root=str(work / "cache"))  # fmt: skip
    {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w1, "W6": w6}[workload]()


if __name__ == "__main__":
    main()
