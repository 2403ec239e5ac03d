"""Triggers' documents (``/api/v1/tenants/{tenant}/triggers``): rules that run a pipeline
when an event happens, and the record of each event they acted on."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from argosy.api.documents import NAME_PATTERN, Document, Request, Versioned

TriggerKind = Literal["run_succeeded", "webhook", "model_version", "artifact"]


class TriggerCreate(Request):
    """Run ``pipeline`` (at ``version``, default its newest) with ``parameters`` when:

    - ``run_succeeded``: a run of ``source.pipeline`` succeeds;
    - ``webhook``: a POST to ``.../triggers/{name}/webhook`` is signed with the tenant secret
      ``source.secret`` (HMAC-SHA256, see ``argosy.webhooks``);
    - ``model_version``: a version of ``source.model`` is registered;
    - ``artifact``: the named artifact ``source.artifact`` (``PIPELINE/NODE/OUTPUT``) is made
      with content that differs from its previous version.

    ``bindings`` give parameters values from the event: ``outputs.NAME`` (the succeeded run's
    output: its JSON value, else its RUN/NODE/OUTPUT reference), ``run.id``,
    ``run.parameters.NAME``, ``body.FIELD`` (a webhook's JSON body, dotted for nesting),
    ``model``, ``version``, ``artifact`` (a model version's or the named artifact's
    ``RUN/NODE/OUTPUT``), ``digest`` and ``value`` (the named artifact's sha256 and its JSON
    value, else its reference)."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: TriggerKind
    source: dict[str, str]
    pipeline: str = Field(pattern=NAME_PATTERN)
    version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    bindings: dict[str, str] = Field(default_factory=dict, max_length=100)
    paused: bool = False


class Trigger(Versioned):
    id: str
    name: str
    kind: TriggerKind
    source: dict[str, str]
    pipeline: str
    version: str | None = None
    parameters: dict[str, Any]
    bindings: dict[str, str]
    paused: bool
    webhook_path: str | None = None  # where a webhook trigger is called
    created_at: datetime
    created_by: str
    resumed_at: datetime | None = None  # events before it, made while paused, never fire


class TriggerFire(Document):
    """One event a trigger acted on, once: the run it started, or why none was."""

    event: str  # run:<id> | webhook:<delivery> | model:<version id> | artifact:<id>
    run_id: str | None = None
    outcome: str  # created | failed
    detail: str | None = None
    at: datetime
    replayed: bool = False  # the event had been acted on before (this is that fire)


__all__ = ["Trigger", "TriggerCreate", "TriggerFire", "TriggerKind"]
