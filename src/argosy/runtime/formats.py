"""Typed artifact formats: write a step's output to a file, and read an input back.

| type ref                       | format   | on disk                                   |
|--------------------------------|----------|-------------------------------------------|
| int, float, str, bool, list, dict | json  | UTF-8 JSON                                |
| bytes                          | bytes    | the bytes                                 |
| pandas/polars DataFrame, pyarrow.Table | parquet | Parquet                          |
| numpy.ndarray                  | npy      | ``.npy``, opened memory-mapped on read    |
| pathlib.Path (a file)          | file     | the file                                  |
| pathlib.Path (a directory)     | dir      | a deterministic, uncompressed tar         |
| anything, when asked           | joblib / pickle | by explicit opt-in only (they run code on load) |

Libraries (numpy, pandas, ...) are imported only when a value of theirs is written or read.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argosy.errors import SerializationError
from argosy.sdk.types import ANY, DEFAULT_FORMATS, JSON_TYPES, METRICS, Metrics

INLINE_JSON_LIMIT = 64 * 1024  # JSON values up to this size are also kept in the metadata DB


@dataclass(frozen=True)
class Written:
    """One output written to a local file, before it becomes a blob."""

    path: Path
    type: str
    format: str
    serializer: str | None
    filename: str | None = None  # original name of a Path output (a file)
    json_text: str | None = None  # small JSON values, kept inline
    sha256: str | None = None  # known when hashed while writing (saves a second pass)
    size: int | None = None


class _HashingFile:
    """A write-only binary file that hashes what passes through it (one pass, no re-read)."""

    def __init__(self, path: Path, *, buffered: bool = True) -> None:
        import hashlib

        self._file: Any = path.open("wb") if buffered else path.open("wb", buffering=0)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        view = memoryview(data)
        while view:  # an unbuffered file may take less than it is given
            view = view[self._file.write(view) :]
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    # what writers that take a file object ask of it (pyarrow's Parquet writer)
    @property
    def closed(self) -> bool:
        return bool(self._file.closed)

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    def close(self) -> tuple[str, int]:
        self._file.close()
        return self._hash.hexdigest(), self.size


def _class_ref(value: Any) -> str:
    cls = type(value)
    if isinstance(value, Metrics):
        return METRICS
    top = cls.__module__.split(".")[0]
    return {
        ("pandas", "DataFrame"): "pandas.DataFrame",
        ("polars", "DataFrame"): "polars.DataFrame",
        ("pyarrow", "Table"): "pyarrow.Table",
        ("numpy", "ndarray"): "numpy.ndarray",
        ("numpy", "memmap"): "numpy.ndarray",
    }.get((top, cls.__name__), f"{cls.__module__}.{cls.__qualname__}")


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str | list | tuple | dict)


def infer_ref(value: Any) -> str:
    """The type ref a value would have if it had been annotated precisely."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, os.PathLike):
        return "path"
    if isinstance(value, Metrics):
        return METRICS
    if _is_json(value):
        return {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}.get(
            type(value), "none" if value is None else "list"
        )
    return _class_ref(value)


def _matches(declared: str, value: Any) -> bool:
    actual = infer_ref(value)
    if declared in (actual, ANY):
        return True
    if declared == METRICS and isinstance(value, dict):
        return True
    if declared == "float" and actual in ("int", "bool"):
        return True
    if declared == "int" and actual == "bool":
        return True
    if declared in JSON_TYPES and value is None:
        return True  # an Optional result; JSON stores null
    return declared == "dict" and isinstance(value, dict)


