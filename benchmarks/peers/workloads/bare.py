"""The peer suite's bare baseline: each step a fresh ``python -c`` child (no orchestration).

python bare.py W1|W2|W3|W4|W5|W6 WORKDIR
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PY = sys.executable
BUMP = "import json,sys;d=json.loads(sys.argv[1]);print(json.dumps({'x':d['x']+1}))"
INC = "import sys;print(int(sys.argv[1])+1)"
SAVE = "import numpy as np,sys;np.save(sys.argv[1],np.ones(12_500_000))"
LOAD = "import numpy as np,sys;print(float(np.load(sys.argv[1],mmap_mode='r').sum()))"
W6 = {
    "load": "from sklearn.datasets import make_classification;import pandas as pd,sys;"
    "x,y=make_classification(n_samples=2000,n_features=8,random_state=0);"
    "f=pd.DataFrame(x,columns=[f'f{i}' for i in range(8)]);f['label']=y;f.to_parquet(sys.argv[2])",
    "clean": "import pandas as pd,sys;pd.read_parquet(sys.argv[1]).dropna()"
    ".reset_index(drop=True).to_parquet(sys.argv[2])",
    "scale": "import pandas as pd,sys;from sklearn.preprocessing import StandardScaler;"
    "f=pd.read_parquet(sys.argv[1]);c=[k for k in f.columns if k!='label'];"
    "f[c]=StandardScaler().fit_transform(f[c]);f.to_parquet(sys.argv[2])",
    "split": "import pandas as pd,sys;f=pd.read_parquet(sys.argv[1]);"
    "f.iloc[:int(len(f)*0.8)].to_parquet(sys.argv[2])",
    "fit": "import pandas as pd,sys,json;from sklearn.linear_model import LogisticRegression;"
    "f=pd.read_parquet(sys.argv[1]);m=LogisticRegression().fit(f.drop(columns='label'),"
    "f['label']);open(sys.argv[2],'w').write(json.dumps([*m.coef_[0].tolist(),"
    "float(m.intercept_[0])]))",
    "evaluate": "import pandas as pd,numpy as np,sys,json;f=pd.read_parquet(sys.argv[1]);"
    "w=json.load(open(sys.argv[2]));s=f.drop(columns='label').to_numpy()@np.array(w[:-1])+w[-1];"
    "print(float(((s>0).astype(int)==f['label'].to_numpy()).mean()))",
}


def py(code: str, *args: str) -> str:
    return subprocess.run([PY, "-c", code, *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def main() -> None:
    workload, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    if workload in ("W1", "W5"):
        cached = work / "w1.json"
        if workload == "W5" and cached.exists():  # a cache hit: the stored result
            print(cached.read_text())
            return
        d = '{"x": 0}'
        for _ in range(4):
            d = py(BUMP, d)
        cached.write_text(d)
        print(d)
    elif workload == "W2":
        items = list(range(16))
        with ThreadPoolExecutor(2) as pool:  # the machine's cores, as the tools get
            print(sum(int(v) for v in pool.map(lambda i: py(INC, str(i)), items)))
    elif workload == "W3":
        path = str(work / "array.npy")
        py(SAVE, path)
        print(py(LOAD, path))
    elif workload == "W4":
        x = "0"
        for _ in range(50):
            x = py(INC, x)
        print(x)
    elif workload == "W6":
        f = [str(work / f"{n}.parquet") for n in ("raw", "clean", "scaled", "train")]
        py(W6["load"], "", f[0])
        py(W6["clean"], f[0], f[1])
        py(W6["scale"], f[1], f[2])
        py(W6["split"], f[2], f[3])
        py(W6["fit"], f[3], str(work / "weights.json"))
        print(py(W6["evaluate"], f[2], str(work / "weights.json")))
    else:
        raise SystemExit(f"unknown workload {workload}")
    json.dumps(None)


if __name__ == "__main__":
    main()
