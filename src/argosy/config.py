"""One typed source of settings: ``ARGOSY_<NAME>`` environment variables over defaults.

The state folder (``home``) is ``ARGOSY_HOME`` if set, else the nearest ``.argosy/`` found by
walking up from the current directory, else ``./.argosy`` (created on first use).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from argosy.errors import UsageError
from argosy.project import PROJECT_MARKERS as PROJECT_MARKERS  # the project root's markers
from argosy.units import parse_memory

STATE_DIR_NAME = ".argosy"
LOCAL_TENANT = "default"


def find_home(start: Path | None = None) -> Path:
    """The state folder (when ``ARGOSY_HOME`` is not set).

    Walking up from ``start`` (default: the cwd): the first ``.argosy`` found, but not above
    the project root (the nearest folder holding one of :data:`PROJECT_MARKERS`); without
    one, a new ``.argosy`` at the project root — so every folder of a project shares one
    state folder, whichever the first run started in. Outside any project: ``./.argosy``.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_DIR_NAME
        if candidate.is_dir():
            return candidate
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return candidate
    return here / STATE_DIR_NAME


def _machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _machine_gpus() -> int:
    """NVIDIA devices visible as /dev/nvidiaN (0 on machines without a GPU)."""
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())


class Settings(BaseSettings):
    """Effective configuration: explicit values (CLI) > ``ARGOSY_*`` variables > the config
    file named by ``ARGOSY_CONFIG`` (TOML, keys as below in lower case) > defaults."""

    model_config = SettingsConfigDict(env_prefix="ARGOSY_", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(_SettingsOfProjectFile(settings_cls, toml_file=path))
        return tuple(sources)

    home: Path = Field(default_factory=find_home, description="state folder")
    tenant: str = LOCAL_TENANT
    user: str = Field(default_factory=getpass.getuser)
    max_cpus: float = Field(default_factory=lambda: float(os.cpu_count() or 1), gt=0)
    max_memory: Annotated[int, Field(gt=0)] = Field(default_factory=_machine_memory)
    max_gpus: Annotated[int, Field(ge=0)] = Field(default_factory=_machine_gpus)
    memory_margin: float = Field(
        default=1.25, gt=1.0, description="kill an attempt above request x margin"
    )
    fail_fast: bool = False
    cache: bool = Field(default=True, description="reuse outputs of identical earlier tasks")
    cache_ttl: float | None = Field(default=None, gt=0, description="default max age (seconds)")
    warm_workers: bool = Field(
        default=True,
        description="fork Python steps from a parent that has imported their code (isolated "
        "processes still; on a server, parents run as each tenant's task uid and are never "
        "told a token, key or secret; see docs/performance.md)",
    )
    warm_workers_wait: float = Field(
        default=0.0,
        ge=0,
        description="seconds a task waits for its warm parent to finish importing before it "
        "starts a fresh interpreter instead",
    )
    warm_workers_idle: float = Field(
        default=120.0, gt=0, description="seconds a warm parent without work lives on"
    )
    warm_workers_max: int = Field(
        default=4, ge=1,
        description="most warm parents at once (fewer where memory is short: one per 2 GiB)",
    )  # fmt: skip
    compile_cache: bool = Field(
        default=True,
        description="reuse a pipeline's compiled spec while no file its compile read changed "
        "(off for a pipeline whose graph depends on the clock or the environment)",
    )
    max_parameter_bytes: int = Field(
        default=1024**2, gt=0, description="largest JSON of one run's parameters; larger: refused"
    )
    secrets_file: Path | None = None
    poll_interval: float = Field(
        default=0.5, gt=0, description="seconds between the engine's checks for cancel requests"
    )
    database_url: str | None = Field(
        default=None,
        description="metadata DB: sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB "
        "(default: SQLite in the state folder)",
    )
    artifact_url: str | None = Field(
        default=None,
        description="artifact store: a folder, or s3://BUCKET/PREFIX (default: the state folder)",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint")
    s3_region: str | None = None
    s3_path_style: bool = Field(default=False, description="path-style addressing (MinIO, moto)")
    s3_insecure: bool = Field(default=False, description="allow a plain-http endpoint (local use)")
    s3_sse: Literal["AES256", "aws:kms"] | None = Field(
        default=None, description="server-side encryption of every object written"
    )
    s3_kms_key_id: str | None = None
    s3_storage_class: str | None = Field(default=None, description="e.g. STANDARD_IA, GLACIER_IR")
    db_retry_seconds: float = Field(
        default=600.0, gt=0, description="how long the engine waits for an unreachable database"
    )
    # -- the client side of a server
    server: str | None = Field(
        default=None, description="an Argosy server URL: CLI commands act there, not locally"
    )
    token: str | None = Field(default=None, description="bearer token sent to the server")
    # -- argosy server
    server_host: str = Field(default="127.0.0.1", description="address the server listens on")
    server_port: int = Field(default=8080, ge=0, le=65535)
    server_max_runs: int = Field(
        default=4, ge=1, description="runs one server instance drives at once"
    )
    lease_seconds: float = Field(
        default=15.0, gt=0, description="scheduler lease and instance liveness expiry"
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="how often an instance renews its heartbeat and lease"
    )
    scheduler_interval: float = Field(
        default=1.0, gt=0, description="how often the leader fires schedules and reconciles"
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="on SIGTERM: how long running tasks may finish"
    )
    clock_file: Path | None = Field(
        default=None, description="simulated time: a file holding an ISO-8601 time (tests)"
    )
    # -- authentication and authorization (server)
    insecure_dev: bool = Field(
        default=False, description="serve without authentication (development only; announced)"
    )
    oidc_issuer: str | None = Field(default=None, description="OIDC issuer URL (discovery)")
    oidc_audience: str | None = Field(default=None, description="required audience of tokens")
    oidc_audience_claim: str = Field(
        default="aud", description="claim holding the audience (Cognito access tokens: client_id)"
    )
    oidc_user_claim: str = Field(default="sub", description="the stable subject claim")
    oidc_name_claim: str = Field(default="preferred_username", description="display name claim")
    oidc_groups_claim: str = Field(
        default="groups", description="claim listing the user's groups (e.g. cognito:groups)"
    )
    oidc_algorithms: list[str] = Field(
        default=["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
        description="accepted signature algorithms (never none or HS*)",
    )
    oidc_leeway_seconds: float = Field(default=60.0, ge=0, le=300, description="clock skew")
    oidc_access_token_rule: Literal["typ", "token_use", "audience"] = Field(
        default="typ",
        description="how an access token is told from an ID token: JWT typ at+jwt (RFC 9068), "
        "token_use=access (Cognito), or the audience alone",
    )
    oidc_client_id: str | None = Field(default=None, description="for browser and device login")
    oidc_client_secret: str | None = None
    platform_admin_groups: list[str] = Field(default=[], description="IdP groups of admins")
    platform_admin_users: list[str] = Field(default=[], description="subjects of admins")
    scim_token: str | None = Field(default=None, description="bearer token of SCIM clients")
    session_cookie_secure: bool = Field(
        default=True, description="Secure cookies (off only for http://localhost)"
    )
    # -- request limits (server)
    max_request_bytes: int = Field(
        default=1024**3, gt=0, description="largest request body (blob uploads); larger: 413"
    )
    max_json_bytes: int = Field(
        default=10 * 1024**2, gt=0, description="largest JSON (or form) request body; larger: 413"
    )
    rate_limit_per_minute: int = Field(
        default=6000, ge=0, description="requests per minute per principal (0: no limit); 429"
    )
    max_json_depth: int = Field(
        default=32, ge=1, le=200, description="deepest nesting of a JSON body; deeper: 422"
    )
    request_header_timeout: float = Field(
        default=10.0, gt=0, description="seconds to receive a request's headers; later: 408"
    )
    request_body_timeout: float = Field(
        default=30.0, gt=0,
        description="seconds to receive a JSON body, or each chunk of an upload; later: 408",
    )  # fmt: skip
    trusted_proxies: list[str] = Field(
        default=[], description="addresses/CIDRs of proxies whose X-Forwarded-For is believed"
    )
    # -- encryption at rest
    encryption: bool | None = Field(
        default=None, description="encrypt artifacts and secrets (default: on in server mode)"
    )
    key_file: Path | None = Field(
        default=None, description="key-encryption key file (default: <home>/keys/kek)"
    )
    # -- isolation of task processes (server)
    task_user: str | None = Field(
        default=None,
        description="unprivileged OS user that server tasks run as (the server needs root)",
    )
    task_uid_base: int | None = Field(
        default=None, ge=100_000,
        description="with task_user: each tenant's tasks run as their own uid, this + N "
        "(N allocated per tenant), so tasks of different tenants never share an OS user",
    )  # fmt: skip
    container_mode: Literal["auto", "rootful", "rootless"] = Field(
        default="auto",
        description="how container steps run: rootful podman with a user namespace (the server "
        "is root), rootless podman (it is not; a memory limit needs cgroup v2 memory "
        "delegated to its user), or auto: rootful as root, else rootless (docs/security.md)",
    )
    container_uid_base: int = Field(
        default=1_000_000_000, ge=100_000_000, le=2**32 - 2 - 65536,
        description="rootful containers without a task user: their ids 0-65535 are host ids "
        "from this one (never the host's root or a task uid)",
    )  # fmt: skip
    # -- the Kubernetes executor (executors/kubernetes; docs/deploy-kubernetes.md)
    executor: Literal["local", "kubernetes"] = Field(
        default="local", description="what runs a server's tasks: local processes or pods"
    )
    kubernetes_namespace: str = Field(
        default="argosy-{tenant}", description="the namespace of a tenant's task pods"
    )
    kubernetes_service_account: str = Field(
        default="argosy-task", description="the service account of a tenant's task pods"
    )
    kubernetes_role_arn: str | None = Field(
        default=None,
        description="IRSA: the IAM role of a tenant's service account, e.g. "
        "arn:aws:iam::123456789012:role/argosy-{tenant}",
    )
    kubernetes_runtime_image: str | None = Field(
        default=None, description="the task image, pinned by digest (REPO@sha256:...)"
    )
    kubernetes_pools: dict[str, dict[str, Any]] = Field(
        default={},
        description="node pools (JSON): name -> {node_selector, tolerations, affinity}",
    )
    kubernetes_default_pool: str | None = Field(
        default=None, description="the pool of steps that name none"
    )
    kubernetes_unschedulable_seconds: float = Field(
        default=600.0, gt=0, description="fail a pod the scheduler cannot place for this long"
    )
    kubernetes_job_ttl_seconds: int = Field(
        default=3600, ge=0, description="ttlSecondsAfterFinished: the cluster's backstop"
    )
    kubernetes_task_store_url: str | None = Field(
        default=None,
        description="where task pods reach the server's task store (in-cluster Service URL)",
    )
    kubernetes_server_namespace: str = Field(
        default="argosy-system", description="the namespace of the Argosy server"
    )
    task_token_key: str | None = Field(
        default=None,
        description="base64 of 32 random bytes shared by a deployment's instances: any of them "
        "then serves a task's token (replicas behind one Service, adoption after a restart); "
        "unset, a token is valid only on the instance that started its attempt",
    )
    task_store_presign: bool = Field(
        default=True,
        description="S3 stores: tasks read and write blobs through presigned URLs for exactly "
        "the granted objects (bytes go task <-> S3 directly; docs/deploy-kubernetes.md)",
    )
    presign_seconds: int = Field(
        default=900, ge=60, le=43200, description="how long a presigned URL is valid"
    )
    # -- operations: logs, metrics, cost, retention (docs/operations.md)
    log_cap_bytes: int = Field(
        default=32 * 1024 * 1024, ge=4096,
        description="bytes of log kept per attempt: the first and last halves, the cut marked",
    )  # fmt: skip
    metrics_token: str | None = Field(
        default=None, description="bearer token a Prometheus scrape sends to /metrics"
    )
    prices_file: Path | None = Field(
        default=None, description="the platform's price list (TOML or JSON; docs/operations.md)"
    )
    lifecycle_interval: float = Field(
        default=60.0, gt=0,
        description="seconds between the leader's lifecycle jobs (log index, retention, sweep)",
    )  # fmt: skip
    retention_archive_days: float | None = Field(
        default=30.0, gt=0, description="default policy: archive artifacts and logs after this"
    )
    retention_delete_days: float | None = Field(
        default=None, gt=0, description="default policy: delete runs after this (None: never)"
    )
    retrieval_window_days: float = Field(
        default=7.0, gt=0, description="how long an approved retrieval keeps bytes readable"
    )
    archive_storage_class: str = Field(
        default="GLACIER", description="S3 stores: the storage class of archived objects"
    )

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError("a tenant is a DNS-1123 label: lowercase letters, digits and '-'")
        return value

    @field_validator("max_memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_memory(value)
        return value

    @property
    def metadata_url(self) -> str:
        """The metadata database to use."""
        return self.database_url or f"sqlite:///{self.home / 'argosy.db'}"

    @property
    def artifacts_url(self) -> str:
        """The artifact store to use (a folder path or an s3:// URL)."""
        return self.artifact_url or str(self.home / "blobs")

    def artifact_options(self) -> dict[str, Any]:
        """Options of a remote artifact store (no credentials: those come from the AWS chain)."""
        return {
            "endpoint_url": self.s3_endpoint_url,
            "region": self.s3_region,
            "path_style": self.s3_path_style,
            "insecure": self.s3_insecure,
            "sse": self.s3_sse,
            "kms_key_id": self.s3_kms_key_id,
            "storage_class": self.s3_storage_class,
        }

    @property
    def attempts_dir(self) -> Path:
        return self.home / "attempts"

    @property
    def resolved_secrets_file(self) -> Path:
        return self.secrets_file or self.home / "secrets.env"


PROJECT_TABLES = ("images", "registry", "environment")
"""Tables of the project file that are no settings: component images (ops/images.py) and the
steps' default packages (spec/environment.py)."""


class _SettingsOfProjectFile(TomlConfigSettingsSource):
    """The settings in a TOML file, less the project tables other parts read."""

    def __call__(self) -> dict[str, Any]:
        found = super().__call__()
        return {k: v for k, v in found.items() if k not in PROJECT_TABLES}


def config_file() -> Path | None:
    """The TOML config file named by ``ARGOSY_CONFIG`` (it must exist when named)."""
    named = os.environ.get("ARGOSY_CONFIG")
    if not named:
        return None
    path = Path(named).expanduser()
    if not path.is_file():
        raise UsageError(
            f"ARGOSY_CONFIG names {str(path)!r}, which does not exist; fix the path or unset it"
        )
    return path


_SECRET_WORDS = ("password", "secret", "token", "key")


def redact(name: str, value: Any) -> Any:
    """A value safe to print: passwords in URLs and secret-looking settings are masked."""
    if value is None:
        return None
    text = str(value)
    if any(w in name for w in _SECRET_WORDS) and name != "s3_kms_key_id":
        return "***"
    if "://" in text and "@" in text:
        scheme, _, rest = text.partition("://")
        userinfo, _, host = rest.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in userinfo else text
    return value


def describe(settings: Settings, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every setting with its effective value (redacted) and where it came from."""
    import tomllib

    file = config_file()
    from_file: dict[str, Any] = tomllib.loads(file.read_text()) if file else {}
    rows = []
    for name in type(settings).model_fields:
        env = f"ARGOSY_{name.upper()}"
        if overrides and overrides.get(name) is not None:
            source = "command line"
        elif env in os.environ:
            source = f"environment ({env})"
        elif name in from_file:
            source = f"config file ({file})"
        else:
            source = "default"
        rows.append(
            {"name": name, "value": redact(name, getattr(settings, name)), "source": source}
        )
    return rows


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (CLI) overrides that are not None."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except Exception as exc:  # pydantic.ValidationError, kept lazy
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            key = "ARGOSY_" + str(first["loc"][0]).upper() if first.get("loc") else "setting"
            if first.get("type") == "extra_forbidden":
                raise UsageError(
                    f"unknown setting {first['loc'][0]!r} in the config file {config_file()}; "
                    f"see 'argosy config show' for the settings there are"
                ) from None
            raise UsageError(f"invalid setting {key}: {first['msg']}") from None
        raise
