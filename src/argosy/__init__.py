"""Argosy: repeatable, secure ML workflows in plain Python.

The public SDK is re-exported here; importing it must stay cheap, because every task's
process imports it again (no pydantic, SQLAlchemy or pandas at import time). The Python API
for runs (``Run``, ``runs``, ``connect``; see :mod:`argosy.client.runs`) and the model
registry (``Model``, ``models``, ``register_model``: :mod:`argosy.client.models`) is imported
on first use.
"""

from typing import TYPE_CHECKING, Any

from argosy.sdk.control import Elif, Else, If, exit_handler
from argosy.sdk.graph import one_of
from argosy.sdk.pipeline import Pipeline, pipeline
from argosy.sdk.step import ContainerStep, Step, container_step, step
from argosy.sdk.types import Metrics, serializer

if TYPE_CHECKING:
    from argosy.client.models import Model, models, register_model
    from argosy.client.runs import Run, connect, runs

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


def __getattr__(name: str) -> Any:
    if name in ("Run", "connect", "runs"):
        from argosy.client import runs as python_api

        return getattr(python_api, name)
    if name in ("Model", "models", "register_model"):
        from argosy.client import models as registry_api

        return getattr(registry_api, name)
    raise AttributeError(f"module 'argosy' has no attribute {name!r}")
