"""Artifact previews: what the web UI shows of an artifact's content, read without loading it
whole.

- a table (Parquet: data frames, Arrow tables): the schema and the first rows, read from the
  file's footer and its first row group only (a local store's file is opened in place; from
  S3 or an encrypted store, tables up to :data:`BUFFERED_TABLE_BYTES` are read into memory,
  larger ones are not previewed: download them);
- metrics and small JSON: the value; larger JSON, text files: the first
  :data:`TEXT_BYTES` as text;
- images (PNG, JPEG, GIF, WebP, recognised by their first bytes, never by a name): the media
  type; the UI fetches the bytes from the artifact's image route;
- a NumPy array: its shape and dtype, from the ``.npy`` header; anything else: a note.

Every value shown is data, never markup: the UI escapes it.
"""

from __future__ import annotations

import io
import json
from typing import Any, BinaryIO

from argosy import api
from argosy.service.context import ServiceContext
from argosy.service.documents import artifact_value
from argosy.stores.metadata import runs as q
from argosy.stores.metadata.tables import Artifact

TABLE_ROWS = 20
TEXT_BYTES = 64 * 1024
BUFFERED_TABLE_BYTES = 64 * 1024 * 1024
CELL_CHARS = 200
IMAGE_TYPES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(head: bytes) -> str | None:
    """The media type of an image by its first bytes (PNG, JPEG, GIF, WebP), else None."""
    for magic, media in IMAGE_TYPES:
        if head.startswith(magic):
            return media
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _head(ctx: ServiceContext, a: Artifact, n: int) -> bytes:
    with ctx.store.open_blob(a.sha256) as stream:
        return stream.read(n)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _table(ctx: ServiceContext, a: Artifact, rows: int) -> api.ArtifactPreview:
    import pyarrow.parquet as pq

    local = ctx.store.backend.local_path(ctx.store.blob_key(a.sha256))
    source: str | BinaryIO
    if local is not None and ctx.store.cipher is None:
        source = str(local)
    elif a.size <= BUFFERED_TABLE_BYTES:
        with ctx.store.open_blob(a.sha256) as stream:
            source = io.BytesIO(stream.read())
    else:
        return api.ArtifactPreview(
            kind="binary", note=f"a Parquet table of {a.size} bytes in a remote or encrypted "
            "store: too large to preview here; download it",
        )  # fmt: skip
    parquet = pq.ParquetFile(source)
    schema = parquet.schema_arrow
    columns = [{"name": f.name, "type": str(f.type)} for f in schema]
    head: list[list[Any]] = []
    if parquet.metadata.num_rows and parquet.num_row_groups:
        batch = next(parquet.iter_batches(batch_size=rows, row_groups=[0]), None)
        if batch is not None:
            data = batch.to_pylist()
            head = [[_cell(row.get(c["name"])) for c in columns] for row in data[:rows]]
    total = parquet.metadata.num_rows
    return api.ArtifactPreview(
        kind="table", columns=columns, rows=head, num_rows=total, truncated=total > len(head)
    )


def _npy(ctx: ServiceContext, a: Artifact) -> api.ArtifactPreview:
    import numpy as np

    with ctx.store.open_blob(a.sha256) as stream:
        version = np.lib.format.read_magic(stream)
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = reader(stream)
    return api.ArtifactPreview(
        kind="binary", note=f"a NumPy array of shape {tuple(shape)} and dtype {dtype}"
        f"{' (Fortran order)' if fortran else ''}; download it to load it",
    )  # fmt: skip


def _text_or_binary(ctx: ServiceContext, a: Artifact) -> api.ArtifactPreview:
    head = _head(ctx, a, TEXT_BYTES + 1)
    media = image_type(head[:16])
    if media is not None:
        return api.ArtifactPreview(kind="image", media_type=media)
    sample = head[:TEXT_BYTES]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # not just a character cut at the end
            return api.ArtifactPreview(kind="binary", note=f"{a.size} bytes of binary data")
        text = sample[: exc.start].decode("utf-8")
    if "\x00" in text:
        return api.ArtifactPreview(kind="binary", note=f"{a.size} bytes of binary data")
    return api.ArtifactPreview(kind="text", text=text, truncated=len(head) > TEXT_BYTES)


def preview(ctx: ServiceContext, ref: str, *, rows: int = TABLE_ROWS) -> api.ArtifactPreview:
    """A preview of the artifact's content (see the module's documentation)."""
    with ctx.metadata.session() as session:
        a = q.get_artifact(session, ctx.tenant, ref)
        session.expunge(a)
    if a.type == "metrics":
        return api.ArtifactPreview(kind="metrics", value=artifact_value(a, ctx.store))
    if a.format in ("json", "collection"):
        value = artifact_value(a, ctx.store)
        if value is not None or a.size <= 4:
            return api.ArtifactPreview(kind="json", value=value)
        shown = _text_or_binary(ctx, a)
        return shown.model_copy(update={"note": "large JSON: the first bytes as text"})
    if a.format == "parquet":
        return _table(ctx, a, rows)
    if a.format == "npy":
        return _npy(ctx, a)
    if a.format in ("joblib", "pickle"):
        return api.ArtifactPreview(
            kind="binary", note=f"a {a.format} object ({a.type}): never opened here, as loading "
            "it runs code; download it and load it where you trust it",
        )  # fmt: skip
    if a.format == "dir":
        return api.ArtifactPreview(kind="binary", note="a folder (a tar archive): download it")
    return _text_or_binary(ctx, a)


def image(ctx: ServiceContext, ref: str) -> tuple[str, BinaryIO]:
    """(media type, stream) of an artifact that is an image; ``NotFoundError`` otherwise."""
    from argosy.errors import NotFoundError

    with ctx.metadata.session() as session:
        a = q.get_artifact(session, ctx.tenant, ref)
        session.expunge(a)
    media = image_type(_head(ctx, a, 16)) if a.format in ("file", "bytes") else None
    if media is None:
        raise NotFoundError(f"artifact {a.id} is not an image (PNG, JPEG, GIF or WebP)")
    return media, ctx.store.open_blob(a.sha256)


def json_text(value: Any) -> str:
    """A value as indented JSON text (for display)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
