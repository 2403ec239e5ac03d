"""The part of ``kfp.dsl`` a lightweight KFP component uses at run time, and its executor.

A component compiled by the KFP SDK carries its function's source, which starts with
``import kfp`` / ``from kfp.dsl import *``. Argosy does not install ``kfp``: in the task's
process :func:`install` registers this module as ``kfp.dsl`` (and a ``kfp`` package holding
it), so the source imports the artifact classes, the ``Input``/``Output``/``InputPath``/
``OutputPath`` annotations, ``PipelineTaskFinalStatus`` and ``get_uri`` from here.

:func:`execute` is the KFP executor contract (``kfp.dsl.executor_main``): it reads the
executor input, calls the function with parameters, artifacts and output paths, and writes the
executor output file (return values, every output artifact's uri and metadata). Parameters
declared ``OutputPath`` are written by the function itself as text files.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

__all__ = [
    "HTML",
    "Artifact",
    "ClassificationMetrics",
    "Dataset",
    "Input",
    "InputPath",
    "Markdown",
    "Metrics",
    "Model",
    "Output",
    "OutputPath",
    "PipelineTaskFinalStatus",
    "SlicedClassificationMetrics",
    "component",
    "container_component",
    "get_uri",
    "pipeline",
]

# uri prefix -> the local mount the KFP backend reads it through
_REMOTE = {"gs://": "/gcs/", "s3://": "/s3/", "minio://": "/minio/"}
WORKSPACE = "/kfp-workspace"


class Artifact:
    """A KFP artifact: a name, a uri (here a local path), metadata, and ``path`` from the uri."""

    schema_title = "system.Artifact"
    schema_version = "0.0.1"

    def __init__(
        self,
        name: str | None = None,
        uri: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.name = name or ""
        self.uri = uri or ""
        self.metadata = metadata or {}
        self.custom_path: str | None = None

    @property
    def path(self) -> str:
        if self.custom_path is not None:
            return self.custom_path
        return uri_to_path(self.uri, self.metadata)

    @path.setter
    def path(self, value: str) -> None:
        self.uri = path_to_uri(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, uri={self.uri!r}, metadata={self.metadata!r})"


class Dataset(Artifact):
    schema_title = "system.Dataset"


class Model(Artifact):
    schema_title = "system.Model"

    @property
    def framework(self) -> str:
        return str(self.metadata.get("framework", ""))

    @framework.setter
    def framework(self, value: str) -> None:
        self.metadata["framework"] = value


class Metrics(Artifact):
    schema_title = "system.Metrics"

    def log_metric(self, metric: str, value: float) -> None:
        self.metadata[metric] = value


class ClassificationMetrics(Artifact):
    schema_title = "system.ClassificationMetrics"

    def log_roc_data_point(self, fpr: float, tpr: float, threshold: float) -> None:
        roc = self.metadata.setdefault("confidenceMetrics", [])
        roc.append({"confidenceThreshold": threshold, "recall": tpr, "falsePositiveRate": fpr})

    def log_roc_curve(self, fpr: list[float], tpr: list[float], threshold: list[float]) -> None:
        for f, t, th in zip(fpr, tpr, threshold, strict=True):
            self.log_roc_data_point(f, t, th)

    def set_confusion_matrix_categories(self, categories: list[str]) -> None:
        self._categories = list(categories)
        self.metadata["confusionMatrix"] = {
            "annotationSpecs": [{"displayName": c} for c in categories],
            "rows": [{"row": [0] * len(categories)} for _ in categories],
        }

    def log_confusion_matrix_row(self, row_category: str, row: list[float]) -> None:
        i = self._categories.index(row_category)
        self.metadata["confusionMatrix"]["rows"][i] = {"row": list(row)}

    def log_confusion_matrix_cell(self, row_category: str, col_category: str, value: int) -> None:
        i, j = self._categories.index(row_category), self._categories.index(col_category)
        self.metadata["confusionMatrix"]["rows"][i]["row"][j] = value

    def log_confusion_matrix(self, categories: list[str], matrix: list[list[float]]) -> None:
        self.set_confusion_matrix_categories(categories)
        for category, row in zip(categories, matrix, strict=True):
            self.log_confusion_matrix_row(category, row)


class SlicedClassificationMetrics(Artifact):
    schema_title = "system.SlicedClassificationMetrics"


class HTML(Artifact):
    schema_title = "system.HTML"


class Markdown(Artifact):
    schema_title = "system.Markdown"


_CLASSES: list[type[Artifact]] = [Artifact, Dataset, Model, Metrics, ClassificationMetrics,
                                  SlicedClassificationMetrics, HTML, Markdown]  # fmt: skip
ARTIFACT_CLASSES: dict[str, type[Artifact]] = {c.schema_title: c for c in _CLASSES}


class InputAnnotation:
    """Marks ``Input[T]``."""


class OutputAnnotation:
    """Marks ``Output[T]``."""


T = TypeVar("T")
Input = Annotated[T, InputAnnotation]
Output = Annotated[T, OutputAnnotation]


class InputPath:
    """``InputPath('Dataset')``: the function gets the input artifact's local path."""

    def __init__(self, type: Any = None) -> None:
        self.type = type


