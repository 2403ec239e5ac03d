"""How Python type annotations map to artifact types, formats and serializers.

A step's annotations decide how each value is stored: JSON for scalars and containers,
Parquet for data frames and Arrow tables, ``.npy`` for arrays, files and directories as they
are, and anything else only through a serializer the user names explicitly::

    def train(...) -> Annotated[object, serializer("joblib")]: ...

This module describes types; it never reads or writes bytes (that is ``argosy.runtime``).
It is imported by the SDK and the step launcher, so it must stay cheap to import.
"""

from __future__ import annotations

import dataclasses
import pathlib
import types
import typing
from dataclasses import dataclass
from typing import Any

ANY = "any"
METRICS = "metrics"
JSON_TYPES = {"int", "float", "str", "bool", "list", "dict", "none", METRICS}

# Type refs of well-known classes, by (module prefix, class name).
_KNOWN_CLASSES = {
    ("pandas", "DataFrame"): "pandas.DataFrame",
    ("polars", "DataFrame"): "polars.DataFrame",
    ("pyarrow", "Table"): "pyarrow.Table",
    ("numpy", "ndarray"): "numpy.ndarray",
}

# The default storage format of each type ref; refs not listed here need a serializer.
DEFAULT_FORMATS = {
    **{t: "json" for t in JSON_TYPES},
    "bytes": "bytes",
    "path": "path",
    "pandas.DataFrame": "parquet",
    "polars.DataFrame": "parquet",
    "pyarrow.Table": "parquet",
    "numpy.ndarray": "npy",
}

SERIALIZERS = ("joblib", "pickle")


class Metrics(dict[str, float]):
    """Named numbers a step reports (``{"roc_auc": 0.97, "accuracy": 0.95}``).

    Stored as JSON like any dict, but known as metrics: ``argosy runs show`` lists them and
    ``argosy runs diff`` compares them. Values must be finite numbers.
    """


@dataclass(frozen=True)
class Serializer:
    """Names the serializer of one output or input: ``Annotated[T, serializer("joblib")]``."""

    name: str


def serializer(name: str) -> Serializer:
    """Opt in to storing a value with a named serializer (``"joblib"`` or ``"pickle"``).

    Pickle-based formats run code when loaded, so Argosy never uses them unless asked.
    """
    if name not in SERIALIZERS:
        from argosy.errors import PipelineDefinitionError

        raise PipelineDefinitionError(
            f"unknown serializer {name!r}; choose one of: {', '.join(SERIALIZERS)}"
        )
    return Serializer(name)


@dataclass(frozen=True)
class TypeInfo:
    """One annotation, resolved: its ref (a stable name), serializer, and whether None is allowed."""

    ref: str
    serializer: str | None = None
    optional: bool = False

    @property
    def format(self) -> str | None:
        """How a value of this type is stored; None when only a serializer could store it."""
        if self.serializer:
            return self.serializer
        if self.ref == ANY:
            return None  # decided by the value at run time
        return DEFAULT_FORMATS.get(self.ref)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.ref}
        if self.serializer:
            doc["serializer"] = self.serializer
        if self.optional:
            doc["optional"] = True
        return doc


def type_ref(annotation: Any) -> TypeInfo:
    """Resolve an annotation (possibly ``Annotated``/``Optional``) to a :class:`TypeInfo`."""
    chosen: str | None = None
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        for extra in extras:
            if isinstance(extra, Serializer):
                chosen = extra.name
        info = type_ref(base)
        return TypeInfo(info.ref, chosen or info.serializer, info.optional)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            inner = type_ref(args[0])
            return TypeInfo(inner.ref, inner.serializer, True)
        return TypeInfo(ANY, None, type(None) in typing.get_args(annotation))
    if origin is not None:  # list[int], dict[str, float], tuple[...] ...
        annotation = origin
    if annotation is None or annotation is type(None):
        return TypeInfo("none")
    if annotation in (typing.Any, object):
        return TypeInfo(ANY)
    simple = {int: "int", float: "float", str: "str", bool: "bool", bytes: "bytes",
              list: "list", tuple: "list", dict: "dict"}  # fmt: skip
    if annotation in simple:
        return TypeInfo(simple[annotation])
    if isinstance(annotation, type):
        if issubclass(annotation, Metrics):
            return TypeInfo(METRICS)
        if issubclass(annotation, pathlib.PurePath):
            return TypeInfo("path")
        if issubclass(annotation, dict):
            return TypeInfo("dict")
        top = annotation.__module__.split(".")[0]
        known = _KNOWN_CLASSES.get((top, annotation.__name__))
        if known:
            return TypeInfo(known)
        return TypeInfo(f"{annotation.__module__}.{annotation.__qualname__}")
    return TypeInfo(ANY)


def compatible(output: TypeInfo, input: TypeInfo, *, is_value: bool = False) -> bool:
    """Whether an output of type ``output`` may feed an input annotated ``input``.

    ``is_value``: the source is a parameter or constant, so a ``str`` may name a file or
    folder for a ``Path`` input (the engine imports it as an artifact).
    """
    if is_value and (output.ref, input.ref) == ("str", "path"):
        return True
    if ANY in (output.ref, input.ref) or output.ref == input.ref:
        return True
    widening = {
        ("int", "float"),
        ("bool", "int"),
        ("bool", "float"),
        (METRICS, "dict"),
        ("dict", METRICS),
    }
    return (output.ref, input.ref) in widening


def is_multi_output(annotation: Any) -> bool:
    """A NamedTuple or dataclass return annotation declares several named outputs."""
    if typing.get_origin(annotation) is typing.Annotated:
        return False
    if not isinstance(annotation, type):
        return False
    is_namedtuple = issubclass(annotation, tuple) and hasattr(annotation, "_fields")
    return is_namedtuple or dataclasses.is_dataclass(annotation)


def output_fields(annotation: Any) -> dict[str, Any]:
    """Field name → annotation of a NamedTuple or dataclass return type."""
    hints = typing.get_type_hints(annotation, include_extras=True)
    if dataclasses.is_dataclass(annotation):
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(annotation)}
    return {name: hints.get(name, Any) for name in annotation._fields}
