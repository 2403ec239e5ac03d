"""Sending a run's local files to a server: which parameters name files, and the resumable,
verified upload of each (:mod:`argosy.service.uploads` is the server's side).

A parameter is a file parameter when a step's ``Path`` input is bound to it (directly or
through a sub-pipeline's parameter) and its value names a file or folder here. A folder is
sent as a tar, the format step inputs read folders in. Bytes already on the server are not
sent again; an interrupted upload continues from what the server has.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argosy import api
from argosy.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from argosy.client.client import Client
    from argosy.spec.models import DagSpec, PipelineSpec

CHUNK_BYTES = 8 * 1024 * 1024


def path_parameters(spec: PipelineSpec) -> set[str]:
    """The pipeline parameters that reach a step's ``Path`` input."""
    from argosy.spec.models import ParameterInput

    def walk(dag: DagSpec) -> set[str]:
        found: set[str] = set()
        for node in dag.nodes:
            for key, binding in node.inputs.items():
                if not isinstance(binding, ParameterInput):
                    continue
                if node.step is not None:
                    declared = spec.steps[node.step].inputs.get(key)
                    if declared is not None and declared.type == "path":
                        found.add(binding.parameter)
                elif node.pipeline is not None and key in walk(spec.pipelines[node.pipeline].root):
                    found.add(binding.parameter)
        return found

    return walk(spec.root)


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while data := fh.read(CHUNK_BYTES):
            digest.update(data)
            size += len(data)
    return digest.hexdigest(), size


def upload_file(client: Client, path: Path, fmt: str, filename: str | None) -> api.Upload:
    """Upload one file (resuming from what the server has), verified at the end."""
    sha, size = _sha256(path)
    body = {"sha256": sha, "size": size, "format": fmt, "filename": filename}
    upload = client.start_upload(api.UploadCreate.model_validate(body))
    with path.open("rb") as fh:
        while not upload.completed and upload.received < upload.size:
            fh.seek(upload.received)
            data = fh.read(CHUNK_BYTES)
            try:
                upload = client.put_upload_chunk(upload.id, upload.received, data)
            except ConflictError:  # another offset is due (a retried chunk): ask, continue
                upload = client.get_upload(upload.id)
    if not upload.completed:
        upload = client.complete_upload(upload.id)
    return upload


def upload_path(client: Client, path: Path) -> api.Upload:
    """A file as it is, a folder as the tar step inputs read."""
    if path.is_file():
        return upload_file(client, path, "file", path.name)
    from argosy.runtime.formats import write_value

    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "folder.tar"
        write_value(path, "path", None, tar, what=f"folder {str(path)!r}")
        return upload_file(client, tar, "dir", None)


def upload_path_parameters(
    client: Client, spec: PipelineSpec, parameters: Mapping[str, Any]
) -> dict[str, api.UploadedPath]:
    """Upload every file parameter's file; the run request names them by their value."""
    files: dict[str, api.UploadedPath] = {}
    for name in sorted(path_parameters(spec)):
        value = parameters.get(name)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise UsageError(
                f"parameter {name!r} names {value!r}, which does not exist here; pass an "
                "existing file or folder (it is uploaded to the server for the run)"
            )
        done = upload_path(client, path)
        files[value] = api.UploadedPath.model_validate(
            {"sha256": done.sha256, "format": done.format, "filename": done.filename}
        )
    return files