class OutputPath:
    """``OutputPath(str)`` / ``OutputPath('Model')``: the function gets a path to write to."""

    def __init__(self, type: Any = None) -> None:
        self.type = type


class PipelineTaskFinalStatus:
    """What an exit task learns about the group it guards."""

    def __init__(
        self,
        state: str,
        pipeline_job_resource_name: str,
        pipeline_task_name: str,
        error_code: int | None,
        error_message: str | None,
    ) -> None:
        self.state = state
        self.pipeline_job_resource_name = pipeline_job_resource_name
        self.pipeline_task_name = pipeline_task_name
        self.error_code = error_code
        self.error_message = error_message


def component(func: Any = None, **_: Any) -> Any:
    """``@dsl.component`` (with or without arguments): the function itself, at run time."""
    if func is None:
        return lambda f: f
    return func


container_component = component
pipeline = component

_TASK_ROOT: list[str] = []  # the running task's root folder (get_uri)
_FRESH = [0]


def get_uri(suffix: str = "") -> str:
    """A uri under the running task's root, for an artifact the function creates itself.

    Without a suffix each call gives a fresh name there (a path the function can open).
    """
    if not _TASK_ROOT:
        raise RuntimeError("dsl.get_uri() is only available while a component runs")
    if not suffix:
        _FRESH[0] += 1
        suffix = f"uri-{_FRESH[0]}"
    return os.path.join(_TASK_ROOT[0], suffix)


def uri_to_path(uri: str, metadata: dict[str, Any] | None = None) -> str:
    for prefix, mount in _REMOTE.items():
        if uri.startswith(prefix):
            return mount + uri[len(prefix) :]
    if uri.startswith("oci://"):
        return "/oci/" + uri[len("oci://") :].replace("/", "_")
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return uri


def path_to_uri(path: str) -> str:
    for prefix, mount in _REMOTE.items():
        if path.startswith(mount):
            return prefix + path[len(mount) :]
    return path


def install() -> None:
    """Make ``import kfp`` and ``from kfp.dsl import ...`` find this module (task process only)."""
    if "kfp" in sys.modules and getattr(sys.modules["kfp"], "__argosy__", False) is False:
        return  # a real kfp is already imported: leave it
    package = types.ModuleType("kfp")
    package.__path__ = []
    package.__argosy__ = True  # type: ignore[attr-defined]
    package.__version__ = "2.15.2"  # type: ignore[attr-defined]
    this = sys.modules[__name__]
    package.dsl = this  # type: ignore[attr-defined]
    sys.modules["kfp"] = package
    sys.modules["kfp.dsl"] = this


# -- the executor ------------------------------------------------------------------------------
def _artifact(doc: dict[str, Any], cls: type[Artifact] | None = None) -> Artifact:
    title = (doc.get("type") or {}).get("schemaTitle", "system.Artifact")
    chosen = (
        cls if cls is not None and cls is not Artifact else ARTIFACT_CLASSES.get(title, Artifact)
    )
    art = chosen(name=doc.get("name"), uri=doc.get("uri"), metadata=dict(doc.get("metadata") or {}))
    return art


def _unwrap(annotation: Any) -> tuple[Any, str | None]:
    """(inner type, "input" | "output" | None) of an ``Input[T]``/``Output[T]`` annotation."""
    if typing.get_origin(annotation) is Annotated:
        inner, *marks = typing.get_args(annotation)
        if InputAnnotation in marks:
            return inner, "input"
        if OutputAnnotation in marks:
            return inner, "output"
        return inner, None
    return annotation, None


def _artifact_class(annotation: Any) -> type[Artifact] | None:
    if isinstance(annotation, type) and issubclass(annotation, Artifact):
        return annotation
    return None


def _list_of_artifacts(annotation: Any) -> type[Artifact] | None:
    if typing.get_origin(annotation) in (list, typing.List):  # noqa: UP006
        args = typing.get_args(annotation)
        return _artifact_class(args[0]) if args else None
    return None


def _annotations(func: Callable[..., Any]) -> dict[str, Any]:
    """The function's annotations, evaluated where written as strings (``OutputPath(str)``
    instances are not types, so ``typing.get_type_hints`` would refuse them)."""
    found = dict(getattr(func, "__annotations__", {}))
    scope = getattr(func, "__globals__", {})
    for name, value in found.items():
        if isinstance(value, str):
            found[name] = eval(value, scope)  # the component's own source
    return found


