"""A loaded model version and what ``/predict`` does with a request: check every value
against the version's recorded input schema (a problem names the row and the field), build a
data frame in the order the model reads its columns, call ``predict``.

Requests are JSON records (``{"records": [{"a": 1.0, ...}, ...]}``) or columns
(``{"columns": {"a": [1.0, ...], ...}}``); fields the schema does not name are ignored.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from argosy import api

MAX_ROWS = 100_000
MAX_PROBLEMS = 20  # problems listed in one 422 (the count says how many there were)

_INT_BOUNDS = {
    "int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
}  # fmt: skip


class RequestProblem(Exception):
    """A request the schema refuses: ``problems`` are ``{"row", "field", "message"}``."""

    def __init__(self, problems: list[dict[str, Any]], total: int | None = None) -> None:
        first = problems[0]
        where = f"row {first['row']}, " if first.get("row") is not None else ""
        super().__init__(f"{where}field {first['field']!r}: {first['message']}")
        self.problems = problems
        self.total = total if total is not None else len(problems)


@dataclass
class LoadedModel:
    """One version, loaded and ready: what a request is answered with."""

    version: api.ModelVersion
    model: Any
    columns: list[api.ColumnSchema]  # the input schema, in the order the model reads them
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, version: api.ModelVersion, model: Any) -> LoadedModel:
        """Check the model reads only columns of the schema and order them as it reads them."""
        schema = list(version.input_schema.columns) if version.input_schema else []
        names = getattr(model, "feature_names_in_", None)
        if schema and names is not None:
            by_name = {c.name: c for c in schema}
            unknown = [str(n) for n in names if str(n) not in by_name]
            if unknown:
                raise ValueError(
                    f"{version.model}@{version.version} reads the columns {unknown}, which its "
                    f"recorded input schema does not have ({', '.join(by_name)}); register it "
                    "again with the right training data or --exclude"
                )
            schema = [by_name[str(n)] for n in names]
        return cls(version, model, schema)

    def predict(self, body: Any) -> list[Any]:
        frame = self.frame(body)
        out = self.model.predict(frame)
        return out.tolist() if hasattr(out, "tolist") else list(out)

    def frame(self, body: Any) -> Any:
        """The request as a data frame of the schema's columns (``RequestProblem`` if not)."""
        import pandas as pd

        columns = _columns_of(body)
        if not self.columns:  # nothing recorded: the request as it is
            return pd.DataFrame(columns)
        problems: list[dict[str, Any]] = []
        total = 0
        n = len(next(iter(columns.values()))) if columns else 0
        data: dict[str, Any] = {}
        for col in self.columns:
            values = columns.get(col.name)
            if values is None:
                total += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append({"row": None, "field": col.name,
                                     "message": f"missing (expected {col.type})"})  # fmt: skip
                continue
            bad = _check(col, values)
            total += len(bad)
            problems.extend(bad[: MAX_PROBLEMS - len(problems)])
            data[col.name] = values
        if problems:
            raise RequestProblem(problems, total)
        return pd.DataFrame(
            {c.name: pd.Series(data[c.name], dtype=_dtype(c)) for c in self.columns}, index=range(n)
        )


def _columns_of(body: Any) -> dict[str, list[Any]]:
    """``{"records": [...]}`` or ``{"columns": {...}}`` -> column name -> values."""
    if not isinstance(body, dict) or ("records" in body) == ("columns" in body):
        raise RequestProblem(
            [{"row": None, "field": "records",
              "message": 'send {"records": [{...}, ...]} or {"columns": {"name": [...], ...}}'}]
        )  # fmt: skip
    if "records" in body:
        records = body["records"]
        if not isinstance(records, list) or not records:
            raise RequestProblem(
                [{"row": None, "field": "records", "message": "a non-empty list of objects"}]
            )
        if len(records) > MAX_ROWS:
            raise RequestProblem(
                [{"row": None, "field": "records", "message": f"at most {MAX_ROWS} rows"}]
            )
        names: dict[str, None] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise RequestProblem([{"row": i, "field": "records", "message": "not an object"}])
            names.update(dict.fromkeys(rec))
        missing = _Missing()
        found = {k: [r.get(k, missing) for r in records] for k in names}
        return found
    cols = body["columns"]
    if not isinstance(cols, dict) or not cols:
        raise RequestProblem(
            [{"row": None, "field": "columns", "message": "an object of equally long lists"}]
        )
    lengths = {len(v) if isinstance(v, list) else -1 for v in cols.values()}
    if len(lengths) != 1 or -1 in lengths or 0 in lengths:
        raise RequestProblem(
            [{"row": None, "field": "columns", "message": "every column a list, all one length"}]
        )
    if lengths.pop() > MAX_ROWS:
        raise RequestProblem(
            [{"row": None, "field": "columns", "message": f"at most {MAX_ROWS} rows"}]
        )
    return {str(k): v for k, v in cols.items()}


class _Missing:
    """A record without the field (told apart from an explicit null)."""


def _check(col: api.ColumnSchema, values: list[Any]) -> list[dict[str, Any]]:
    """Problems with ``values`` for ``col`` (an empty list: all fit)."""
    kind = col.type
    problems: list[dict[str, Any]] = []

    def bad(i: int, message: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append({"row": i, "field": col.name, "message": message})

    for i, v in enumerate(values):
        if isinstance(v, _Missing):
            bad(i, f"missing (expected {kind})")
        elif v is None:
            if not col.nullable and kind != "any":
                bad(i, f"null, but {col.name!r} is not nullable (expected {kind})")
        elif kind.startswith("float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                bad(i, f"expected a number ({kind}), got {_shown(v)}")
            elif isinstance(v, float) and not math.isfinite(v):
                bad(i, "expected a finite number")
        elif kind in _INT_BOUNDS:
            low, high = _INT_BOUNDS[kind]
            if isinstance(v, bool) or not isinstance(v, int):
                bad(i, f"expected an integer ({kind}), got {_shown(v)}")
            elif not low <= v <= high:
                bad(i, f"{v} is out of range for {kind}")
        elif kind == "bool":
            if not isinstance(v, bool):
                bad(i, f"expected true or false, got {_shown(v)}")
        elif kind in ("string", "binary"):
            if not isinstance(v, str):
                bad(i, f"expected a string, got {_shown(v)}")
        elif kind in ("datetime", "date") and (
            not isinstance(v, str) or _parse_time(v, kind) is None
        ):
            bad(i, f"expected an ISO 8601 {kind} string, got {_shown(v)}")
    return problems


def _parse_time(text: str, kind: str) -> datetime | date | None:
    try:
        return date.fromisoformat(text) if kind == "date" else datetime.fromisoformat(text)
    except ValueError:
        return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dtype(col: api.ColumnSchema) -> Any:
    if col.type.startswith(("float", "int", "uint")):
        return "float64" if col.nullable and not col.type.startswith("float") else col.type
    if col.type == "bool":
        return "boolean" if col.nullable else "bool"
    if col.type == "datetime":
        return "datetime64[ns]"
    return "object"
