"""Creating runs: from a pipeline version with parameters, as a retry, or as a reproduction.

A run is created ``pending`` with one ``pending`` task per node of its static plan; from then
on only the engine changes its states. ``queue="server"`` leaves it for any server instance to
claim; ``queue=None`` is a run the creating process executes itself (local mode).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from argosy.engine.plan import Planner
from argosy.errors import UsageError
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


def check_parameter_size(parameters: dict[str, Any], limit: int) -> None:
    """Refuse parameters whose JSON is over ``limit`` bytes (they are stored with every run
    and shown in every listing): large data goes in files or upstream outputs."""
    size = len(json.dumps(parameters, default=str).encode())
    if size > limit:
        raise UsageError(
            f"the run's parameters are {size:,} bytes of JSON, over the limit of {limit:,} "
            "(ARGOSY_MAX_PARAMETER_BYTES); pass large data as a file path parameter or as an "
            "upstream step's output instead",
            code="parameters_too_large",
        )


def queue_run(
    session: Session,
    version: PipelineVersion,
    parameters: dict[str, Any],
    user: str,
    *,
    fail_fast: bool = False,
    no_cache: bool = False,
    retry_of: str | None = None,
    reproduce_of: str | None = None,
    schedule_id: str | None = None,
    queue: str | None = SERVER_QUEUE,
    cwd: str | None = None,
    files: dict[str, Any] | None = None,
    max_parameter_bytes: int | None = None,
) -> Run:
    """A new ``pending`` run of ``version``, parameters checked and defaulted.

    Raises ``UsageError`` (unknown, missing, mistyped or too large parameters) before
    writing anything. ``cwd`` is where relative path parameters are read from (local runs);
    ``files`` maps a path parameter's value to the blob uploaded for it (server runs).
    """
    spec = spec_of(version)
    bound = bind_parameters(spec, {}, parameters)
    if max_parameter_bytes is not None:
        check_parameter_size(bound, max_parameter_bytes)
    static, _ = Planner(spec, bound).static()
    nodes = [(n.path, n.step or n.pipeline or "") for n in static]
    options: dict[str, Any] = {"fail_fast": fail_fast, "no_cache": no_cache, "retry_of": retry_of}
    if reproduce_of is not None:
        options["reproduce_of"] = reproduce_of
    if cwd is not None:
        options["cwd"] = cwd
    if files:
        options["files"] = files
    return q.create_run(
        session, version.tenant, spec, nodes, bound, options, user,
        version=version, queue=queue, retry_of=retry_of, schedule_id=schedule_id,
    )  # fmt: skip


def retry_run(
    session: Session, original: Run, user: str, *, queue: str | None = SERVER_QUEUE
) -> Run:
    """A new run of the same version and parameters, linked by ``retry_of``; its tasks reuse
    the outputs of the original's succeeded tasks whose inputs are unchanged."""
    version = session.get_one(PipelineVersion, original.pipeline_version_id)
    options = original.options or {}
    return queue_run(
        session, version, dict(original.parameters), user,
        fail_fast=bool(options.get("fail_fast")), no_cache=bool(options.get("no_cache")),
        retry_of=original.id, queue=queue, cwd=options.get("cwd"), files=options.get("files"),
    )  # fmt: skip


def reproduce_run(
    session: Session, original: Run, user: str, *, queue: str | None = SERVER_QUEUE
) -> Run:
    """A new run of the same version and parameters with caching off, whose imported input
    files are the blobs the original recorded (``reproduce_of``)."""
    version = session.get_one(PipelineVersion, original.pipeline_version_id)
    options = original.options or {}
    return queue_run(
        session, version, dict(original.parameters), user, no_cache=True,
        reproduce_of=original.id, queue=queue, cwd=options.get("cwd"), files=options.get("files"),
    )  # fmt: skip
