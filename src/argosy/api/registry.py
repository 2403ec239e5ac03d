"""The model registry's documents: models, their versions, aliases and the history of every
promotion and demotion (``/api/v1/tenants/{tenant}/models``).

A model version points at one artifact of one run (immutable); an alias (``staging``,
``production``) points at one version of its model and moves only by promotion or demotion,
each recorded as an :class:`AliasEvent` with who, when and why. A tenant's
:class:`PromotionPolicy` may name aliases (``production``) that move only by a
:class:`PromotionRequest` that another owner approves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from argosy.api.documents import Document, Request, Versioned

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""An alias starts with a letter (so ``MODEL@3`` is a version number, ``MODEL@prod`` an alias)."""

ColumnType = Literal[
    "float64", "float32", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
    "uint8", "bool", "string", "datetime", "date", "binary", "any",
]  # fmt: skip


class ColumnSchema(Document):
    """One column of a model's input or output: its name and type (``float64`` accepts
    integers too; ``any`` accepts any JSON value)."""

    name: str
    type: ColumnType
    nullable: bool = False


class ColumnSchemaIn(Request):
    name: str = Field(min_length=1, max_length=255)
    type: ColumnType
    nullable: bool = False


class ModelSchema(Document):
    """The columns a model reads (input) or writes (output), in order, and where they were
    learned from (``training data RUN/NODE/OUTPUT``, ``given at registration``)."""

    columns: list[ColumnSchema]
    source: str | None = None


class ModelVersionCreate(Request):
    """Register a run's artifact as the next version of a model (created on first use).

    The input schema is read from the training data (the nearest upstream data frame in the
    artifact's lineage, or ``training_data``): its columns less ``target`` and ``exclude``;
    the output schema is ``target``'s column. ``input_schema``/``output_schema`` given here
    are taken as they are. Registering the same artifact again returns its version."""

    artifact: str = Field(min_length=4, max_length=1024, description="RUN/NODE/OUTPUT or an id")
    description: str | None = Field(default=None, max_length=4000)
    target: str | None = Field(default=None, max_length=255)
    exclude: list[str] = Field(default_factory=list, max_length=1000)
    training_data: str | None = Field(default=None, max_length=1024)
    input_schema: list[ColumnSchemaIn] | None = Field(default=None, max_length=10_000)
    output_schema: list[ColumnSchemaIn] | None = Field(default=None, max_length=10_000)
    metrics: dict[str, Any] | None = None


class ModelVersion(Versioned):
    id: str
    model: str
    version: int
    artifact_id: str
    artifact: str  # RUN/NODE/OUTPUT
    sha256: str
    format: str  # joblib, pickle, ...: how the serving process loads it
    type: str
    run_id: str
    pipeline: str
    pipeline_digest: str
    training_data: str | None = None  # RUN/NODE/OUTPUT of the data the schema came from
    input_schema: ModelSchema | None = None
    output_schema: ModelSchema | None = None
    signature: str  # sha256 of the input and output schemas: equal signatures swap safely
    metrics: dict[str, Any] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    description: str | None = None
    created_at: datetime
    created_by: str


class ModelVersionRegistered(Versioned):
    """The outcome of a registration: ``created`` is false when the artifact already was a
    version of the model."""

    version: ModelVersion
    created: bool


class Model(Versioned):
    id: str
    name: str
    created_at: datetime
    created_by: str
    latest_version: int | None = None
    aliases: dict[str, int] = Field(default_factory=dict)  # alias -> version


class ModelPromote(Request):
    """Point ``alias`` at ``version`` (a promotion; the alias moves from where it was)."""

    version: int = Field(ge=1)
    reason: str | None = Field(default=None, max_length=2000)


class AliasEvent(Versioned):
    """One promotion or demotion: the alias, the version it now points at (``None``: removed)
    and the one it pointed at before, who, when and why."""

    id: str
    model: str
    alias: str
    action: Literal["promote", "demote"]
    version: int | None = None
    previous_version: int | None = None
    reason: str | None = None
    at: datetime
    by: str
    # a move made by an approved promotion request: who asked, who approved (``by``), the request
    requested_by: str | None = None
    approved_by: str | None = None
    approval: str | None = None


class AliasState(Versioned):
    """Which version an alias pointed at, at a time (``None``: none), and since when."""

    model: str
    alias: str
    at: datetime
    version: int | None = None
    since: datetime | None = None
    event: AliasEvent | None = None


class PromotionPolicy(Versioned):
    """Which aliases of the tenant's models move only by an approved request (``approval``,
    e.g. ``["production"]``), and how many days a request waits for its decision before it
    expires (``expire_after_days``)."""

    tenant: str
    approval: list[str] = Field(default_factory=list)
    expire_after_days: float


class PromotionPolicyUpdate(Request):
    """The fields given replace the tenant's."""

    approval: list[str] | None = Field(default=None, max_length=100)
    expire_after_days: float | None = Field(default=None, gt=0, le=3650)


class PromotionRequest(Versioned):
    """A promotion that waits for approval: moving ``alias`` of ``model`` to ``version``.
    Another owner than ``requested_by`` approves it (the alias moves then, ``event``) or
    denies it; undecided at ``expires_at``, it expires. Denied or expired, nothing moves."""

    id: str
    model: str
    alias: str
    version: int
    reason: str | None = None
    state: Literal["pending", "approved", "denied", "expired"]
    requested_by: str
    requested_at: datetime
    expires_at: datetime | None = None  # while pending: undecided then, it expires
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str | None = None
    event: AliasEvent | None = None  # the move, once approved


class PromotionDecision(Request):
    approve: bool
    comment: str | None = Field(default=None, max_length=2000)


__all__ = [
    "ALIAS_PATTERN",
    "AliasEvent",
    "AliasState",
    "ColumnSchema",
    "ColumnSchemaIn",
    "ColumnType",
    "Model",
    "ModelPromote",
    "ModelSchema",
    "ModelVersion",
    "ModelVersionCreate",
    "ModelVersionRegistered",
    "PromotionDecision",
    "PromotionPolicy",
    "PromotionPolicyUpdate",
    "PromotionRequest",
]
