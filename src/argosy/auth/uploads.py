"""Accepted outputs: a task's outputs are accepted only if the task can prove it holds them.

A task names its outputs by sha256 in its result record. Without a check, a step could name a
blob of its tenant that it never wrote — another run's model, a code package — and its
downstream task would then be granted it, around the per-attempt least-privilege rule. So:

- the task store records every blob an attempt uploads (:func:`remember_upload`, the
  ``attempt_uploads`` table; while the database is unreachable, in this process until it is
  back), after checking that the bytes hash to their key (decrypted first when the tenant's
  artifacts are encrypted);
- the task store tells an attempt a blob exists only if the attempt uploaded it or was granted
  it (its inputs, their collections' elements, its code and environment): otherwise the task
  uploads the bytes even when the blob is already stored — proving it has them — and the store
  checks the hash and keeps the copy it had (:func:`may_know`);
- when an attempt succeeds, the engine accepts its outputs only if each one was uploaded by
  that attempt or granted to it as an input (:func:`refused_outputs`); otherwise the attempt
  fails with ``output_error`` and nothing of it is registered.

A future direct-to-object-store upload (a presigned URL) must be issued per attempt for the
exact key, with a required checksum, and recorded here the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from argosy.ids import new_id
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import AttemptUpload


def record_upload(
    session: Session, *, tenant: str, attempt_id: str, sha256: str, size: int, now: datetime
) -> None:
    """Record that ``attempt_id`` uploaded (and so holds) the blob ``sha256``."""
    found = session.scalar(
        select(AttemptUpload.id).where(
            AttemptUpload.attempt_id == attempt_id, AttemptUpload.sha256 == sha256
        )
    )
    if found is not None:
        return
    try:
        with session.begin_nested():
            session.add(AttemptUpload(
                id=new_id(), tenant=tenant, created_at=now, created_by=f"task:{attempt_id}",
                attempt_id=attempt_id, sha256=sha256, size=size,
            ))  # fmt: skip
    except IntegrityError:
        pass  # the same upload, recorded by a concurrent request


class PendingUploads:
    """Uploads proved while the metadata database could not record them, kept in this process
    until it can. An attempt's task store and its engine are one process (a task token is
    valid only on the instance that started its attempt), so what is pending here is known
    where the attempt's outputs are accepted."""

    def __init__(self) -> None:
        self._by_attempt: dict[str, dict[str, tuple[str, int]]] = {}
        self._lock = threading.Lock()

    def add(self, tenant: str, attempt_id: str, sha256: str, size: int) -> None:
        with self._lock:
            self._by_attempt.setdefault(attempt_id, {})[sha256] = (tenant, size)

    def of(self, attempt_id: str) -> dict[str, tuple[str, int]]:
        with self._lock:
            return dict(self._by_attempt.get(attempt_id, {}))

    def recorded(self, attempt_id: str) -> None:
        with self._lock:
            self._by_attempt.pop(attempt_id, None)


pending = PendingUploads()
"""This process's uploads waiting for the database (see :class:`PendingUploads`)."""


def remember_upload(
    metadata: MetadataStore, *, tenant: str, attempt_id: str, sha256: str, size: int
) -> None:
    """Record an upload now, or — the database unreachable — keep it pending in this process,
    so a task can store its outputs through a database outage."""
    try:
        with metadata.session() as session:
            record_upload(session, tenant=tenant, attempt_id=attempt_id, sha256=sha256,
                          size=size, now=datetime.now(UTC))  # fmt: skip
    except SQLAlchemyError:
        pending.add(tenant, attempt_id, sha256, size)


def uploaded(session: Session, attempt_id: str) -> set[str]:
    """The blobs ``attempt_id`` uploaded."""
    return set(
        session.scalars(select(AttemptUpload.sha256).where(AttemptUpload.attempt_id == attempt_id))
    )


def input_blobs(
    inputs: Mapping[str, Any], read_blob: Callable[[str], bytes] | None = None
) -> set[str]:
    """The blobs an attempt was granted through its inputs: each input artifact, and (given
    ``read_blob``) the elements of input collections."""
    found: set[str] = set()
    for value in inputs.values():
        art = value.get("artifact") if isinstance(value, Mapping) else None
        if not isinstance(art, Mapping):
            continue
        found.add(str(art["sha256"]))
        if art.get("format") == "collection" and read_blob is not None:
            found.update(_elements(read_blob(str(art["sha256"]))))
    return found


def _elements(data: bytes) -> Iterable[str]:
    for element in json.loads(data):
        if isinstance(element, Mapping) and element.get("sha256"):
            yield str(element["sha256"])


def refused_outputs(
    metadata: MetadataStore,
    attempt_id: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    read_blob: Callable[[str], bytes],
) -> str | None:
    """Why the outputs of ``attempt_id`` cannot be accepted (None: they can). ``outputs``: name
    -> an object with ``sha256`` (the result record's outputs)."""
    wanted = {name: str(out.sha256) for name, out in outputs.items()}
    if not wanted:
        return None
    waiting = pending.of(attempt_id)
    with metadata.session() as session:
        for sha, (tenant, size) in waiting.items():  # recorded now that the database is back
            record_upload(session, tenant=tenant, attempt_id=attempt_id, sha256=sha, size=size,
                          now=datetime.now(UTC))  # fmt: skip
        held = uploaded(session, attempt_id) | set(waiting)
    pending.recorded(attempt_id)
    missing = {n: s for n, s in wanted.items() if s not in held}
    if missing:
        held |= input_blobs(inputs, read_blob)
        missing = {n: s for n, s in missing.items() if s not in held}
    if not missing:
        return None
    name, sha = sorted(missing.items())[0]
    return (
        f"output {name!r} names blob sha256:{sha}, which this attempt neither uploaded nor was "
        "given as an input: an output must be written by its task (refused, nothing registered)"
    )


def may_know(reads: set[str], written: set[str], sha256: str) -> bool:
    """Whether the task store may tell an attempt that blob ``sha256`` exists: only a blob it
    uploaded or was granted (otherwise it must upload the bytes, proving it holds them)."""
    return sha256 in reads or sha256 in written