def _cast(value: Any, annotation: Any) -> Any:
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class _Executor:
    def __init__(self, func: Callable[..., Any], executor_input: dict[str, Any]) -> None:
        self.func = func
        self.inputs = executor_input.get("inputs") or {}
        self.outputs = executor_input.get("outputs") or {}
        self.output_artifacts: dict[str, Artifact] = {}
        self.returned: dict[str, Any] = {}

    def input_artifacts(self, name: str, cls: type[Artifact] | None) -> list[Artifact]:
        docs = ((self.inputs.get("artifacts") or {}).get(name) or {}).get("artifacts") or []
        return [_artifact(d, cls) for d in docs]

    def output_artifact(self, name: str, cls: type[Artifact] | None) -> Artifact:
        if name not in self.output_artifacts:
            docs = ((self.outputs.get("artifacts") or {}).get(name) or {}).get("artifacts") or []
            art = _artifact(docs[0], cls) if docs else (cls or Artifact)(name=name)
            Path(art.path).parent.mkdir(parents=True, exist_ok=True)
            self.output_artifacts[name] = art
        return self.output_artifacts[name]

    def output_parameter_path(self, name: str) -> str:
        path = Path(self.outputs["parameters"][name]["outputFile"])
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    def arguments(self) -> dict[str, Any]:
        hints = _annotations(self.func)
        values = self.inputs.get("parameterValues") or {}
        out_params = self.outputs.get("parameters") or {}
        kwargs: dict[str, Any] = {}
        for name, param in inspect.signature(self.func).parameters.items():
            annotation = hints.get(name, param.annotation)
            inner, direction = _unwrap(annotation)
            if isinstance(annotation, OutputPath):
                if name in out_params:
                    kwargs[name] = self.output_parameter_path(name)
                else:
                    kwargs[name] = self.output_artifact(name, None).path
            elif isinstance(annotation, InputPath):
                found = self.input_artifacts(name, None)
                if found:
                    kwargs[name] = found[0].path
                elif param.default is inspect.Parameter.empty:
                    kwargs[name] = None
            elif direction == "output":
                kwargs[name] = self.output_artifact(name, _artifact_class(inner))
            elif direction == "input" or _artifact_class(inner) or _list_of_artifacts(inner):
                listed = _list_of_artifacts(inner)
                found = self.input_artifacts(name, listed or _artifact_class(inner))
                if listed is not None:
                    kwargs[name] = found
                elif found:
                    kwargs[name] = found[0]
                elif param.default is inspect.Parameter.empty:
                    kwargs[name] = None
            elif inner is PipelineTaskFinalStatus:
                status = values.get(name) or {}
                error = status.get("error") or {}
                kwargs[name] = PipelineTaskFinalStatus(
                    state=status.get("state", ""),
                    pipeline_job_resource_name=status.get("pipelineJobResourceName")
                    or status.get("pipeline_job_resource_name", ""),
                    pipeline_task_name=status.get("pipelineTaskName")
                    or status.get("pipeline_task_name", ""),
                    error_code=error.get("code"),
                    error_message=error.get("message"),
                )
            elif name in values:
                kwargs[name] = _cast(values[name], inner)
        return kwargs

    def handle_return(self, result: Any) -> None:
        annotation = _annotations(self.func).get("return")
        if annotation is None or annotation is type(None) or annotation is inspect.Signature.empty:
            return
        fields = getattr(annotation, "_fields", None)
        if fields is not None:
            hints = dict(getattr(annotation, "__annotations__", {}))
            for i, field in enumerate(fields):
                value = result[i] if type(result) is tuple else getattr(result, field)
                self.handle_one(field, hints.get(field, Any), value)
            return
        self.handle_one("Output", annotation, result)

    def handle_one(self, name: str, annotation: Any, value: Any) -> None:
        cls = _artifact_class(annotation) or _artifact_class(_unwrap(annotation)[0])
        if cls is None:
            self.returned[name] = value
        elif isinstance(value, Artifact):  # a "pythonic" artifact: its uri is the one to use
            value.name = value.name or name
            self.output_artifacts[name] = value
        else:  # a plain value returned for an artifact output: written into its file
            art = self.output_artifact(name, cls)
            Path(art.path).write_text(str(value))

    def write_output(self) -> None:
        doc: dict[str, Any] = {}
        if self.returned:
            doc["parameterValues"] = self.returned
        declared = self.outputs.get("artifacts") or {}
        for name in declared:
            art = self.output_artifact(name, None)
            entry: dict[str, Any] = {
                "name": art.name or name,
                "uri": art.uri,
                "metadata": art.metadata,
            }
            if art.custom_path is not None:
                entry["custom_path"] = art.custom_path
            doc.setdefault("artifacts", {})[name] = {"artifacts": [entry]}
        target = Path(self.outputs["outputFile"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc))


def execute(func: Callable[..., Any], executor_input: dict[str, Any]) -> None:
    """Call ``func`` as ``kfp.dsl.executor_main`` would, and write the executor output file."""
    executor = _Executor(func, executor_input)
    _TASK_ROOT[:] = [str(Path(executor.outputs["outputFile"]).parent)]
    try:
        kwargs = executor.arguments()
        result = func(**kwargs)
        executor.handle_return(result)
        executor.write_output()
    finally:
        _TASK_ROOT.clear()
