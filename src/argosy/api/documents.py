"""The REST API's documents (``/api/v1``): one set of pydantic models for the server and the client.

Request bodies forbid unknown fields, so a typo in a field name is a 422 that names the
field, not a silently ignored option. Responses allow extra fields so an older client can
read a newer server's documents.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_PREFIX = "/api/v1"
SCHEMA_VERSION = 1  # of the documents below (``Versioned``): see the package docstring
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"

T = TypeVar("T")


def _without_nul(value: Any, where: str = "body") -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where} holds a NUL character; text never does: remove it")
    elif isinstance(value, dict):
        for key, item in value.items():
            _without_nul(key, where)
            _without_nul(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _without_nul(item, f"{where}[{i}]")


class Request(BaseModel):
    """A request body: unknown fields are refused, and so is a NUL character in any text
    (PostgreSQL stores none: it would otherwise fail as a server error)."""

    # built at import, unlike documents: FastAPI wraps a body model in Annotated[..., Body()],
    # and a deferred build of that at the first request warned (pydantic's
    # UnsupportedFieldAttributeWarning for Body's alias) — a server error under -W error
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        _without_nul(data)
        return data


class Document(BaseModel):
    """A response body: unknown fields are kept (forward compatible).

    Documents build their validators on first use, not at import: a command uses a handful
    of the ~100, and building them all cost ~30 ms of every ``argosy run``.
    """

    model_config = ConfigDict(extra="allow", defer_build=True)


class Page(Document, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` to get the next (``None``: last)."""

    items: list[T]
    next_cursor: str | None = None


class Versioned(Document):
    """A top-level document: ``schema_version`` changes only when a field changes meaning
    or goes away; new optional fields keep the version."""

    schema_version: int = SCHEMA_VERSION


# -- errors ------------------------------------------------------------------------------------
class Problem(Document):
    """An error, as ``application/problem+json`` (RFC 9457); ``detail`` says what to do."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str | None = None  # a stable machine-readable name, e.g. ``version_tag_conflict``


# -- blobs -------------------------------------------------------------------------------------
class Blob(Document):
    sha256: str
    size: int


# -- pipelines ---------------------------------------------------------------------------------
class PipelineVersionCreate(Request):
    """A compiled spec (``argosy compile`` output) and the version name (tag) to give it.

    Every blob the spec references (code packages, environment manifests) must have been
    uploaded first with ``PUT .../blobs/{sha256}``.
    """

    spec: dict[str, Any]
    version: str | None = Field(default=None, pattern=NAME_PATTERN)


class PipelineVersion(Versioned):
    id: str
    pipeline: str
    digest: str  # the spec's content hash: what identifies the version
    tags: list[str]
    created_at: datetime
    created_by: str
    spec: dict[str, Any] | None = None  # included when one version is asked for


class PipelineVersionPushed(Versioned):
    """The outcome of a push: ``created`` is false when the content was already there."""

    version: PipelineVersion
    created: bool
    tag_added: bool


class Pipeline(Versioned):
    id: str
    name: str
    created_at: datetime
    created_by: str
    latest_version: PipelineVersion | None = None


# -- runs --------------------------------------------------------------------------------------
RunStatusName = Literal["pending", "running", "succeeded", "failed", "cancelled"]


class UploadedPath(Request):
    """A local file or folder uploaded as a blob for a run (``POST .../uploads``): a run
    parameter whose value is the path as the user wrote it is read from this blob instead of
    from the server's disk."""

    sha256: str = Field(pattern=r"^(sha256:)?[0-9a-f]{64}$")
    format: Literal["file", "dir"]
    filename: str | None = Field(default=None, max_length=255)


class UploadCreate(Request):
    """Start uploading a local file (``file``) or a tar of a folder (``dir``) for runs;
    ``size`` counts against the tenant's ``storage_bytes`` quota."""

    sha256: str = Field(pattern=r"^(sha256:)?[0-9a-f]{64}$")
    size: int = Field(ge=0)
    format: Literal["file", "dir"]
    filename: str | None = Field(default=None, max_length=255)