def write_value(
    value: Any, declared_type: str, serializer: str | None, dest: Path, *, what: str
) -> Written:
    """Write ``value`` to ``dest`` in the format its declared type (or serializer) asks for.

    ``what`` names the output for error messages ("output 'model' of step 'train'").
    """
    if serializer is not None:
        return _write_serialized(value, declared_type, serializer, dest, what)
    if declared_type != ANY and not _matches(declared_type, value):
        raise SerializationError(
            f"{what} is annotated {declared_type} but the step returned "
            f"{infer_ref(value)}; return a {declared_type} or change the annotation"
        )
    ref = declared_type if declared_type != ANY else infer_ref(value)
    fmt = DEFAULT_FORMATS.get(ref)
    if fmt is None:
        raise SerializationError(
            f"{what} is a {ref}, which has no built-in format; annotate it as "
            f"Annotated[{ref.rsplit('.', 1)[-1]}, serializer('joblib')] to store it with joblib"
        )
    if ref == METRICS:
        bad = [k for k, v in value.items() if not isinstance(k, str) or isinstance(v, bool)
               or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf"))]  # fmt: skip
        if bad:
            raise SerializationError(
                f"{what} is Metrics, whose values must be finite numbers; {bad[0]!r} is "
                f"{value[bad[0]]!r} (put other data in a separate dict output)"
            )
    if fmt == "json":
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"{what} cannot be stored as JSON ({exc}); return plain numbers, strings, lists "
                "and dicts (convert numpy scalars with float()/int(), NaN is not JSON)"
            ) from None
        sha, size = _write_hashed(dest, text.encode("utf-8"))
        inline = text if len(text) <= INLINE_JSON_LIMIT else None
        return Written(dest, ref, "json", None, json_text=inline, sha256=sha, size=size)
    if fmt == "bytes":
        sha, size = _write_hashed(dest, value)
        return Written(dest, ref, "bytes", None, sha256=sha, size=size)
    if fmt == "npy":
        import numpy as np

        if value.dtype.hasobject:
            raise SerializationError(
                f"{what} is a numpy array of Python objects, which .npy cannot store without "
                "pickle; use a numeric dtype or annotate it with serializer('pickle')"
            )
        sha, size = _write_npy(np.asanyarray(value), dest)
        return Written(dest, ref, "npy", None, sha256=sha, size=size)
    if fmt == "parquet":  # hashed on its way to the file, as .npy is
        sink = _HashingFile(dest, buffered=False)
        try:
            if ref == "pandas.DataFrame":
                value.to_parquet(sink, engine="pyarrow")
            elif ref == "polars.DataFrame":
                value.write_parquet(sink)
            else:
                import pyarrow.parquet as pq

                pq.write_table(value, sink)
        finally:
            sha, size = sink.close()
        return Written(dest, ref, "parquet", None, sha256=sha, size=size)
    if fmt == "path":
        source = Path(value)
        if source.is_dir():
            _write_tar(source, dest)
            return Written(dest, ref, "dir", None)
        if source.is_file():
            import shutil

            shutil.copyfile(source, dest)
            return Written(dest, ref, "file", None, filename=source.name)
        raise SerializationError(f"{what} is the path {str(source)!r}, which does not exist")
    raise SerializationError(f"{what}: unknown format {fmt!r}")  # pragma: no cover


NPY_CHUNK = 1024 * 1024  # hashed, then written while still in the CPU's cache


