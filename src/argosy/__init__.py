"""Argosy: repeatable, secure ML workflows in plain Python.

The public SDK is re-exported here, each name imported on first use: every part of Argosy
imports this package first (``argosy run``'s command line needs no SDK when its compiled spec
is cached), and every task's process imports it again, so importing it must stay cheap (no
pydantic, SQLAlchemy or pandas at import time). The Python API for runs (``Run``, ``runs``,
``connect``; see :mod:`argosy.client.runs`) and the model registry (``Model``, ``models``,
``register_model``: :mod:`argosy.client.models`) are imported on first use too.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # not typing's: importing typing is ~5 ms of every ``argosy`` command
if TYPE_CHECKING:
    from typing import Any

    from argosy.client.models import Model, models, register_model
    from argosy.client.runs import Run, connect, runs
    from argosy.sdk.control import Elif, Else, If, exit_handler
    from argosy.sdk.graph import one_of
    from argosy.sdk.pipeline import Pipeline, pipeline
    from argosy.sdk.step import ContainerStep, Step, container_step, step
    from argosy.sdk.types import Metrics, serializer

__all__ = [
    "ContainerStep",
    "Elif",
    "Else",
    "If",
    "Metrics",
    "Model",
    "Pipeline",
    "Run",
    "Step",
    "connect",
    "container_step",
    "exit_handler",
    "models",
    "one_of",
    "pipeline",
    "register_model",
    "runs",
    "serializer",
    "step",
]
__version__ = "0.1.0"


_HOME = {
    "ContainerStep": "argosy.sdk.step",
    "Elif": "argosy.sdk.control",
    "Else": "argosy.sdk.control",
    "If": "argosy.sdk.control",
    "Metrics": "argosy.sdk.types",
    "Model": "argosy.client.models",
    "Pipeline": "argosy.sdk.pipeline",
    "Run": "argosy.client.runs",
    "Step": "argosy.sdk.step",
    "connect": "argosy.client.runs",
    "container_step": "argosy.sdk.step",
    "exit_handler": "argosy.sdk.control",
    "models": "argosy.client.models",
    "one_of": "argosy.sdk.graph",
    "pipeline": "argosy.sdk.pipeline",
    "register_model": "argosy.client.models",
    "runs": "argosy.client.runs",
    "serializer": "argosy.sdk.types",
    "step": "argosy.sdk.step",
}
"""Where each public name lives (a test checks it is exactly :data:`__all__`)."""


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'argosy' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    if not home.startswith("argosy.client."):  # the SDK's names stay, as an import would
        globals()[name] = value
    return value