class Upload(Document):
    """An upload: send its bytes from ``received`` on (``PUT .../uploads/{id}?offset=``), then
    complete it; ``completed`` when the blob is stored (at once if it was already there)."""

    id: str
    sha256: str
    size: int
    received: int
    format: str
    filename: str | None = None
    completed: bool


TAG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class RunLabels(Request):
    """What people and CI call a run: a name, a description, ``key: value`` tags."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        return check_tags(tags)


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if not re.match(TAG_KEY_PATTERN, key):
            raise ValueError(
                f"tag key {key!r}: letters, digits, '_', '.', '-' (at most 63), e.g. git_sha"
            )
        if len(value) > 255:
            raise ValueError(f"tag {key!r}: the value is longer than 255 characters")
    return tags


class RunCreate(Request):
    """Run a pushed pipeline version (a tag, a digest or a version id; default: the newest).

    ``name``, ``description`` and ``tags`` (``key: value``) label the run for people and CI
    (runs are listed by name and tags)."""

    pipeline: str = Field(pattern=NAME_PATTERN)
    version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    fail_fast: bool = False
    no_cache: bool = False
    files: dict[str, UploadedPath] = Field(
        default_factory=dict,
        description="parameter value (a path as written) -> the upload that holds its bytes",
    )
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=4000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        return check_tags(tags)


class ArtifactRef(Document):
    """An output as runs and tasks show it: its artifact, and its value when that is small
    JSON (a collection of JSON values shows as the list of its elements' values)."""

    artifact_id: str
    ref: str  # RUN/NODE/OUTPUT: what 'argosy artifacts get' takes
    type: str
    format: str
    sha256: str
    size: int
    value: Any = None


class Run(Versioned):
    id: str
    pipeline: str
    pipeline_version_id: str
    digest: str
    status: RunStatusName
    parameters: dict[str, Any]
    created_at: datetime
    created_by: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    cancel_requested: bool = False
    engine_alive: bool | None = None  # running: whether the engine driving it still lives
    retry_of: str | None = None
    reproduce_of: str | None = None
    schedule: str | None = None
    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)  # the pipeline's outputs
    name: str | None = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    trigger: str | None = None  # the trigger that started it


class Attempt(Document):
    id: str
    number: int
    state: str
    reason: str | None = None
    cause: str
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    wall_time: float | None = None
    cpu_time: float | None = None
    peak_memory: int | None = None
    node_pool: str | None = None


class TaskCache(Document):
    """Whether the task reused an earlier identical task's outputs, and why (or why not)."""

    status: str | None = None  # hit | miss | off
    reason: str | None = None
    key: str | None = None
    cached_from_task: str | None = None


class Task(Versioned):
    id: str
    node_path: str
    step: str
    state: str
    reason: str | None = None
    item: Any = None  # the item of a fan-out iteration (``train[2]``)
    cache: TaskCache = Field(default_factory=TaskCache)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    inputs: dict[str, Any] | None = None  # what each input resolved to
    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    log_tail: list[str] = Field(default_factory=list)  # the last lines of its last attempt


class RunDetail(Run):
    """A run with its tasks and metrics: what ``runs show`` and the run page show."""

    tasks: list[Task] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)  # NODE.OUTPUT -> values


class Artifact(Versioned):
    id: str
    ref: str  # RUN/NODE/OUTPUT
    run_id: str
    node_path: str
    output_name: str
    type: str
    format: str
    sha256: str
    size: int
    created_at: datetime
    value: Any = None  # small JSON values, inline
    filename: str | None = None  # a file output's own name (what 'artifacts get' writes)


class LogLine(Document):
    node_path: str
    attempt: int
    time: str
    stream: str
    line: str


class LogPage(Versioned):
    """Log lines in time order; ask again with ``cursor`` for lines written since."""

    items: list[LogLine]
    cursor: str
    finished: bool  # the run is done: no more lines will come
    status: RunStatusName | None = None  # the run's status when the page was read


class TaskEvent(Document):
    """A task's state as a run's event stream sends it (``event: task``): sent for every task
    when a stream starts, then again whenever its state, attempt or reason changes."""

    node_path: str
    state: str
    attempt: int = 0  # the latest attempt's number (0: none started yet)
    reason: str | None = None
    cache: str | None = None  # hit | miss | off
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunState(Versioned):
    """A run's status and each task's state: what a live view of the run needs, read cheaply."""

    run_id: str
    status: RunStatusName
    tasks: list[TaskEvent]


