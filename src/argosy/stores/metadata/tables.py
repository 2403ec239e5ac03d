"""The metadata schema (SQLAlchemy 2 ORM): tenant → pipeline → pipeline version → run → task
(node path) → attempt → artifact.

Every row carries ``tenant`` and ``created_by``; ids are ULIDs. Schema changes are Alembic
migrations (``migrations/versions``), written expand/contract so two versions can share a DB.
Relationships are ``lazy="raise"``: queries say what they load.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: Timestamp}


class _Row:
    """Columns every table has."""

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(255))


class Tenant(_Row, Base):
    __tablename__ = "tenants"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    archived_at: Mapped[datetime | None]
    settings: Mapped[dict[str, Any] | None]  # retention, price list, default pool, cache default
    quotas: Mapped[dict[str, Any] | None]  # running_tasks, cpu, memory, gpu in use at most
    task_uid: Mapped[int | None] = mapped_column(
        Integer, unique=True
    )  # + task_uid_base: its tasks' uid


class RoleBinding(_Row, Base):
    """``role`` in ``tenant`` for a user (the IdP's stable subject), a group, or a service account."""

    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("tenant", "role", "subject_kind", "subject"),)
    role: Mapped[str] = mapped_column(String(16))  # viewer | editor | owner
    subject_kind: Mapped[str] = mapped_column(String(16))  # user | group | service
    subject: Mapped[str] = mapped_column(String(255))


class Pipeline(_Row, Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("tenant", "name"),)
    name: Mapped[str] = mapped_column(String(255))


class PipelineVersion(_Row, Base):
    """An immutable compiled spec, identified by its content digest within the pipeline."""

    __tablename__ = "pipeline_versions"
    __table_args__ = (UniqueConstraint("pipeline_id", "digest"),)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    digest: Mapped[str] = mapped_column(String(71))
    spec: Mapped[dict[str, Any]]
    provenance: Mapped[dict[str, Any] | None]


class PipelineVersionTag(_Row, Base):
    """A version name: points at one version of its pipeline, forever (tags never move)."""

    __tablename__ = "pipeline_version_tags"
    __table_args__ = (UniqueConstraint("pipeline_id", "name"),)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    version_id: Mapped[str] = mapped_column(ForeignKey("pipeline_versions.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))


class Run(_Row, Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_tenant_status", "tenant", "status"),
        Index("ix_runs_tenant_pipeline_id", "tenant", "pipeline_id", "status", "id"),
        Index("ix_runs_queue_owner", "queue", "owner", "status"),
    )
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    pipeline_version_id: Mapped[str] = mapped_column(ForeignKey("pipeline_versions.id"))
    status: Mapped[str] = mapped_column(String(16))
    parameters: Mapped[dict[str, Any]]
    options: Mapped[dict[str, Any]]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    engine: Mapped[dict[str, Any] | None]  # {host, pid, started}: the live owner, if any
    error: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any] | None]  # pipeline output -> artifact id, when finished
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    queue: Mapped[str | None] = mapped_column(String(32))  # "server": any server instance runs it
    owner: Mapped[str | None] = mapped_column(String(26))  # the server instance driving it
    retry_of: Mapped[str | None] = mapped_column(String(26), index=True)
    schedule_id: Mapped[str | None] = mapped_column(String(26), index=True)
    name: Mapped[str | None] = mapped_column(String(255))  # given by who started it (CI: the build)
    description: Mapped[str | None] = mapped_column(Text)
    trigger_id: Mapped[str | None] = mapped_column(String(26), index=True)  # what made it


