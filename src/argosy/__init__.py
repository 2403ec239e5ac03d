"""Argosy: repeatable, secure ML workflows in plain Python.

The public SDK is re-exported here; importing it must stay cheap, because every task's
process imports it again (no pydantic, SQLAlchemy or pandas at import time).
"""

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
    "Pipeline",
    "Step",
    "container_step",
    "exit_handler",
    "one_of",
    "pipeline",
    "serializer",
    "step",
]
__version__ = "0.1.0"
