"""The peer suite's workloads in Metaflow (local runtime, each task a process), in Metaflow's
own virtualenv: each workload is a FlowSpec written to WORKDIR and run with ``python FLOW run``
(W5: ``resume end`` of the W1 flow: every step but the last cloned from the previous run).
Written from Metaflow's documentation.

    python metaflow_w.py W1|W2|W3|W4|W5|W6 WORKDIR
"""

import os
import sys
from pathlib import Path

HEAD = "from metaflow import FlowSpec, step\n\n\nclass {name}(FlowSpec):\n"


def chain(name: str, n: int, body: str, first: str) -> str:
    names = ["start", *[f"s{i}" for i in range(1, n - 1)], "end"]
    code = HEAD.format(name=name)
    for i, step in enumerate(names):
        code += "    @step\n    def " + step + "(self):\n"
        code += "        " + (first if i == 0 else body) + "\n"
        if step != "end":
            code += f"        self.next(self.{names[i + 1]})\n"
    return code + f"\n\nif __name__ == '__main__':\n    {name}()\n"


W2 = (
    HEAD.format(name="FanOut")
    + """
    @step
    def start(self):
        self.items = list(range(16))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        self.x = self.input + 1
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.x for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FanOut()
"""
)

W3 = (
    HEAD.format(name="PassArray")
    + """
    @step
    def start(self):
        import numpy as np

        self.arr = np.ones(12_500_000, dtype=np.float64)
        self.next(self.end)

    @step
    def end(self):
        self.total = float(self.arr.sum())


if __name__ == "__main__":
    PassArray()
"""
)

W6 = (
    HEAD.format(name="Tabular")
    + """
    @step
    def start(self):
        import pandas as pd
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=2000, n_features=8, random_state=0)
        self.frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
        self.frame["label"] = y
        self.next(self.clean)

    @step
    def clean(self):
        self.frame = self.frame.dropna().reset_index(drop=True)
        self.next(self.scale)

    @step
    def scale(self):
        from sklearn.preprocessing import StandardScaler

        features = [c for c in self.frame.columns if c != "label"]
        self.frame[features] = StandardScaler().fit_transform(self.frame[features])
        self.next(self.split)

    @step
    def split(self):
        self.train = self.frame.iloc[: int(len(self.frame) * 0.8)]
        self.next(self.fit)

    @step
    def fit(self):
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression().fit(self.train.drop(columns="label"), self.train["label"])
        self.weights = [*m.coef_[0].tolist(), float(m.intercept_[0])]
        self.next(self.end)

    @step
    def end(self):
        import numpy as np

        x = self.frame.drop(columns="label").to_numpy()
        s = x @ np.array(self.weights[:-1]) + self.weights[-1]
        self.accuracy = float(((s > 0).astype(int) == self.frame["label"].to_numpy()).mean())


if __name__ == "__main__":
    Tabular()
"""
)


def main() -> None:
    workload, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    flows = {
        "W1": chain("ChainDicts", 4, 'self.d = {"x": self.d["x"] + 1}', 'self.d = {"x": 1}'),
        "W2": W2,  # start, 16 x work, join (and Metaflow's required end)
        "W3": W3,
        "W4": chain("Chain50", 50, "self.x = self.x + 1", "self.x = 1"),
        "W6": W6,
    }
    flows["W5"] = flows["W1"]
    path = work / f"flow_{workload if workload != 'W5' else 'W1'}.py"
    path.write_text(flows[workload])
    os.chdir(work)
    os.environ.setdefault("USERNAME", "bench")
    command = ["resume", "end"] if workload == "W5" else ["run"]
    os.execv(sys.executable, [sys.executable, str(path), "--quiet", *command])


if __name__ == "__main__":
    main()