def _write_npy(array: Any, dest: Path) -> tuple[str, int]:
    """``.npy`` in one pass with no copy of a contiguous array: its header, then its own
    memory in chunks, each hashed and written (``np.save`` would not hash; numpy's writer
    copies into 16 MiB chunks when the file object is not a plain file)."""
    import numpy as np

    fmt = np.lib.format
    header = fmt.header_data_from_array_1_0(array)
    sink = _HashingFile(dest, buffered=False)
    try:
        try:
            fmt.write_array_header_1_0(sink, header)
        except ValueError:  # a header over 64 KiB (very many fields)
            fmt.write_array_header_2_0(sink, header)
        if array.size and (array.flags.c_contiguous or array.flags.f_contiguous):
            order = "C" if array.flags.c_contiguous else "F"  # the header says which
            data = memoryview(array.reshape(-1, order=order).view(np.uint8))
            for start in range(0, len(data), NPY_CHUNK):
                sink.write(data[start : start + NPY_CHUNK])
        elif array.size:  # a strided view: numpy copies it out in chunks, in C order
            chunks: Any = np.nditer(array, flags=["external_loop", "buffered", "zerosize_ok"],
                                    buffersize=NPY_CHUNK // array.itemsize or 1, order="C")  # fmt: skip
            for chunk in chunks:
                sink.write(chunk.tobytes("C"))
    finally:
        result = sink.close()
    return result


def _write_hashed(dest: Path, data: bytes | bytearray | memoryview) -> tuple[str, int]:
    sink = _HashingFile(dest)
    try:
        sink.write(memoryview(data))
    finally:
        result = sink.close()
    return result


def _write_serialized(value: Any, declared: str, name: str, dest: Path, what: str) -> Written:
    ref = declared if declared != ANY else _class_ref(value)
    try:
        if name == "joblib":
            import joblib

            joblib.dump(value, dest)
        elif name == "pickle":
            import pickle

            with dest.open("wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            raise SerializationError(f"{what}: unknown serializer {name!r}; use joblib or pickle")
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"{what} could not be serialized with {name}: {exc}") from None
    return Written(dest, ref, name, name)


def _write_tar(source: Path, dest: Path) -> None:
    """A reproducible tar: sorted entries, no owners, zero mtimes."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(source.rglob("*")):
            if path.is_symlink():
                raise SerializationError(
                    f"directory output {source} contains the symlink {path}; replace it with a copy"
                )
            tar.add(
                path, arcname=path.relative_to(source).as_posix(), recursive=False, filter=clean
            )


def check_pickle_tenant(tenant: str | None, artifact_tenant: str | None, fmt: str) -> None:
    """A pickled (joblib/pickle) artifact runs code when loaded: only a task of the tenant that
    wrote it may load it."""
    if tenant is None or artifact_tenant is None or artifact_tenant != tenant:
        raise SerializationError(
            f"refusing to load a {fmt} artifact written in tenant {artifact_tenant or 'unknown'!r} "
            f"into a task of tenant {tenant or 'unknown'!r}: pickled artifacts run code when "
            "loaded and are loaded only in the tenant that wrote them; re-run the producing step "
            "in this tenant"
        )


def read_value(
    path: Path,
    fmt: str,
    type_ref: str,
    *,
    scratch: Path,
    filename: str | None = None,
    tenant: str | None = None,
    artifact_tenant: str | None = None,
) -> Any:
    """Load an artifact's bytes (at ``path``, read-only) as the Python value of ``type_ref``.

    ``tenant`` is the loading task's tenant, ``artifact_tenant`` the one that wrote the
    artifact: joblib and pickle artifacts load only when they are the same. A file's
    ``filename`` must be a plain name and a directory's tar may hold only files and folders
    inside it (:mod:`argosy.safe_paths`).
    """
    if fmt == "json":
        loaded = json.loads(path.read_text(encoding="utf-8"))
        return Metrics(loaded) if type_ref == METRICS else loaded
    if fmt == "bytes":
        return path.read_bytes()
    if fmt == "npy":
        import numpy as np

        return np.load(path, mmap_mode="r", allow_pickle=False)
    if fmt == "parquet":
        if type_ref == "polars.DataFrame":
            import polars as pl

            return pl.read_parquet(path)
        if type_ref == "pyarrow.Table":
            import pyarrow.parquet as pq

            return pq.read_table(path, memory_map=True)
        import pandas as pd

        return pd.read_parquet(path, engine="pyarrow")
    if fmt == "file":
        # a copy, never a link: a step that writes to its input must not change the stored blob
        import shutil

        from argosy.safe_paths import check_name

        target = scratch / check_name(filename or path.name, "artifact file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return target
    if fmt == "dir":
        from argosy.safe_paths import extract_tar

        extract_tar(path, scratch, what="directory artifact")
        return scratch
    if fmt in ("joblib", "pickle"):
        check_pickle_tenant(tenant, artifact_tenant, fmt)
    if fmt == "joblib":
        import joblib

        return joblib.load(path)
    if fmt == "pickle":
        import pickle

        with path.open("rb") as f:
            return pickle.load(f)
    raise SerializationError(
        f"unknown artifact format {fmt!r}; this artifact was written by a newer Argosy, upgrade"
    )
