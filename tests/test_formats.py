"""Typed artifacts round-trip through real runs: every built-in format, hash-verified.

One module-scoped run produces a value of every supported kind (pandas, pyarrow, polars,
numpy, dict, bytes, a file, a directory, joblib and pickle models) and hands each to a
consumer step that reports what it received. The tests then check the consumers' reports,
the artifact rows (type, format, sha256) and the downloaded bytes. Separate runs show that a
corrupted blob is refused with an integrity error, and that outputs that do not fit their
annotation fail with ``output_error``.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace, outputs

BIG_ROWS = 13_107_200  # float64 elements: exactly 100 MiB

# The steps live in one module per library, so each task's process imports only the library
# its step uses (a step's process imports the step's module, not the pipeline file).
MODULES = {
    "fmt_pandas": """
import pandas as pd

from argosy import step


@step
def make_pandas() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]})


@step
def read_pandas(df: pd.DataFrame) -> dict:
    return {"kind": f"{type(df).__module__.split('.')[0]}.{type(df).__name__}",
            "columns": list(df.columns), "records": df.to_dict("records"),
            "dtypes": [str(t) for t in df.dtypes]}
""",
    "fmt_arrow": """
import pyarrow as pa

from argosy import step


@step
def make_arrow() -> pa.Table:
    return pa.table({"k": ["p", "q"], "v": [10, 20]})


@step
def read_arrow(table: pa.Table) -> dict:
    return {"kind": f"{type(table).__module__.split('.')[0]}.{type(table).__name__}",
            "schema": [f"{f.name}:{f.type}" for f in table.schema], "data": table.to_pydict()}
""",
    "fmt_polars": """
import polars as pl

from argosy import step


@step
def make_polars() -> pl.DataFrame:
    return pl.DataFrame({"n": [3, 1, 2], "s": ["c", "a", "b"]})


@step
def read_polars(df: pl.DataFrame) -> dict:
    return {"kind": f"{type(df).__module__.split('.')[0]}.{type(df).__name__}",
            "columns": df.columns, "rows": df.rows(), "dtypes": [str(t) for t in df.dtypes]}
""",
    "fmt_arrays": f"""
import numpy as np

from argosy import step


@step
def make_numpy() -> np.ndarray:
    return np.arange(12, dtype=np.float64).reshape(3, 4) / 4


@step
def read_numpy(arr: np.ndarray) -> dict:
    return {{"dtype": str(arr.dtype), "shape": list(arr.shape), "values": arr.tolist(),
             "is_ndarray": isinstance(arr, np.ndarray)}}


@step(memory="1Gi")
def make_big() -> np.ndarray:
    return np.arange({BIG_ROWS}, dtype=np.float64)


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


@step(memory="1Gi")
def read_big(arr: np.ndarray) -> dict:
    before = _rss_anon()
    total = float(arr.sum())  # touches every element
    after = _rss_anon()
    return {{"type": type(arr).__name__, "is_memmap": isinstance(arr, np.memmap),
             "writeable": bool(arr.flags.writeable), "size": int(arr.size), "sum": total,
             "rss_anon_before": before, "rss_anon_after": after}}
""",
    "fmt_plain": """
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from argosy import serializer, step


@dataclass
class Point:
    x: int
    y: int

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


@step
def make_dict() -> dict:
    return {"name": "argosy", "sizes": [1, 2, 3], "nested": {"ok": True, "ratio": 0.25}}


@step
def read_dict(d: dict) -> dict:
    return {"kind": type(d).__name__, "value": d}


@step
def make_bytes() -> bytes:
    return bytes(range(256)) * 4 + b"\\x00end"


@step
def read_bytes(b: bytes) -> dict:
    return {"kind": type(b).__name__, "len": len(b), "sha256": hashlib.sha256(b).hexdigest()}


@step
def make_file() -> Path:
    path = Path("report.txt")  # in the task's working folder
    path.write_text("accuracy: 0.93\\nrows: 1000\\n")
    return path


