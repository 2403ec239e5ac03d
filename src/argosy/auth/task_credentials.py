"""Least-privilege credentials of task processes on a server.

A task process never receives the platform's database or object-store credentials. Its
engine mints a short-lived **task token** for the attempt, and the task reaches the artifact
store only through the server's task-store endpoint (``/api/v1/task-store``), which allows
exactly:

- reading the blobs of the attempt's declared inputs (the upstream artifacts its task was
  resolved with, the elements of an input collection, its code package and environment
  manifest) and blobs it wrote itself;
- writing new blobs (content-addressed: the key must be the bytes' sha256) and records under
  its own attempt prefix (``runs/RUN/NODE/N/``: result, logs);
- nothing in any other tenant, run, task or attempt.

Anything else is refused (403) and audited. The token is an HMAC-signed claim set
(attempt, tenant, run, node path, attempt number, expiry) under a key that lives only in the
memory of the server instance that started the attempt — the one the task talks to — so a
token outlives neither its attempt's deadline nor that instance. A deployment whose tasks
reach the server through a load balancer (Kubernetes: pods behind the Service, re-adopted
by another instance after a restart) shares one key instead (``ARGOSY_TASK_TOKEN_KEY``); an
instance that did not start the attempt then rebuilds its grant from the database.

**A task token is void the moment its attempt ends** (:func:`attempt_is_live`), checked on every
request, not only at its expiry: its attempt must still have a grant on this instance and still
be ``running`` in the metadata database. Once the attempt has settled (succeeded, failed,
cancelled) nothing of it can be read or written with its token any more, so its records are
immutable from then on. When the database cannot be reached the grant alone decides (an
attempt cannot settle without the database either), so tasks keep working through an outage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from argosy.errors import ArgosyError
from argosy.states import AttemptState
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Attempt

log = logging.getLogger("argosy.server")


class TaskTokenError(ArgosyError):
    """A task token that is malformed, forged or expired."""


@dataclass(frozen=True)
class TaskClaims:
    attempt_id: str
    tenant: str
    run_id: str
    node_path: str
    number: int
    expires: float

    @property
    def record_prefix(self) -> str:
        """The keys this attempt may write and read records under."""
        return f"tenants/{self.tenant}/runs/{self.run_id}/{self.node_path}/{self.number}/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TaskTokens:
    """Mints and checks task tokens with a key held only in this process — or, with
    ``ARGOSY_TASK_TOKEN_KEY``, one key the deployment's instances share (``shared``): then any
    instance serves a task's requests (pods behind one Service; a pod adopted after a restart)."""

    def __init__(self, key: bytes | None = None, *, shared: bool = False) -> None:
        self._key = key or secrets.token_bytes(32)
        self.shared = shared and key is not None

    @classmethod
    def of_deployment(cls, key_text: str | None) -> TaskTokens:
        """The shared key given in base64 (32 bytes or more), or a key of this process."""
        if not key_text:
            return cls()
        try:
            key = base64.b64decode(key_text, validate=True)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise ArgosyError(
                "ARGOSY_TASK_TOKEN_KEY must be base64 of at least 32 random bytes: make one "
                "with 'head -c 32 /dev/urandom | base64'"
            )
        return cls(key, shared=True)

    def mint(self, claims: TaskClaims) -> str:
        body = json.dumps(
            {"a": claims.attempt_id, "t": claims.tenant, "r": claims.run_id,
             "n": claims.node_path, "k": claims.number, "e": claims.expires},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return f"argosy-task.{_b64(body)}.{_b64(mac)}"

    def verify(self, token: str, *, now: float | None = None) -> TaskClaims:
        try:
            prefix, body_text, mac_text = token.split(".")
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            raise TaskTokenError("malformed task token") from None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if prefix != "argosy-task" or not hmac.compare_digest(mac, expected):
            raise TaskTokenError("task token not issued by this server instance")
        doc = json.loads(body)
        claims = TaskClaims(doc["a"], doc["t"], doc["r"], doc["n"], int(doc["k"]), float(doc["e"]))
        if (now if now is not None else time.time()) >= claims.expires:
            raise TaskTokenError(f"task token of attempt {claims.attempt_id} has expired")
        return claims


@dataclass
class TaskGrant:
    """What one attempt may read: its inputs' blobs (an input collection's elements once it is
    read), its code package and environment manifest, and the blobs it wrote itself."""

    run_id: str
    reads: set[str]
    collections: list[str]
    written: set[str] = field(default_factory=set)


class TaskGrants:
    """The grants of the attempts this instance started, kept in memory from the moment the
    attempt starts: checking access needs no database (tasks keep working through an outage)."""

    def __init__(self) -> None:
        self._grants: dict[str, TaskGrant] = {}
        self._lock = threading.Lock()

    def add(self, attempt_id: str, run_id: str, inputs: dict[str, object],
            digests: Iterable[str | None]) -> None:  # fmt: skip
        reads: set[str] = set()
        collections: list[str] = []
        for value in inputs.values():
            art = value.get("artifact") if isinstance(value, dict) else None
            if isinstance(art, dict):
                reads.add(str(art["sha256"]))
                if art.get("format") == "collection":
                    collections.append(str(art["sha256"]))
        reads.update(d.removeprefix("sha256:") for d in digests if d)
        with self._lock:
            self._grants[attempt_id] = TaskGrant(run_id, reads, collections)

    def get(self, attempt_id: str) -> TaskGrant | None:
        with self._lock:
            return self._grants.get(attempt_id)

    def end(self, attempt_id: str) -> None:
        """The attempt has settled: its grant (and with it its token) is over."""
        with self._lock:
            self._grants.pop(attempt_id, None)

    def revoke_run(self, run_id: str) -> None:
        """The run's engine stopped here: its attempts' grants end with it."""
        with self._lock:
            for attempt_id in [a for a, g in self._grants.items() if g.run_id == run_id]:
                del self._grants[attempt_id]


def attempt_is_live(
    grants: TaskGrants, metadata: MetadataStore, attempt_id: str, *, shared: bool = False
) -> bool:
    """Whether a task token of ``attempt_id`` may still be used: the attempt has a grant here
    and is still running (an attempt found settled loses its grant at once). A database that
    cannot be reached leaves the decision to the grant. With a ``shared`` token key, an
    attempt another instance started gets its grant here from the database while it runs."""
    if grants.get(attempt_id) is None:
        return shared and _grant_from_database(grants, metadata, attempt_id)
    try:
        with metadata.session() as session:
            state = session.scalar(select(Attempt.state).where(Attempt.id == attempt_id))
    except SQLAlchemyError as exc:
        log.warning("attempt %s: its state cannot be read (%s); its grant decides", attempt_id,
                    type(exc).__name__)  # fmt: skip
        return True
    if state == AttemptState.RUNNING:
        return True
    grants.end(attempt_id)
    return False


def _grant_from_database(grants: TaskGrants, metadata: MetadataStore, attempt_id: str) -> bool:
    """The grant of a running attempt started elsewhere, as its engine made it: the task's
    resolved inputs and its step's code and environment (what it uploaded is in
    ``attempt_uploads``; a blob it asks about again it uploads again)."""
    from argosy.stores.metadata.tables import PipelineVersion, Run, Task

    try:
        with metadata.session() as session:
            row = session.execute(
                select(Attempt.state, Attempt.run_id, Task.inputs, Task.step_name,
                       PipelineVersion.spec)
                .join(Task, Task.id == Attempt.task_id)
                .join(Run, Run.id == Attempt.run_id)
                .join(PipelineVersion, PipelineVersion.id == Run.pipeline_version_id)
                .where(Attempt.id == attempt_id)
            ).first()  # fmt: skip
    except SQLAlchemyError as exc:
        log.warning("attempt %s: no grant here and the database cannot be read (%s)",
                    attempt_id, type(exc).__name__)  # fmt: skip
        return False
    if row is None or row.state != AttemptState.RUNNING:
        return False
    impl = ((row.spec or {}).get("steps", {}).get(row.step_name) or {}).get("implementation")
    impl = impl or {}
    grants.add(attempt_id, row.run_id, dict(row.inputs or {}),
               (impl.get("code"), impl.get("environment")))  # fmt: skip
    return True