class Task(_Row, Base):
    """One node of one run."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("run_id", "node_path"),)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    node_path: Mapped[str] = mapped_column(String(512))
    step_name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)  # the fencing number
    failures: Mapped[int] = mapped_column(Integer, default=0)  # attempts that used up a retry
    inputs: Mapped[dict[str, Any] | None]  # resolved input values and artifact refs
    cache_key: Mapped[str | None] = mapped_column(String(71), index=True)
    cache: Mapped[dict[str, Any] | None]  # {status: hit|miss|off, reason, components}
    cached_from_task_id: Mapped[str | None] = mapped_column(String(26))
    item: Mapped[dict[str, Any] | None]  # an iteration of a map node: {"index", "value"}
    not_before: Mapped[datetime | None]  # retry backoff: do not start before
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Attempt(_Row, Base):
    """One numbered try of a task, with what its process did and used."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("task_id", "number"),)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(16))  # why it exists: first, retry, engine_lost
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    pgid: Mapped[int | None] = mapped_column(Integer)
    process_started: Mapped[float | None] = mapped_column(Float)  # process start time (epoch)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    resources: Mapped[dict[str, Any]]
    node_pool: Mapped[str | None] = mapped_column(String(255))
    wall_time: Mapped[float | None] = mapped_column(Float)
    cpu_time: Mapped[float | None] = mapped_column(Float)
    peak_memory: Mapped[int | None] = mapped_column(BigInteger)
    log_key: Mapped[str | None] = mapped_column(String(1024))
    log_tail: Mapped[list[Any] | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Artifact(_Row, Base):
    """One output of one task, pointing at a content-addressed blob."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("task_id", "output_name"),
        Index("ix_artifacts_tenant_sha256", "tenant", "sha256"),
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"))
    attempt_id: Mapped[str | None] = mapped_column(ForeignKey("attempts.id"))  # None: cached
    node_path: Mapped[str] = mapped_column(String(512))
    output_name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    serializer: Mapped[str | None] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[dict[str, Any] | None]  # {"json": ...} for small JSON values, inline


class TaskInput(_Row, Base):
    """One input of one task: an upstream artifact, an imported file, or a JSON value (lineage)."""

    __tablename__ = "task_inputs"
    __table_args__ = (UniqueConstraint("task_id", "name"),)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"))
    name: Mapped[str] = mapped_column(String(255))
    artifact_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"), index=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(Text)  # path of a file imported as input
    value: Mapped[dict[str, Any] | None]  # {"json": ...} for values (parameters, constants)


class IdempotencyKey(_Row, Base):
    """A client's ``Idempotency-Key`` on run creation: the same key makes the same run."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant", "key"),)
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))


class Schedule(_Row, Base):
    """A cron rule that creates runs of a pipeline (in a time zone, with a catch-up policy)."""

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("tenant", "name"),)
    name: Mapped[str] = mapped_column(String(255))
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))
    version: Mapped[str | None] = mapped_column(String(255))  # tag/digest; None: the newest
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]]
    max_concurrent_runs: Mapped[int] = mapped_column(Integer)
    catch_up: Mapped[str] = mapped_column(String(16))  # none | latest | all
    catch_up_limit: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    next_fire_at: Mapped[datetime | None] = mapped_column(index=True)
    last_fire_at: Mapped[datetime | None]


