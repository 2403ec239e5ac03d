"""Artifacts: a run's outputs, one artifact by reference, its bytes, and its lineage.

A reference is an artifact id, a unique prefix of one, or ``RUN/NODE/OUTPUT`` (``RUN/NODE``
when the node has one output); the node path may itself hold slashes (``prep/clean``).
"""

from __future__ import annotations

from typing import BinaryIO, Literal

from argosy import api
from argosy.errors import NotFoundError
from argosy.service import lineage
from argosy.service.context import ServiceContext
from argosy.service.documents import artifact_document
from argosy.stores.metadata import runs as q


def list_artifacts(ctx: ServiceContext, run_ref: str) -> list[api.Artifact]:
    with ctx.metadata.session() as session:
        run = q.get_run(session, ctx.tenant, run_ref)
        return [artifact_document(a, ctx.store) for a in q.artifacts_of(session, run.id)]


def get_artifact(ctx: ServiceContext, ref: str) -> api.Artifact:
    with ctx.metadata.session() as session:
        return artifact_document(q.get_artifact(session, ctx.tenant, ref), ctx.store)


def open_content(ctx: ServiceContext, ref: str) -> tuple[api.Artifact, BinaryIO]:
    """The artifact and a stream of its bytes (decrypted with encryption at rest; the caller
    closes it). ``NotFoundError`` (``artifact_content_missing``) when the bytes are gone."""
    with ctx.metadata.session() as session:
        art = artifact_document(q.get_artifact(session, ctx.tenant, ref))
    try:
        return art, ctx.store.open_blob(art.sha256)
    except FileNotFoundError:
        from argosy.stores.archive import archive_key, archived_error

        if ctx.store.backend.exists(archive_key(ctx.store.prefix, art.sha256)):
            raise archived_error(ctx.tenant, art.sha256) from None  # 409, how to get it back
        raise NotFoundError(
            f"the bytes of artifact {art.id} (sha256:{art.sha256}) are missing from the store; "
            "re-run the producing task (with --no-cache) or restore the store from a backup",
            code="artifact_content_missing",
        ) from None


def get_lineage(
    ctx: ServiceContext, ref: str, direction: Literal["up", "down"] = "up", depth: int = 64
) -> api.Lineage:
    """Where the artifact came from (``up``) or what was made from it (``down``)."""
    with ctx.metadata.session() as session:
        art = q.get_artifact(session, ctx.tenant, ref)
        walk = lineage.upstream if direction == "up" else lineage.downstream
        return api.Lineage(
            direction=direction, artifact=walk(session, ctx.tenant, art, depth=depth)
        )