class ArtifactPreview(Document):
    """What the web UI shows of an artifact's content, read without loading it whole.

    ``kind``: ``table`` (``columns`` and the first ``rows`` of ``num_rows``), ``metrics`` and
    ``json`` (``value``), ``text`` (the first bytes as ``text``), ``image`` (``media_type``;
    the bytes are fetched separately), ``binary`` (nothing to show; ``note`` says why).
    """

    kind: Literal["table", "metrics", "json", "text", "image", "binary"]
    columns: list[dict[str, str]] = Field(default_factory=list)  # {"name", "type"}
    rows: list[list[Any]] = Field(default_factory=list)
    num_rows: int | None = None
    value: Any = None
    text: str | None = None
    media_type: str | None = None
    truncated: bool = False
    note: str | None = None


class ComparisonColumn(Document):
    """One compared thing: a run, or one iteration of a mapped node of a run."""

    label: str
    run_id: str
    node_path: str | None = None
    status: str


class ComparisonRow(Document):
    """One compared field: its value in each column; ``same`` when all are equal; ``best``
    the index of the best value of a metric (highest, or lowest for a loss or error)."""

    key: str
    values: list[Any]
    same: bool
    best: int | None = None


class Comparison(Versioned):
    """2-10 runs, or the iterations of one mapped node, side by side, section by section."""

    kind: Literal["runs", "iterations"]
    columns: list[ComparisonColumn]
    parameters: list[ComparisonRow]
    code: list[ComparisonRow]
    inputs: list[ComparisonRow]
    outputs: list[ComparisonRow]
    metrics: list[ComparisonRow]


class RunLogs(Versioned):
    """All of a run's log lines (``argosy logs RUN --output json``)."""

    run_id: str
    lines: list[LogLine]


class DiffRow(Document):
    key: str
    a: Any = None
    b: Any = None
    same: bool


class RunDiff(Versioned):
    """Two runs side by side, section by section (``argosy runs diff``)."""

    a: str
    b: str
    parameters: list[DiffRow]
    code: list[DiffRow]
    packages: list[DiffRow]
    inputs: list[DiffRow]
    outputs: list[DiffRow]
    metrics: list[DiffRow]


class Lineage(Versioned):
    """Where an artifact came from (``up``) or what was made from it (``down``): a tree of
    artifact, task, file and value nodes (``kind``), as ``argosy lineage`` prints it."""

    direction: Literal["up", "down"]
    artifact: dict[str, Any]


# -- schedules ---------------------------------------------------------------------------------
CatchUp = Literal["none", "latest", "all"]


class ScheduleCreate(Request):
    name: str = Field(pattern=NAME_PATTERN)
    pipeline: str = Field(pattern=NAME_PATTERN)
    version: str | None = None  # default: the newest version at each fire
    cron: str
    timezone: str = "UTC"
    parameters: dict[str, Any] = Field(default_factory=dict)
    max_concurrent_runs: int = Field(default=1, ge=1, le=1000)
    catch_up: CatchUp = "latest"
    catch_up_limit: int = Field(default=10, ge=1, le=1000)
    paused: bool = False


class Schedule(Versioned):
    id: str
    name: str
    pipeline: str
    version: str | None = None
    cron: str
    timezone: str
    parameters: dict[str, Any]
    max_concurrent_runs: int
    catch_up: CatchUp
    catch_up_limit: int
    paused: bool
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    created_at: datetime
    created_by: str


class ScheduleFire(Document):
    """One slot of a schedule and what it became: a run, or why none was created."""

    fire_time: datetime
    run_id: str | None = None
    outcome: str  # created | skipped_concurrency | skipped_catch_up | failed
    detail: str | None = None


# -- health ------------------------------------------------------------------------------------
class Health(Document):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
    instance: str | None = None
    leader: bool | None = None


# -- tenants, members, API tokens, identity ----------------------------------------------------
TENANT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
RoleName = Literal["viewer", "editor", "owner"]
SubjectKind = Literal["user", "group"]