class ScheduleFire(_Row, Base):
    """One slot of a schedule, written once (the unique key makes fires exactly-once)."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_id", "fire_time"),)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(26))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)


class ServerInstance(Base):
    """A running ``argosy server`` process; alive while its heartbeat is fresh (platform-wide)."""

    __tablename__ = "server_instances"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # serving | draining | stopped
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    capacity: Mapped[dict[str, Any]]


class Lease(Base):
    """A named lease (``scheduler``): one holder until ``expires_at``; ``token`` grows on every
    change of holder, so a write fenced by an old token is refused (platform-wide)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(26))
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class ApiToken(_Row, Base):
    """A bearer token for CI and service accounts: a role in one tenant until it expires.

    Only the token's sha256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class User(Base):
    """A person provisioned by the identity provider (SCIM); ``external_id`` is the token's
    stable subject claim. Inactive users are refused even with a valid token (platform-wide)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    user_name: Mapped[str] = mapped_column(String(255), index=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    emails: Mapped[list[Any] | None]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deactivated_at: Mapped[datetime | None]


class ScimGroup(Base):
    """A group pushed by SCIM (its members are user ids); roles come from token groups."""

    __tablename__ = "scim_groups"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    members: Mapped[list[Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BrowserSession(Base):
    """A browser login (cookie); revoked on logout or when its user is deactivated."""

    __tablename__ = "browser_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie value
    subject: Mapped[str] = mapped_column(String(255), index=True)
    claims: Mapped[dict[str, Any]]  # name, groups at login
    csrf_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    """One append-only, hash-chained record of who did what to which resource, and the decision.

    ``hash`` = sha256 over the previous event's hash and this event's canonical content, so an
    edited, deleted or reordered row breaks the chain (``argosy admin audit verify``)."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(26), unique=True)
    at: Mapped[datetime] = mapped_column(index=True)
    tenant: Mapped[str | None] = mapped_column(String(63), index=True)
    actor: Mapped[str] = mapped_column(String(255))
    actor_kind: Mapped[str] = mapped_column(
        String(16)
    )  # user | service | task | system | anonymous
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(16))  # allowed | denied | failed
    source: Mapped[str | None] = mapped_column(String(255))  # client address
    detail: Mapped[dict[str, Any] | None]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class DataKey(Base):
    """A tenant's data-encryption key, wrapped by the key-encryption key ``kek_id``.

    New writes use the tenant's newest ``active`` key; older keys stay to read older objects."""

    __tablename__ = "data_keys"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    kek_id: Mapped[str] = mapped_column(String(255))
    wrapped: Mapped[str] = mapped_column(Text)  # base64
    state: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[datetime]


class Secret(_Row, Base):
    """A tenant's named secret, encrypted with a tenant data key; never returned by the API."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("tenant", "name"),)
    name: Mapped[str] = mapped_column(String(255))
    ciphertext: Mapped[str] = mapped_column(Text)  # base64 of the AES-256-GCM envelope
    key_id: Mapped[str] = mapped_column(String(26))
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(255))


class Upload(_Row, Base):
    """A local file or folder being uploaded for runs (resumable): its bytes collect in the
    tenant's store under ``uploads/<id>`` until complete, then become a blob named by their
    sha256 (verified). ``size`` is declared up front and counts against the tenant's
    ``storage_bytes`` quota from then on."""

    __tablename__ = "uploads"
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # what the client says it is
    size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes stored so far
    format: Mapped[str] = mapped_column(String(8))  # file | dir (a tar of the folder)
    filename: Mapped[str | None] = mapped_column(String(255))
    completed_at: Mapped[datetime | None]


class KnownGroups(Base):
    """The groups the server last knew for a user (from their latest login or access token):
    what their API tokens' authority is checked against when SCIM does not say
    (``auth/standing.py``)."""

    __tablename__ = "known_groups"
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    groups: Mapped[list[Any]]
    seen_at: Mapped[datetime]


class AttemptUpload(_Row, Base):
    """A blob an attempt proved it holds by uploading its bytes through the task store: an
    attempt's outputs are accepted only if it uploaded them or was granted them as inputs
    (``auth/uploads.py``). ``created_by`` is ``task:<attempt id>``."""

    __tablename__ = "attempt_uploads"
    __table_args__ = (UniqueConstraint("attempt_id", "sha256"),)
    attempt_id: Mapped[str] = mapped_column(String(26), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)


# the tokens a token minted (a chain is walked up by created_by = "token:<id>", and revoked down)
Index("ix_api_tokens_created_by", ApiToken.created_by)


# -- operations (issue 17): log index marks, legal holds, approvals, archive tier, deletions ----
class LogIndexMark(Base):
    """An attempt whose log is in the search index (``ops/logindex.py``); the index itself is
    derived data kept beside the database, rebuilt from log records when these rows go."""

    __tablename__ = "log_index_marks"
    attempt_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    run_id: Mapped[str] = mapped_column(String(26), index=True)
    lines: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    indexed_at: Mapped[datetime]


class LegalHold(_Row, Base):
    """A run or an artifact kept as it is: never archived, never deleted, until released."""

    __tablename__ = "legal_holds"
    target_kind: Mapped[str] = mapped_column(String(16))  # run | artifact
    target_id: Mapped[str] = mapped_column(String(26), index=True)
    reason: Mapped[str] = mapped_column(Text)
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(255))


class Approval(_Row, Base):
    """A request that a tenant owner other than the requester approves or denies (one
    approval service: retrievals of archived data, promotions of a model to an alias that
    needs approval). ``expires_at``: while pending, the request expires then if undecided
    (promotions); once approved, what the approval grants ends then (a retrieval's window).
    ``subject``: what exactly is asked about the target, where a kind allows one pending
    request per ask (a promotion: ``ALIAS:VERSION`` of the model ``target_id``); the partial
    unique index keeps two pending requests for it from existing at once, whoever asks."""

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_tenant_kind_state", "tenant", "kind", "state"),
        Index(
            "uq_approvals_pending_subject",
            "tenant",
            "kind",
            "target_id",
            "subject",
            unique=True,
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )
    kind: Mapped[str] = mapped_column(String(32))  # retrieval | promotion
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(26))
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending | approved | denied | expired
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[datetime | None]
    comment: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    detail: Mapped[dict[str, Any] | None]
    subject: Mapped[str | None] = mapped_column(String(255))


class BlobTier(_Row, Base):
    """A blob that is not (only) in the hot tier: ``archived`` (its bytes in the cold tier
    alone) or ``restored`` (readable again until ``restored_until``, by an approved
    retrieval). A blob with no row is hot."""

    __tablename__ = "blob_tiers"
    __table_args__ = (UniqueConstraint("tenant", "sha256"),)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    tier: Mapped[str] = mapped_column(String(16))  # archiving | archived | restored
    archived_at: Mapped[datetime | None]
    restored_until: Mapped[datetime | None]
    retrieval_id: Mapped[str | None] = mapped_column(String(26))


class Deletion(_Row, Base):
    """An intent to delete a run's rows and bytes, written before any is removed: a job
    killed half-way finds it and finishes (bytes first, then the rows and this intent in one
    transaction), so neither half is left alone."""

    __tablename__ = "deletions"
    target_kind: Mapped[str] = mapped_column(String(16))  # run
    target_id: Mapped[str] = mapped_column(String(26), unique=True)
    why: Mapped[str] = mapped_column(String(32))  # retention | user | tenant
    detail: Mapped[dict[str, Any] | None]  # blobs and records to remove


# -- from pipeline to production (issue 18): run labels, the model registry, triggers ----------
class RunTag(_Row, Base):
    """One ``key=value`` label of a run (``argosy run --tag k=v``; runs are filtered by them)."""

    __tablename__ = "run_tags"
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        Index("ix_run_tags_tenant_key_value", "tenant", "key", "value"),
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    key: Mapped[str] = mapped_column(String(63))
    value: Mapped[str] = mapped_column(String(255))


class RegisteredModel(_Row, Base):
    """A named model of a tenant: its versions are artifacts of runs."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant", "name"),)
    name: Mapped[str] = mapped_column(String(255))


class ModelVersionRow(_Row, Base):
    """Version ``version`` (1, 2, ...) of a model: one artifact of one run, immutable, with
    the schemas, signature and metrics read when it was registered."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("artifact_id", "model_id"),
    )
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"))
    run_id: Mapped[str] = mapped_column(String(26), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    training_data_id: Mapped[str | None] = mapped_column(String(26))
    input_schema: Mapped[dict[str, Any] | None]
    output_schema: Mapped[dict[str, Any] | None]
    signature: Mapped[str] = mapped_column(String(71))
    metrics: Mapped[dict[str, Any] | None]
    description: Mapped[str | None] = mapped_column(Text)


class ModelAlias(_Row, Base):
    """An alias of a model (``production``) and the version it points at now."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    alias: Mapped[str] = mapped_column(String(63))
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))


