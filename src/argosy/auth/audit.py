"""The audit log: an append-only, hash-chained record of who did what, where, and the decision.

Each event's ``hash`` is ``sha256(prev_hash || canonical JSON of its fields)``, where
``prev_hash`` is the hash of the event before it (the genesis event's is 64 zeros). Editing a
row breaks its own hash; deleting or reordering rows breaks the link from the next row's
``prev_hash``. :func:`verify` walks the chain in ``seq`` order and names each break.

Appenders never fork the chain: on PostgreSQL :func:`record` takes a transaction-level
advisory lock before it reads the newest hash (held until the transaction ends, so the next
appender reads this event's hash); on SQLite every write transaction already holds the
database's write lock from its start (``BEGIN IMMEDIATE``).

Events never hold secret values: ``detail`` values under secret-looking keys (token, password,
secret, key, authorization, cookie) are masked before hashing, and resources are URL paths
without their query string.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from argosy.ids import new_id
from argosy.stores.metadata.tables import AuditEvent

GENESIS = "0" * 64
AUDIT_LOCK = 0x41_75_64_69_74  # pg_advisory_xact_lock key ("Audit") held while appending
OUTCOMES = ("allowed", "denied", "failed")
ACTOR_KINDS = ("user", "service", "task", "system", "anonymous")
_SECRET_WORDS = ("token", "password", "secret", "authorization", "cookie", "credential", "key")
_NOT_SECRET = {"key_id", "kek_id", "idempotency_key_present"}
MAX_PROBLEMS = 100


@dataclass(frozen=True)
class ChainProblem:
    """One break in the chain: ``kind`` is edited | deleted | reordered."""

    kind: str
    seq: int
    message: str

    def __str__(self) -> str:
        return self.message


def _secret_key(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _NOT_SECRET and any(w in lowered for w in _SECRET_WORDS)


def _harmless(value: Any) -> bool:
    """Counts, flags and nothing cannot leak a secret (``tokens_revoked: 2``)."""
    return value is None or isinstance(value, bool | int | float)


def scrub(value: Any) -> Any:
    """``value`` with every entry under a secret-looking key masked (recursively)."""
    if isinstance(value, Mapping):
        return {
            _text(str(k)): "***" if _secret_key(str(k)) and not _harmless(v) else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _text(str(value))


def _text(value: str) -> str:
    """``value`` storable everywhere (PostgreSQL text refuses NUL): NUL shown as ``\\x00``."""
    return value.replace("\x00", "\\x00") if "\x00" in value else value


def _time(value: datetime) -> str:
    """The event time as hashed: UTC, microseconds, ``Z`` (SQLite drops the time zone)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event: AuditEvent) -> str:
    """The event's hashed content as canonical JSON (sorted keys, no spaces)."""
    doc = {
        "id": event.id,
        "at": _time(event.at),
        "tenant": event.tenant,
        "actor": event.actor,
        "actor_kind": event.actor_kind,
        "action": event.action,
        "resource": event.resource,
        "outcome": event.outcome,
        "source": event.source,
        "detail": event.detail,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256((prev_hash + canonical(event)).encode("utf-8")).hexdigest()


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK})