class TenantCreate(Request):
    name: str = Field(
        pattern=TENANT_NAME_PATTERN, max_length=63,
        description="a DNS-1123 label, immutable (it prefixes artifact keys)",
    )  # fmt: skip
    display_name: str | None = Field(default=None, max_length=255)


class TenantSettingsUpdate(Request):
    """Settings to merge into the tenant's (a ``null`` value removes a key)."""

    settings: dict[str, Any]
    display_name: str | None = Field(default=None, max_length=255)


class Tenant(Document):
    name: str
    display_name: str | None = None
    archived: bool = False
    archived_at: datetime | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    quotas: dict[str, float] = Field(default_factory=dict)
    created_at: datetime
    created_by: str
    role: RoleName | None = None  # the caller's role in it (None: a platform admin's view)


class TenantQuotas(Request):
    """A tenant's limits on what it runs at once, across all server instances (``null``: no
    limit). Tasks beyond them stay queued; other tenants' tasks still start."""

    running_tasks: int | None = Field(default=None, ge=0)
    cpu: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0, description="bytes")
    gpu: int | None = Field(default=None, ge=0)
    storage_bytes: int | None = Field(
        default=None, ge=0, description="bytes of artifacts and uploads the tenant may store"
    )


class MemberCreate(Request):
    role: RoleName
    subject_kind: SubjectKind
    subject: str = Field(
        min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$",
        description="a user's subject or a group (no control characters)",
    )  # fmt: skip


class Member(Document):
    """A role binding: ``role`` in the tenant for a user (its subject claim) or a group."""

    id: str
    role: RoleName
    subject_kind: str
    subject: str
    created_at: datetime
    created_by: str


class ApiTokenCreate(Request):
    name: str = Field(pattern=NAME_PATTERN, description="what the token is for, e.g. ci")
    role: RoleName
    expires_in_days: float = Field(gt=0, le=365, description="lifetime in days (at most 365)")


class ApiToken(Document):
    """An API token's metadata (never the token itself, except once in ``ApiTokenCreated``)."""

    id: str
    name: str
    role: RoleName
    prefix: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiTokenCreated(ApiToken):
    token: str = Field(description="the token: shown this once, store it now")


class Me(Document):
    """The caller as the server sees it."""

    subject: str
    name: str
    kind: str
    groups: list[str] = Field(default_factory=list)
    platform_admin: bool = False
    roles: dict[str, RoleName] = Field(default_factory=dict)
    insecure: bool = False


# -- secrets -----------------------------------------------------------------------------------
class SecretSet(Request):
    """A secret's value: stored encrypted, never returned by the API."""

    value: str = Field(max_length=65536)


class SecretInfo(Document):
    """A secret as listed: its name and history, never its value."""

    name: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


__all__ = [
    "API_PREFIX",
    "NAME_PATTERN",
    "SCHEMA_VERSION",
    "TAG_KEY_PATTERN",
    "TENANT_NAME_PATTERN",
    "ApiToken",
    "ApiTokenCreate",
    "ApiTokenCreated",
    "Artifact",
    "ArtifactPreview",
    "ArtifactRef",
    "Attempt",
    "Blob",
    "CatchUp",
    "Comparison",
    "ComparisonColumn",
    "ComparisonRow",
    "DiffRow",
    "Document",
    "Health",
    "Lineage",
    "LogLine",
    "LogPage",
    "Me",
    "Member",
    "MemberCreate",
    "Page",
    "Pipeline",
    "PipelineVersion",
    "PipelineVersionCreate",
    "PipelineVersionPushed",
    "Problem",
    "Request",
    "RoleName",
    "Run",
    "RunCreate",
    "RunDetail",
    "RunDiff",
    "RunLabels",
    "RunLogs",
    "RunState",
    "RunStatusName",
    "Schedule",
    "ScheduleCreate",
    "ScheduleFire",
    "SecretInfo",
    "SecretSet",
    "SubjectKind",
    "Task",
    "TaskCache",
    "TaskEvent",
    "Tenant",
    "TenantCreate",
    "TenantQuotas",
    "TenantSettingsUpdate",
    "Upload",
    "UploadCreate",
    "UploadedPath",
    "Versioned",
]
