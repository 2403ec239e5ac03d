"""Submitting runs to the server queue: from a pushed pipeline version, a retry, or a schedule.

Local runs are submitted by ``Engine.submit`` and executed by the submitting process; runs
queued here (``queue="server"``) are claimed and executed by any server instance.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from argosy.engine.plan import Planner
from argosy.spec.models import PipelineSpec
from argosy.spec.parameters import bind_parameters
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import PipelineVersion, Run

SERVER_QUEUE = "server"


def spec_of(version: PipelineVersion) -> PipelineSpec:
    """The pipeline spec stored in a version row (with its provenance)."""
    doc = dict(version.spec)
    if version.provenance:
        doc["provenance"] = version.provenance
    return PipelineSpec.model_validate(doc)


def queue_run(
    session: Session,
    version: PipelineVersion,
    parameters: dict[str, Any],
    user: str,
    *,
    fail_fast: bool = False,
    no_cache: bool = False,
    retry_of: str | None = None,
    schedule_id: str | None = None,
) -> Run:
    """A new ``pending`` run of ``version`` on the server queue, parameters checked and defaulted.

    Raises ``UsageError`` (unknown, missing or mistyped parameters) before writing anything.
    """
    spec = spec_of(version)
    bound = bind_parameters(spec, {}, parameters)
    static, _ = Planner(spec, bound).static()
    nodes = [(n.path, n.step or n.pipeline or "") for n in static]
    options = {"fail_fast": fail_fast, "no_cache": no_cache, "retry_of": retry_of}
    return q.create_run(
        session, version.tenant, spec, nodes, bound, options, user,
        version=version, queue=SERVER_QUEUE, retry_of=retry_of, schedule_id=schedule_id,
    )  # fmt: skip


def retry_run(session: Session, original: Run, user: str) -> Run:
    """A new run of the same version and parameters, linked by ``retry_of``; its tasks reuse
    the outputs of the original's succeeded tasks whose inputs are unchanged."""
    version = session.get_one(PipelineVersion, original.pipeline_version_id)
    options = original.options or {}
    return queue_run(
        session, version, dict(original.parameters), user,
        fail_fast=bool(options.get("fail_fast")), no_cache=bool(options.get("no_cache")),
        retry_of=original.id,
    )  # fmt: skip