@step
def read_file(p: Path) -> dict:
    return {"is_path": isinstance(p, Path), "name": p.name, "is_file": p.is_file(),
            "text": p.read_text()}


@step
def make_dir() -> Path:
    root = Path("bundle")
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")
    (root / "sub" / "deeper" / "c.bin").write_bytes(bytes([0, 1, 2, 255]))
    return root


@step
def read_dir(p: Path) -> dict:
    files = {f.relative_to(p).as_posix(): f.read_bytes().hex()
             for f in sorted(p.rglob("*")) if f.is_file()}
    dirs = sorted(d.relative_to(p).as_posix() for d in p.rglob("*") if d.is_dir())
    return {"is_dir": p.is_dir(), "files": files, "dirs": dirs}


@step
def make_point() -> Annotated[Point, serializer("pickle")]:
    return Point(3, -4)


@step
def read_point(point: Annotated[Point, serializer("pickle")]) -> dict:
    return {"kind": type(point).__qualname__, "x": point.x, "y": point.y,
            "norm1": point.norm1()}
""",
    "fmt_models": """
from typing import Annotated

from argosy import serializer, step


@step
def make_model() -> Annotated[object, serializer("joblib")]:
    from sklearn.linear_model import LogisticRegression

    X = [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]]
    y = [0, 0, 0, 1, 1, 1]
    return LogisticRegression().fit(X, y)


