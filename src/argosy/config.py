"""One typed source of settings: ``ARGOSY_<NAME>`` environment variables over defaults.

The state folder (``home``) is ``ARGOSY_HOME`` if set, else the nearest ``.argosy/`` found by
walking up from the current directory, else ``./.argosy`` (created on first use).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from argosy.errors import UsageError
from argosy.units import parse_memory

STATE_DIR_NAME = ".argosy"
LOCAL_TENANT = "default"


def find_home(start: Path | None = None) -> Path:
    """The state folder: the nearest ``.argosy`` above ``start`` (default: the cwd), or a new one there."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_DIR_NAME
        if candidate.is_dir():
            return candidate
    return here / STATE_DIR_NAME


def _machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _machine_gpus() -> int:
    """NVIDIA devices visible as /dev/nvidiaN (0 on machines without a GPU)."""
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())


class Settings(BaseSettings):
    """Effective configuration of this process (local mode)."""

    model_config = SettingsConfigDict(env_prefix="ARGOSY_", extra="ignore")

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
    secrets_file: Path | None = None
    poll_interval: float = Field(
        default=0.5, gt=0, description="seconds between the engine's checks for cancel requests"
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
    def database_url(self) -> str:
        return f"sqlite:///{self.home / 'argosy.db'}"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def attempts_dir(self) -> Path:
        return self.home / "attempts"

    @property
    def resolved_secrets_file(self) -> Path:
        return self.secrets_file or self.home / "secrets.env"


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
            raise UsageError(f"invalid setting {key}: {first['msg']}") from None
        raise