def record(
    session: Session,
    *,
    actor: str,
    actor_kind: str,
    action: str,
    tenant: str | None = None,
    resource: str | None = None,
    outcome: str = "allowed",
    source: str | None = None,
    detail: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain in ``session``'s transaction (flushed, not committed).

    Keep the transaction short after this call: until it ends, other appenders wait.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    if actor_kind not in ACTOR_KINDS:
        actor_kind = "user" if actor_kind == "local" else "system"
    _lock(session)
    prev = session.execute(
        select(AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).scalar_one_or_none()
    now = (at or datetime.now(UTC)).astimezone(UTC)
    event = AuditEvent(
        id=new_id(),
        at=now,
        tenant=tenant,
        actor=_text(actor)[:255],
        actor_kind=actor_kind,
        action=_text(action)[:64],
        resource=_text(resource)[:1024] if resource is not None else None,
        outcome=outcome,
        source=_text(source)[:255] if source is not None else None,
        detail=scrub(dict(detail)) if detail else None,
        prev_hash=prev or GENESIS,
        hash="",
    )
    event.hash = chain_hash(event.prev_hash, event)
    session.add(event)
    session.flush()
    return event


def verify(session: Session, *, batch: int = 1000) -> list[ChainProblem]:
    """Every break in the chain, in ``seq`` order (at most :data:`MAX_PROBLEMS`).

    - **edited**: a row whose content no longer hashes to its stored ``hash``;
    - **reordered**: a row whose ``prev_hash`` is the hash of a row that is not just before it;
    - **deleted**: a row whose ``prev_hash`` names no row at all (rows are missing before it).

    Removing the newest rows leaves no break; compare the exported head hash with a copy kept
    elsewhere to detect that.
    """
    problems: list[ChainProblem] = []
    expected = GENESIS
    previous_seq: int | None = None
    last = 0
    while len(problems) < MAX_PROBLEMS:
        rows = (
            session.execute(
                select(AuditEvent)
                .where(AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if not rows:
            break
        for row in rows:
            if row.prev_hash != expected:
                problems.append(_link_problem(session, row, previous_seq))
            if chain_hash(row.prev_hash, row) != row.hash:
                message = f"event {row.seq} ({row.id}) was edited: its content no longer hashes"
                problems.append(ChainProblem("edited", row.seq, message + " to its stored hash"))
            expected = row.hash
            previous_seq = row.seq
            last = row.seq
        session.expunge_all()
    return problems[:MAX_PROBLEMS]


def _link_problem(session: Session, row: AuditEvent, previous_seq: int | None) -> ChainProblem:
    where = f"after event {previous_seq}" if previous_seq is not None else "at the start"
    holder = session.execute(
        select(AuditEvent.seq).where(AuditEvent.hash == row.prev_hash).limit(1)
    ).scalar_one_or_none()
    if row.prev_hash == GENESIS and previous_seq is not None:
        holder = 0
    if holder is not None:
        return ChainProblem(
            "reordered", row.seq, f"event {row.seq} ({row.id}) is out of order: it follows "
            f"event {holder or 'genesis'} in the chain but comes {where}",
        )  # fmt: skip
    gap = f" (seq {previous_seq + 1}-{row.seq - 1} missing)" if (
        previous_seq is not None and row.seq > previous_seq + 1
    ) else ""  # fmt: skip
    return ChainProblem(
        "deleted", row.seq, f"events were deleted {where}, before event {row.seq} ({row.id}): "
        f"its prev_hash names no event{gap}",
    )  # fmt: skip


def document(event: AuditEvent) -> dict[str, Any]:
    """The event as a JSON document (what exports and the API return)."""
    return {
        "seq": event.seq,
        "id": event.id,
        "at": _time(event.at),
        "tenant": event.tenant,
        "actor": event.actor,
        "actor_kind": event.actor_kind,
        "action": event.action,
        "resource": event.resource,
        "outcome": event.outcome,
        "source": event.source,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def export(
    session: Session,
    since: datetime | None = None,
    tenant: str | None = None,
    *,
    batch: int = 1000,
) -> Iterator[str]:
    """The events (oldest first) as JSON lines, each ending in a newline; read in batches."""
    last = 0
    while True:
        query = select(AuditEvent).where(AuditEvent.seq > last)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if tenant is not None:
            query = query.where(AuditEvent.tenant == tenant)
        rows = session.execute(query.order_by(AuditEvent.seq).limit(batch)).scalars().all()
        if not rows:
            return
        for row in rows:
            yield json.dumps(document(row), sort_keys=True, ensure_ascii=False) + "\n"
            last = row.seq
        session.expunge_all()


def count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(AuditEvent)).scalar_one())