class ModelAliasEvent(_Row, Base):
    """One promotion or demotion (append-only): the history "what was in production when"
    is read from these rows alone."""

    __tablename__ = "model_alias_events"
    __table_args__ = (
        Index("ix_model_alias_events_model_alias", "model_id", "alias", "created_at"),
    )
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    alias: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(16))  # promote | demote
    version_id: Mapped[str | None] = mapped_column(String(26))
    version: Mapped[int | None] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    # a move made by an approved promotion request: who asked, and the request (``approvals``);
    # ``created_by`` is then the owner who approved it
    requested_by: Mapped[str | None] = mapped_column(String(255))
    approval_id: Mapped[str | None] = mapped_column(String(26))


class Trigger(_Row, Base):
    """A rule that runs a pipeline on an event: another pipeline's run succeeded, a signed
    webhook arrived, a new version of a model or of a named artifact appeared."""

    __tablename__ = "triggers"
    __table_args__ = (UniqueConstraint("tenant", "name"),)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # run_succeeded|webhook|model_version|artifact
    source: Mapped[dict[str, Any]]  # {pipeline} | {secret} | {model} | {artifact} (it watches)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id"))  # what it runs
    version: Mapped[str | None] = mapped_column(String(255))  # None: the newest at each fire
    parameters: Mapped[dict[str, Any]]  # static values
    bindings: Mapped[dict[str, Any]]  # parameter -> where its value comes from in the event
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    watermark: Mapped[datetime | None]  # events up to here have been looked at
    resumed_at: Mapped[datetime | None]  # events before it (made while paused) never fire it


class TriggerFire(_Row, Base):
    """One event a trigger acted on, written once (the unique key makes fires exactly-once,
    whichever server instance sees the event first)."""

    __tablename__ = "trigger_fires"
    __table_args__ = (UniqueConstraint("trigger_id", "event_key"),)
    trigger_id: Mapped[str] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(255))  # run:<id> | webhook:<id> | model:<id>
    run_id: Mapped[str | None] = mapped_column(String(26))
    outcome: Mapped[str] = mapped_column(String(32))  # created | failed
    detail: Mapped[str | None] = mapped_column(Text)