@step
def read_model(model: Annotated[object, serializer("joblib")]) -> dict:
    return {"kind": f"{type(model).__module__.split('.')[0]}.{type(model).__name__}",
            "classes": model.classes_.tolist(),
            "predictions": model.predict([[-10.0], [2.0], [3.0], [10.0]]).tolist(),
            "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}
""",
    "fmt_pipeline": """
from argosy import pipeline
from fmt_arrays import make_big, make_numpy, read_big, read_numpy
from fmt_arrow import make_arrow, read_arrow
from fmt_models import make_model, read_model
from fmt_pandas import make_pandas, read_pandas
from fmt_plain import (make_bytes, make_dict, make_dir, make_file, make_point, read_bytes,
                       read_dict, read_dir, read_file, read_point)
from fmt_polars import make_polars, read_polars


@pipeline
def formats():
    # the slowest chains first, so that they overlap with the rest
    return {
        "model": read_model(model=make_model()),
        "big": read_big(arr=make_big()),
        "pandas": read_pandas(df=make_pandas()),
        "arrow": read_arrow(table=make_arrow()),
        "polars": read_polars(df=make_polars()),
        "numpy": read_numpy(arr=make_numpy()),
        "dict": read_dict(d=make_dict()),
        "bytes": read_bytes(b=make_bytes()),
        "file": read_file(p=make_file()),
        "dir": read_dir(p=make_dir()),
        "point": read_point(point=make_point()),
    }
""",
}

EXPECTED_BYTES = bytes(range(256)) * 4 + b"\x00end"
DIR_FILES = {"a.txt": b"alpha", "sub/b.txt": b"beta", "sub/deeper/c.bin": bytes([0, 1, 2, 255])}

# producer node -> (artifact type ref, format)
PRODUCED = {
    "make_pandas": ("pandas.DataFrame", "parquet"),
    "make_arrow": ("pyarrow.Table", "parquet"),
    "make_polars": ("polars.DataFrame", "parquet"),
    "make_numpy": ("numpy.ndarray", "npy"),
    "make_dict": ("dict", "json"),
    "make_bytes": ("bytes", "bytes"),
    "make_file": ("path", "file"),
    "make_dir": ("path", "dir"),
    "make_model": (None, "joblib"),  # the model's class: checked by name below
    "make_point": (None, "pickle"),  # the user's class: checked by name below
    "make_big": ("numpy.ndarray", "npy"),
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blob_file(ws: Workspace, sha: str) -> Path:
    """Where the local store keeps a blob (tenant ``default``)."""
    return ws.home / "blobs" / "tenants" / "default" / "blobs" / "sha256" / sha[:2] / sha


class RoundTrip:
    def __init__(self, ws: Workspace, run: dict[str, Any]) -> None:
        self.ws = ws
        self.run = run
        listed = ws.argosy("artifacts", "list", run["id"], "--output", "json")
        assert listed.code == 0, listed.stderr
        self.artifacts = {a["node_path"]: a for a in listed.json()["artifacts"]}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoundTrip]:
    base = tmp_path_factory.mktemp("formats")
    root = base / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    ws = Workspace(root, base / "state")
    for name, source in MODULES.items():
        path = ws.write(source, name=name)
    res = ws.argosy("run", str(path), "--output", "json")
    assert res.code == 0, res.stderr[-3000:]
    doc = res.json()
    assert doc["status"] == "succeeded"
    yield RoundTrip(ws, doc)


def test_every_task_succeeds_with_one_artifact_per_output(round_trip: RoundTrip) -> None:
    steps = {s["node_path"]: s["state"] for s in round_trip.run["tasks"]}
    assert set(steps.values()) == {"succeeded"}
    assert set(round_trip.artifacts) == set(steps)  # every step has exactly one output


def test_data_frames_and_tables_arrive_as_their_own_library_types(round_trip: RoundTrip) -> None:
    out = outputs(round_trip.run)
    assert out["pandas"] == {
        "kind": "pandas.DataFrame",
        "columns": ["a", "b", "c"],
        "records": [
            {"a": 1, "b": "x", "c": 0.5},
            {"a": 2, "b": "y", "c": 1.5},
            {"a": 3, "b": "z", "c": 2.5},
        ],
        "dtypes": ["int64", out["pandas"]["dtypes"][1], "float64"],
    }
    assert out["pandas"]["dtypes"][1] in ("object", "str", "string")
    assert out["arrow"] == {
        "kind": "pyarrow.Table",
        "schema": ["k:string", "v:int64"],
        "data": {"k": ["p", "q"], "v": [10, 20]},
    }
    assert out["polars"] == {
        "kind": "polars.DataFrame",
        "columns": ["n", "s"],
        "rows": [[3, "c"], [1, "a"], [2, "b"]],
        "dtypes": ["Int64", "String"],
    }


def test_arrays_dicts_and_bytes_arrive_unchanged(round_trip: RoundTrip) -> None:
    out = outputs(round_trip.run)
    assert out["numpy"] == {
        "dtype": "float64",
        "shape": [3, 4],
        "values": [[i / 4 for i in range(r * 4, r * 4 + 4)] for r in range(3)],
        "is_ndarray": True,
    }
    assert out["dict"] == {
        "kind": "dict",
        "value": {"name": "argosy", "sizes": [1, 2, 3], "nested": {"ok": True, "ratio": 0.25}},
    }
    assert out["bytes"] == {
        "kind": "bytes",
        "len": len(EXPECTED_BYTES),
        "sha256": hashlib.sha256(EXPECTED_BYTES).hexdigest(),
    }


def test_files_and_directories_arrive_as_paths_with_their_contents(round_trip: RoundTrip) -> None:
    out = outputs(round_trip.run)
    assert out["file"] == {
        "is_path": True,
        "name": "report.txt",  # the consumer sees the producer's file name
        "is_file": True,
        "text": "accuracy: 0.93\nrows: 1000\n",
    }
    assert out["dir"] == {
        "is_dir": True,
        "files": {name: data.hex() for name, data in DIR_FILES.items()},
        "dirs": ["sub", "sub/deeper"],
    }


def test_models_round_trip_through_joblib_and_pickle(round_trip: RoundTrip) -> None:
    model = outputs(round_trip.run)["model"]
    assert model["kind"] == "sklearn.LogisticRegression"
    assert model["classes"] == [0, 1]
    assert model["predictions"] == [0, 0, 1, 1]
    # the fitted state survived storage: the training data is symmetric about x = 2.5, so
    # the fitted decision boundary -intercept/coef is 2.5
    ((coef,),) = model["coef"]
    (intercept,) = model["intercept"]
    assert coef > 0.5
    assert -intercept / coef == pytest.approx(2.5, abs=1e-3)
    assert outputs(round_trip.run)["point"] == {"kind": "Point", "x": 3, "y": -4, "norm1": 7}


def test_artifact_rows_record_type_format_and_a_hash_that_matches_the_blob(
    round_trip: RoundTrip,
) -> None:
    arts = round_trip.artifacts
    for node, (type_ref, fmt) in PRODUCED.items():
        row = arts[node]
        assert row["format"] == fmt, node
        if type_ref is not None:
            assert row["type"] == type_ref, node
        assert row["output_name"] == "output"
        assert row["ref"] == f"{round_trip.run['id']}/{node}/output"
        blob = blob_file(round_trip.ws, row["sha256"])
        assert blob.is_file(), node
        assert sha256_of(blob) == row["sha256"], node
        assert blob.stat().st_size == row["size"], node
    assert arts["make_point"]["type"] == "fmt_plain.Point"
    # a serialized object is recorded with the class of the value (sklearn.<module>.Class)
    assert arts["make_model"]["type"].startswith("sklearn.")
    assert arts["make_model"]["type"].endswith(".LogisticRegression")
    # every consumer's JSON summary is an artifact too
    assert arts["read_pandas"]["format"] == "json"
    assert arts["read_pandas"]["type"] == "dict"


def test_artifacts_get_downloads_exactly_the_recorded_bytes(round_trip: RoundTrip) -> None:
    ws = round_trip.ws
    nodes = [n for n in PRODUCED if n != "make_dir"]  # directories: see the next tests
    procs = {}
    for node in nodes:  # concurrent readers of one state folder, as in CI
        dest = ws.root / "downloads" / f"{node}.bin"
        procs[node] = (
            dest,
            ws.spawn("artifacts", "get", round_trip.artifacts[node]["ref"], "--out", str(dest)),
        )
    for node, (dest, proc) in procs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{node}: {stderr}"
        row = round_trip.artifacts[node]
        assert sha256_of(dest) == row["sha256"], node
        assert dest.stat().st_size == row["size"], node

    # the bytes really are in the format each row claims
    import numpy as np
    import pyarrow.parquet as pq

    down = ws.root / "downloads"
    assert pq.read_table(down / "make_pandas.bin").column("b").to_pylist() == ["x", "y", "z"]
    assert pq.read_table(down / "make_arrow.bin").to_pydict() == {"k": ["p", "q"], "v": [10, 20]}
    assert pq.read_table(down / "make_polars.bin").to_pydict() == {
        "n": [3, 1, 2],
        "s": ["c", "a", "b"],
    }
    np.testing.assert_array_equal(
        np.load(down / "make_numpy.bin"), np.arange(12, dtype=np.float64).reshape(3, 4) / 4
    )
    big = np.load(down / "make_big.bin", mmap_mode="r")
    assert big.shape == (BIG_ROWS,)
    assert big[-1] == BIG_ROWS - 1
    assert json.loads((down / "make_dict.bin").read_text())["nested"] == {"ok": True, "ratio": 0.25}
    assert (down / "make_bytes.bin").read_bytes() == EXPECTED_BYTES
    assert (down / "make_file.bin").read_text() == "accuracy: 0.93\nrows: 1000\n"


def test_artifacts_get_by_id_into_a_folder_keeps_the_file_name(round_trip: RoundTrip) -> None:
    ws = round_trip.ws
    row = round_trip.artifacts["make_file"]
    folder = ws.root / "by-id"
    folder.mkdir()
    res = ws.argosy("artifacts", "get", row["id"], "--out", str(folder))
    assert res.code == 0, res.stderr
    assert (folder / "report.txt").read_text() == "accuracy: 0.93\nrows: 1000\n"


def test_directory_artifact_is_a_reproducible_tar_and_downloads_as_a_tree(
    round_trip: RoundTrip,
) -> None:
    ws = round_trip.ws
    row = round_trip.artifacts["make_dir"]
    blob = blob_file(ws, row["sha256"])
    with tarfile.open(blob) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["a.txt", "sub", "sub/b.txt", "sub/deeper", "sub/deeper/c.bin"]
        assert {m.mtime for m in members.values()} == {0}
        assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}
    dest = ws.root / "tree"
    res = ws.argosy("artifacts", "get", row["ref"], "--out", str(dest))
    assert res.code == 0, res.stderr
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == DIR_FILES


def test_array_input_is_memory_mapped_not_copied(round_trip: RoundTrip) -> None:
    big = outputs(round_trip.run)["big"]
    assert big["type"] == "memmap"
    assert big["is_memmap"] is True
    assert big["writeable"] is False  # inputs are immutable: no write can reach the blob
    assert big["size"] == BIG_ROWS
    assert big["sum"] == BIG_ROWS * (BIG_ROWS - 1) / 2
    grown = big["rss_anon_after"] - big["rss_anon_before"]
    assert grown < 30 * 2**20, f"anonymous memory grew by {grown / 2**20:.0f} MiB"
    row = round_trip.artifacts["make_big"]
    assert row["size"] > 100 * 2**20  # 100 MiB of data plus the .npy header


# -- integrity ---------------------------------------------------------------------------

PAYLOAD = b"precious training data " * 1000

# ``bit_rot`` flips one byte of the blob ``produce`` stored (as a failing disk would) before
# ``consume`` reads it; it finds the blob from the bytes' sha256 and the store folder.
ROTTING = """
import hashlib
import os
from pathlib import Path

from argosy import pipeline, step


@step
def produce() -> bytes:
    return b"precious training data " * 1000


@step(env={"BLOB_FOLDER": __BLOB_FOLDER__})
def bit_rot(data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    path = Path(os.environ["BLOB_FOLDER"]) / sha[:2] / sha
    path.chmod(0o644)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))


