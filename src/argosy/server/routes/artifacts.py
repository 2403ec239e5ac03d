"""Artifacts: a run's outputs, one artifact's record, and its bytes.

``GET .../artifacts/{id}/content`` streams the blob from the tenant's store (a local folder or
S3) in 1 MiB chunks, so memory stays flat whatever the size. A single ``Range: bytes=a-b``
(also ``a-`` and ``-n``) answers ``206`` with ``Content-Range``, so an interrupted download can
be resumed; a range outside the content is a ``416``. The ``ETag`` is the sha256, which the
client checks after the download.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

from fastapi import Header, Path, Query
from fastapi.responses import StreamingResponse

from argosy import api
from argosy.auth.policy import Action
from argosy.server.identity import Allowed, ContextDep, Principal, TenantDep
from argosy.server.problems import ApiProblem, problem_responses
from argosy.server.routes import RunIdPath, service_context, tenant_router
from argosy.service import artifacts

router = tenant_router("artifacts")

CHUNK = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
EXTENSIONS = {"json": ".json", "parquet": ".parquet", "npy": ".npy", "text": ".txt"}

ArtifactIdPath = Annotated[
    str,
    Path(
        min_length=4,
        max_length=26,
        pattern=r"^[0-9A-Za-z]+$",
        description="an artifact id, or a unique prefix of it (at least 4 characters)",
    ),
]


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` range, None to send everything.

    A malformed header or several ranges are ignored (the whole content is sent, as RFC 9110
    allows); a range that starts past the end raises a 416 problem.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix: the last n bytes
        n = int(last_text)
        if n == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(0, size - n), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # invalid: ignored
    if first >= size:
        raise _unsatisfiable(header, size)
    return first, min(last, size - 1)


def _unsatisfiable(header: str, size: int) -> ApiProblem:
    return ApiProblem(
        416,
        f"range {header!r} is outside the content ({size} bytes); ask for bytes 0-{max(size - 1, 0)}",
        code="range_not_satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
    )


def _chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``stream`` in chunks; the stream is closed at the end (or on abort)."""
    try:
        left = length
        while left > 0:
            chunk = stream.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        stream.close()


def _filename(node_path: str, output: str, fmt: str) -> str:
    base = f"{node_path}-{output}".replace("/", "_")
    return re.sub(r"[^A-Za-z0-9._\[\]-]", "_", base) + EXTENSIONS.get(fmt, "")


@router.get(
    "/runs/{run_id}/artifacts",
    response_model=list[api.Artifact],
    summary="List a run's artifacts",
    responses=problem_responses(404),
)
def list_run_artifacts(
    run_id: RunIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.ARTIFACT_READ)],
    context: ContextDep,
) -> list[api.Artifact]:
    return artifacts.list_artifacts(service_context(context, tenant, principal), run_id)


@router.get(
    "/runs/{run_id}/artifacts/{output_path:path}",
    response_model=api.Artifact,
    summary="Get a run's artifact by node path and output",
    responses=problem_responses(404),
)
def get_run_artifact(
    run_id: RunIdPath,
    output_path: Annotated[
        str,
        Path(
            max_length=1024,
            description="`NODE/OUTPUT` (the node path may hold slashes), or `NODE` when the "
            "node has one output",
        ),
    ],
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.ARTIFACT_READ)],
    context: ContextDep,
) -> api.Artifact:
    """The artifact ``RUN/NODE/OUTPUT`` names (what ``argosy artifacts get`` takes)."""
    return artifacts.get_artifact(
        service_context(context, tenant, principal), f"{run_id}/{output_path}"
    )


@router.get(
    "/artifacts/{artifact_id}",
    response_model=api.Artifact,
    summary="Get an artifact",
    responses=problem_responses(404),
)
def get_artifact(
    artifact_id: ArtifactIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.ARTIFACT_READ)],
    context: ContextDep,
) -> api.Artifact:
    return artifacts.get_artifact(service_context(context, tenant, principal), artifact_id)


@router.get(
    "/artifacts/{artifact_id}/lineage",
    response_model=api.Lineage,
    summary="Get an artifact's lineage",
    responses=problem_responses(404),
)
def get_lineage(
    artifact_id: ArtifactIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.ARTIFACT_READ)],
    context: ContextDep,
    direction: Annotated[
        Literal["up", "down"],
        Query(description="up: what it came from; down: what was made from it"),
    ] = "up",
    depth: Annotated[int, Query(ge=0, le=64, description="how many tasks deep to follow")] = 64,
) -> api.Lineage:
    """The tree of artifacts, tasks (code, git, packages), files and values behind an
    artifact, or made from it."""
    return artifacts.get_lineage(
        service_context(context, tenant, principal), artifact_id, direction, depth
    )


@router.get(
    "/artifacts/{artifact_id}/content",
    summary="Download an artifact's bytes",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the whole content",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        206: {
            "description": "the requested byte range (`Content-Range` says which)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **problem_responses(404, 416),
    },
)
def get_artifact_content(
    artifact_id: ArtifactIdPath,
    tenant: TenantDep,
    principal: Annotated[Principal, Allowed(Action.ARTIFACT_READ)],
    context: ContextDep,
    range_header: Annotated[
        str | None,
        Header(alias="Range", max_length=200, description="one range: `bytes=first-last`"),
    ] = None,
) -> StreamingResponse:
    """The artifact's bytes (``Accept-Ranges: bytes``; ``ETag``: its sha256)."""
    art, stream = artifacts.open_content(service_context(context, tenant, principal), artifact_id)
    sha256, size = art.sha256, art.size
    name = _filename(art.node_path, art.output_name, art.format)
    try:
        span = parse_range(range_header, size)
    except BaseException:
        stream.close()
        raise
    first, last = span if span is not None else (0, size - 1)
    length = max(0, last - first + 1)
    if first:
        try:
            stream.seek(first)
        except BaseException:
            stream.close()
            raise
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{sha256}"',
        "Content-Length": str(length),
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(
        _chunks(stream, length),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )
