"""The wire documents of Argosy: what the server answers, the client reads, the CLI prints
with ``--output json`` and the UI renders — one set of pydantic models, imported by every
layer that speaks them and importing nothing of Argosy above it.

Each top-level document carries ``schema_version``; within a version, changes are additive
only (new optional fields), checked against the committed JSON Schemas in
``src/argosy/api/schemas/``. ``argosy schema NAME`` prints one.
"""

from typing import Any

from argosy.api.documents import *  # noqa: F403
from argosy.api.documents import Artifact as _Artifact
from argosy.api.documents import Lineage as _Lineage
from argosy.api.documents import LogPage as _LogPage
from argosy.api.documents import Pipeline as _Pipeline
from argosy.api.documents import PipelineVersion as _PipelineVersion
from argosy.api.documents import RunDetail, Versioned
from argosy.api.documents import RunDiff as _RunDiff
from argosy.api.documents import Schedule as _Schedule
from argosy.api.documents import Task as _Task
from argosy.api.documents import __all__ as _documents
from argosy.api.registry import *  # noqa: F403
from argosy.api.registry import AliasEvent as _AliasEvent
from argosy.api.registry import Model as _Model
from argosy.api.registry import ModelVersion as _ModelVersion
from argosy.api.registry import PromotionRequest as _PromotionRequest
from argosy.api.registry import __all__ as _registry
from argosy.api.triggers import *  # noqa: F403
from argosy.api.triggers import __all__ as _triggers

__all__ = [*_documents, *_registry, *_triggers, "PUBLISHED", "json_schema"]

PUBLISHED: dict[str, type[Versioned]] = {
    "run": RunDetail,
    "task": _Task,
    "artifact": _Artifact,
    "lineage": _Lineage,
    "diff": _RunDiff,
    "logs": _LogPage,
    "pipeline": _Pipeline,
    "version": _PipelineVersion,
    "schedule": _Schedule,
    "model": _Model,
    "model-version": _ModelVersion,
    "alias-event": _AliasEvent,
    "promotion-request": _PromotionRequest,
}
"""The documents whose JSON Schema is published (``argosy schema NAME``) and committed in
``schemas/NAME.json``; a test checks each change against the committed one is additive."""


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a published document (see :data:`PUBLISHED`)."""
    model = PUBLISHED[name]
    schema = model.model_json_schema(mode="serialization")
    schema["$id"] = f"https://argosy.dev/schemas/v{SCHEMA_VERSION}/{name}.json"  # noqa: F405
    return schema
