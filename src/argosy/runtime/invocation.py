"""The contract between the engine and a task's process: an invocation in, a result record out.

Two processes meet here. The engine builds an :class:`Invocation`, the executor completes it
(scratch folder, data keys) and hands it to the launcher as JSON (a file, or stdin); the
launcher writes a :class:`ResultRecord` to the artifact store — never the metadata database,
so it survives an engine crash and the launcher needs no database credentials — and the engine
reads it back when it settles or adopts the attempt. When the store refuses it (a full disk:
the same disk as the launcher's log), the launcher writes a compact failure record, one JSON
line, to ``status_fd`` instead: a pipe the local executor reads, which needs no disk.

Both documents carry a ``version``. A reader refuses a version it does not know, saying so,
rather than misreading it (a task process of another Argosy release: a container image, a
pod). A document without one is version 1, as written before the field existed.

Plain dataclasses and ``json`` only: the launcher imports this in every task's process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from argosy.errors import ExecutionError

INVOCATION_VERSION = 1
RESULT_VERSION = 1
STATUS_LIMIT = 8 * 1024  # characters of error in a record sent on ``status_fd``
SUCCEEDED = "succeeded"
FAILED = "failed"


def _version(doc: Mapping[str, Any], known: int, what: str) -> int:
    version = doc.get("version", 1)
    if version != known:
        raise ExecutionError(
            f"{what} version {version!r} is not known to this Argosy (it reads version "
            f"{known}): run the task with the same Argosy release as the engine that started it"
        )
    return known


@dataclass(frozen=True)
class StoreAccess:
    """How the task's process opens the artifact store: a URL (folder path, ``s3://``,
    ``argosy-task+http://``) and the backend's options (a task token on a server)."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StoreAccess:
        return cls(url=doc["url"], options=dict(doc.get("options") or {}))


@dataclass(frozen=True)
class CodeRef:
    """A Python step's code package: its blob and the import roots inside it."""

    sha256: str
    paths: list[str]


@dataclass(frozen=True)
class Invocation:
    """Everything a task's process needs to run one attempt of one step.

    ``step`` is the step spec as JSON (the launcher does not load the pydantic models);
    ``inputs`` maps each input name to ``{"value": v}`` or ``{"artifact": {"sha256",
    "format", "type", "filename"?, "tenant"?, "id"?}}``. ``scratch`` and ``encryption`` (the
    tenant's unwrapped data keys, never the key-encryption key) are added by the executor, and
    so is ``status_fd`` where it has one: an inherited pipe for the result record when the
    store cannot take it (see :meth:`ResultRecord.compact`).
    """

    tenant: str
    run_id: str
    node_path: str
    attempt: int
    attempt_id: str
    store: StoreAccess
    cache_dir: str
    step: dict[str, Any]
    code: CodeRef | None
    inputs: dict[str, dict[str, Any]]
    result_key: str
    scratch: str | None = None
    encryption: dict[str, Any] | None = None
    status_fd: int | None = None
    version: int = INVOCATION_VERSION

    @property
    def kind(self) -> str:
        """The step's implementation kind: ``python`` or ``container``."""
        return str(self.step["implementation"]["kind"])

    def completed(self, **changes: Any) -> Invocation:
        """A copy with the executor's (or launcher's) additions: ``scratch``, ``cache_dir`` ..."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": self.version,
            "tenant": self.tenant,
            "run_id": self.run_id,
            "node_path": self.node_path,
            "attempt": self.attempt,
            "attempt_id": self.attempt_id,
            "store": {"url": self.store.url, "options": self.store.options},
            "cache_dir": self.cache_dir,
            "step": self.step,
            "code": {"sha256": self.code.sha256, "paths": self.code.paths} if self.code else None,
            "inputs": self.inputs,
            "result_key": self.result_key,
        }
        if self.scratch is not None:
            doc["scratch"] = self.scratch
        if self.encryption is not None:
            doc["encryption"] = self.encryption
        if self.status_fd is not None:
            doc["status_fd"] = self.status_fd
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Invocation:
        code = doc.get("code")
        return cls(
            version=_version(doc, INVOCATION_VERSION, "invocation"),
            tenant=doc["tenant"],
            run_id=doc["run_id"],
            node_path=doc["node_path"],
            attempt=int(doc["attempt"]),
            attempt_id=doc["attempt_id"],
            store=StoreAccess.from_json(doc["store"]),
            cache_dir=doc["cache_dir"],
            step=dict(doc["step"]),
            code=CodeRef(code["sha256"], list(code["paths"])) if code else None,
            inputs={name: dict(source) for name, source in doc["inputs"].items()},
            result_key=doc["result_key"],
            scratch=doc.get("scratch"),
            encryption=doc.get("encryption"),
            status_fd=doc.get("status_fd"),
        )


@dataclass(frozen=True)
class OutputRecord:
    """One stored output: its blob, how it was written, and (small JSON values) its text."""

    sha256: str
    size: int
    type: str
    format: str
    serializer: str | None = None
    filename: str | None = None
    json_text: str | None = None  # the value as JSON text, when it is small JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256, "size": self.size, "type": self.type, "format": self.format,
            "serializer": self.serializer, "filename": self.filename, "json": self.json_text,
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> OutputRecord:
        return cls(
            sha256=doc["sha256"], size=int(doc["size"]), type=doc["type"], format=doc["format"],
            serializer=doc.get("serializer"), filename=doc.get("filename"),
            json_text=doc.get("json"),
        )  # fmt: skip


@dataclass(frozen=True)
class ResultRecord:
    """What became of an attempt, in the launcher's words (times are UTC ISO 8601)."""

    attempt_id: str
    attempt: int
    status: str  # SUCCEEDED or FAILED
    started_at: str | None = None
    finished_at: str | None = None
    outputs: dict[str, OutputRecord] = field(default_factory=dict)
    reason: str | None = None  # why it failed: a Reason value (exception, output_error ...)
    error: str | None = None
    peak_memory: int | None = None  # bytes, the launcher's own resident high-water mark
    cpu_time: float | None = None  # seconds of CPU (user + system): the launcher and its children
    version: int = RESULT_VERSION

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def compact(self, why: str, limit: int = STATUS_LIMIT) -> ResultRecord:
        """The failure record sent on ``status_fd`` when this one could not be stored
        (``why``): no outputs (the engine accepts none it cannot read back), the error cut to
        fit ``limit`` characters, so one write into an empty pipe always takes it whole."""
        reason, error = self.reason, self.error
        if self.succeeded:  # its outputs are stored, but no record names them
            reason, error = "output_error", why
        if error is not None and len(error) > limit:
            error = error[: limit - 14] + " [...cut here]"
        return replace(self, status=FAILED, outputs={}, reason=reason, error=error)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "attempt_id": self.attempt_id,
            "attempt": self.attempt,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outputs": {name: out.to_json() for name, out in self.outputs.items()},
            "reason": self.reason,
            "error": self.error,
            "peak_memory": self.peak_memory,
            "cpu_time": self.cpu_time,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ResultRecord:
        return cls(
            version=_version(doc, RESULT_VERSION, "result record"),
            attempt_id=doc["attempt_id"],
            attempt=int(doc["attempt"]),
            status=doc["status"],
            started_at=doc.get("started_at"),
            finished_at=doc.get("finished_at"),
            outputs={k: OutputRecord.from_json(v) for k, v in (doc.get("outputs") or {}).items()},
            reason=doc.get("reason"),
            error=doc.get("error"),
            peak_memory=doc.get("peak_memory"),
            cpu_time=doc.get("cpu_time"),
        )