@step
def consume(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pipeline
def guarded():
    data = produce()
    rot = bit_rot(data=data)
    return consume(data=data).after(rot)
"""

CLEAN = """
import hashlib

from argosy import pipeline, step


@step(cache=False)  # really re-run it: the remedy the integrity error suggests
def produce() -> bytes:
    return b"precious training data " * 1000


@step(cache=False)
def consume(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pipeline
def guarded():
    return consume(data=produce())
"""


def blob_folder(ws: Workspace) -> Path:
    return ws.home / "blobs" / "tenants" / "default" / "blobs" / "sha256"


def _corrupt(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def rotted(ws: Workspace) -> tuple[Workspace, dict[str, Any]]:
    """A failed run whose ``produce`` blob was corrupted before ``consume`` read it."""
    source = ROTTING.replace("__BLOB_FOLDER__", repr(str(blob_folder(ws))))
    res = ws.argosy("run", str(ws.write(source)), "--output", "json")
    assert res.code == 1, res.stderr
    listed = ws.argosy("artifacts", "list", res.json()["id"], "--output", "json")
    (row,) = [a for a in listed.json()["artifacts"] if a["node_path"] == "produce"]
    assert row["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    return ws, row


def test_reading_a_corrupted_blob_fails_the_task_with_an_integrity_error(
    rotted: tuple[Workspace, dict[str, Any]],
) -> None:
    ws, row = rotted
    run_id = row["ref"].split("/")[0]
    shown = ws.argosy("runs", "show", run_id, "--output", "json")
    assert shown.code == 0, shown.stderr
    doc = shown.json()
    assert doc["status"] == "failed"
    steps = {s["node_path"]: s for s in doc["tasks"]}
    assert steps["produce"]["state"] == "succeeded"
    assert steps["bit_rot"]["state"] == "succeeded"
    consume = steps["consume"]
    assert consume["state"] == "failed"
    attempt = consume["attempts"][-1]
    assert attempt["reason"] == "input_error"
    assert "IntegrityError" in attempt["error"]
    assert f"blob sha256:{row['sha256']}" in attempt["error"]
    assert "corrupted" in attempt["error"]
    assert consume["reason"].startswith("input_error: ")
    assert "corrupted" in consume["reason"]
    assert "consume" in doc["error"]
    assert "corrupted" in doc["error"]
    assert outputs(doc) == {}  # the pipeline output was never produced


def test_downloading_a_corrupted_blob_fails_with_one_line(
    rotted: tuple[Workspace, dict[str, Any]],
) -> None:
    ws, row = rotted
    dest = ws.root / "download.bin"
    got = ws.argosy("artifacts", "get", row["ref"], "--out", str(dest))
    assert got.code == 1
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1, got.stderr
    assert lines[0].startswith("error: blob sha256:" + row["sha256"])
    assert "corrupted" in lines[0]  # "is corrupted", or missing after an earlier quarantine
    assert "Traceback" not in got.stderr
    assert got.stdout == ""
    assert not dest.exists()  # nothing that looks like the artifact is written


def test_a_failed_download_leaves_no_partial_file(rotted: tuple[Workspace, dict[str, Any]]) -> None:
    ws, row = rotted
    folder = ws.root / "downloads"
    folder.mkdir()
    got = ws.argosy("artifacts", "get", row["ref"], "--out", str(folder / "data.bin"))
    assert got.code == 1
    assert sorted(p.name for p in folder.iterdir()) == []


def test_rerunning_the_producer_repairs_a_corrupted_blob(ws: Workspace) -> None:
    path = ws.write(CLEAN)
    first = ws.argosy("run", str(path), "--output", "json")
    assert first.code == 0, first.stderr
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    _corrupt(blob_folder(ws) / sha[:2] / sha)
    # The next run's producer writes the same bytes, which deduplicate onto the stored (bad)
    # blob; the consumer's verified read finds the corruption and quarantines the blob. The
    # run after that stores the producer's bytes anew and succeeds.
    second = ws.argosy("run", str(path), "--output", "json")
    assert second.code == 1
    assert "corrupted" in second.json()["error"]
    third = ws.argosy("run", str(path), "--output", "json")
    assert third.code == 0, third.json()["error"]
    producer = next(s for s in third.json()["tasks"] if s["node_path"] == "produce")
    assert producer["state"] == "succeeded"
    assert outputs(third.json())["output"] == sha
    assert hashlib.sha256((blob_folder(ws) / sha[:2] / sha).read_bytes()).hexdigest() == sha


# -- outputs that do not fit -------------------------------------------------------------

MISFITS = """
import pandas as pd
from argosy import pipeline, step


class Thing:
    def __init__(self) -> None:
        self.weights = [1, 2, 3]


@step
def claims_frame() -> pd.DataFrame:
    return {"a": [1, 2]}


@step
def opaque() -> object:
    return Thing()


@step
def fine() -> int:
    return 1


@pipeline
def misfits():
    claims_frame()
    opaque()
    return fine()
"""


def test_outputs_that_do_not_fit_their_annotation_fail_with_output_error(ws: Workspace) -> None:
    path = ws.write(MISFITS)
    res = ws.argosy("run", str(path), "--output", "json", "--max-cpus", "4")
    assert res.code == 1, res.stderr
    doc = res.json()
    assert doc["status"] == "failed"
    steps = {s["node_path"]: s for s in doc["tasks"]}
    assert steps["fine"]["state"] == "succeeded"

    frame = steps["claims_frame"]
    assert frame["state"] == "failed"
    attempt = frame["attempts"][-1]
    assert attempt["reason"] == "output_error"
    assert "output 'output' of step 'claims_frame'" in attempt["error"]
    assert "pandas.DataFrame" in attempt["error"]
    assert "dict" in attempt["error"]
    assert frame["reason"].startswith("output_error: ")

    opaque = steps["opaque"]
    assert opaque["state"] == "failed"
    attempt = opaque["attempts"][-1]
    assert attempt["reason"] == "output_error"
    assert "output 'output' of step 'opaque'" in attempt["error"]
    assert "Thing" in attempt["error"]
    assert "serializer('joblib')" in attempt["error"]

    # nothing was recorded for the failed outputs
    listed = ws.argosy("artifacts", "list", doc["id"], "--output", "json")
    assert [a["node_path"] for a in listed.json()["artifacts"]] == ["fine"]
