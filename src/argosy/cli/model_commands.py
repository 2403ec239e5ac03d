"""``argosy models ...``: the model registry, written once against the backend protocol
(:mod:`argosy.client.backend`), so it acts the same on the local state folder and on a server.

Model references are ``NAME``, ``NAME@ALIAS`` or ``NAME@VERSION`` (a number).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from argosy import api
from argosy.cli.commands import emit_json, err, iso, out, table_of
from argosy.client.backend import Backend
from argosy.errors import UsageError


def _say(text: str) -> None:
    err.print(text, highlight=False, markup=False)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time or date (``2026-12-03``: the end of that day, UTC); naive means UTC."""
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text)
            return day.replace(hour=23, minute=59, second=59, microsecond=999999, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r} is no time; write an ISO 8601 date or time, e.g. 2026-12-03 or "
            "2026-12-03T14:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def register(
    backend: Backend,
    name: str,
    artifact: str,
    *,
    target: str | None,
    exclude: list[str],
    training_data: str | None,
    description: str | None,
    json_output: bool,
) -> None:
    body = api.ModelVersionCreate(
        artifact=artifact, target=target, exclude=exclude, training_data=training_data,
        description=description,
    )  # fmt: skip
    registered = backend.register_model(name, body)
    if json_output:
        emit_json(registered)
        return
    v = registered.version
    what = "registered" if registered.created else "already registered as"
    columns = len(v.input_schema.columns) if v.input_schema else 0
    _say(
        f"{v.artifact} {what} {v.model}@{v.version} ({v.format}; {columns} input columns"
        f"{' from ' + v.training_data if v.training_data else ''}); promote it with: "
        f"argosy models promote {v.model} {v.version} --alias staging"
    )


def list_models(backend: Backend, json_output: bool) -> None:
    found = backend.list_models()
    if json_output:
        emit_json({"models": [m.model_dump(mode="json") for m in found]})
        return
    table = table_of("model", "latest", "aliases", "created", "by")
    for m in found:
        aliases = ", ".join(f"{a}@{v}" for a, v in m.aliases.items())
        table.add_row(m.name, str(m.latest_version or ""), aliases, iso(m.created_at), m.created_by)
    out.print(table)


def _schema_text(schema: api.ModelSchema | None) -> str:
    if schema is None:
        return "(unknown)"
    return ", ".join(f"{c.name}:{c.type}{'?' if c.nullable else ''}" for c in schema.columns)


def show(backend: Backend, ref: str, json_output: bool) -> None:
    """A model and its versions, or with ``@`` one version."""
    from argosy.service.models import parse_ref

    name, which = parse_ref(ref)
    if which is not None:
        v = backend.get_model_version(name, which)
        if json_output:
            emit_json(v)
            return
        lines = [
            f"model {v.model} version {v.version}  aliases: {', '.join(v.aliases) or '(none)'}",
            f"artifact   {v.artifact} ({v.format}, sha256:{v.sha256[:12]})",
            f"run        {v.run_id} of {v.pipeline} ({v.pipeline_digest[:19]})",
            f"training   {v.training_data or '(unknown)'}",
            f"input      {_schema_text(v.input_schema)}",
            f"output     {_schema_text(v.output_schema)}",
            f"signature  {v.signature}",
            f"metrics    {json.dumps(v.metrics)}",
            f"registered {iso(v.created_at)} by {v.created_by}",
        ]
        for line in lines:
            out.print(line, highlight=False, markup=False)
        return
    model = backend.get_model(name)
    versions = backend.list_model_versions(name)
    if json_output:
        emit_json({**model.model_dump(mode="json"),
                   "versions": [v.model_dump(mode="json") for v in versions]})  # fmt: skip
        return
    aliases = ", ".join(f"{a}@{v}" for a, v in model.aliases.items()) or "(none)"
    out.print(f"model {model.name}  aliases: {aliases}", highlight=False, markup=False)
    table = table_of("version", "aliases", "artifact", "metrics", "registered", "by",
                     flexible=("artifact", "metrics"))  # fmt: skip
    for v in versions:
        table.add_row(
            str(v.version), ", ".join(v.aliases), v.artifact, json.dumps(v.metrics),
            iso(v.created_at), v.created_by,
        )  # fmt: skip
    out.print(table)


def promote(
    backend: Backend, name: str, version: int, alias: str, reason: str | None, json_output: bool
) -> None:
    event = backend.promote_model(name, alias, version, reason)
    if json_output:
        emit_json(event)
        return
    if isinstance(event, api.PromotionRequest):
        _say(
            f"{name}@{alias} needs approval: request {event.id} (version {event.version}, "
            f"asked by {event.requested_by}) is pending until {iso(event.expires_at)}; another "
            f"owner approves it with: argosy models approve {event.id}"
        )
        return
    was = f" (was {event.previous_version})" if event.previous_version else ""
    _say(f"{name}@{alias} -> version {event.version}{was}, by {event.by} at {iso(event.at)}")


def demote(backend: Backend, name: str, alias: str, reason: str | None, json_output: bool) -> None:
    event = backend.demote_model(name, alias, reason)
    if json_output:
        emit_json(event)
        return
    _say(f"{name}@{alias} removed (was version {event.previous_version}), by {event.by}")


def history(
    backend: Backend, name: str, alias: str | None, at: str | None, json_output: bool
) -> None:
    """Every alias move, newest first; with ``--at`` (and ``--alias``) the version then."""
    if at is not None:
        if alias is None:
            raise UsageError("--at needs --alias: which alias, e.g. --alias production")
        state = backend.model_alias_at(name, alias, parse_time(at))
        if json_output:
            emit_json(state)
            return
        if state.version is None:
            _say(f"{name}@{alias} pointed at no version at {iso(state.at)}")
        else:
            e = state.event
            assert e is not None
            out.print(
                f"{name}@{alias} at {iso(state.at)}: version {state.version} (since "
                f"{iso(state.since)}, promoted by {e.by}{': ' + e.reason if e.reason else ''})",
                highlight=False, markup=False,
            )  # fmt: skip
        return
    events = backend.model_history(name, alias)
    if json_output:
        emit_json({"events": [e.model_dump(mode="json") for e in events]})
        return
    table = table_of("at", "alias", "action", "version", "from", "by", "reason",
                     flexible=("reason",))  # fmt: skip
    for e in events:
        table.add_row(
            iso(e.at), e.alias, e.action, _num(e.version), _num(e.previous_version), e.by,
            e.reason or "",
        )  # fmt: skip
    out.print(table)


def _num(value: Any) -> str:
    return "" if value is None else str(value)


def requests(backend: Backend, state: str | None, json_output: bool) -> None:
    if state is not None and state not in ("pending", "approved", "denied", "expired"):
        raise UsageError(f"--state {state!r}: use pending, approved, denied or expired")
    found = backend.list_promotions(state)
    if json_output:
        emit_json({"requests": [r.model_dump(mode="json") for r in found]})
        return
    table = table_of("id", "state", "model", "alias", "version", "requested by", "at",
                     "decided by", "reason", flexible=("reason",))  # fmt: skip
    for r in found:
        table.add_row(
            r.id, r.state, r.model, r.alias, str(r.version), r.requested_by, iso(r.requested_at),
            r.decided_by or "", r.reason or "",
        )  # fmt: skip
    out.print(table)


def decide(
    backend: Backend, request_id: str, approve: bool, comment: str | None, json_output: bool
) -> None:
    done = backend.decide_promotion(request_id, approve, comment)
    if json_output:
        emit_json(done)
        return
    if done.event is not None:
        was = f" (was {done.event.previous_version})" if done.event.previous_version else ""
        _say(
            f"{done.model}@{done.alias} -> version {done.version}{was}: requested by "
            f"{done.requested_by}, approved by {done.decided_by}"
        )
    else:
        _say(f"request {done.id} {done.state} by {done.decided_by}; {done.model}@{done.alias} "
             "did not move")  # fmt: skip


def policy(
    backend: Backend, approval: list[str] | None, expire_after_days: float | None,
    json_output: bool,
) -> None:  # fmt: skip
    """Show the policy, or set the fields given."""
    if approval is None and expire_after_days is None:
        found = backend.promotion_policy()
    else:
        fields: dict[str, Any] = {}
        if approval is not None:
            fields["approval"] = approval
        if expire_after_days is not None:
            fields["expire_after_days"] = expire_after_days
        found = backend.set_promotion_policy(api.PromotionPolicyUpdate.model_validate(fields))
    if json_output:
        emit_json(found)
        return
    needs = ", ".join(found.approval) or "(none: every alias moves at once)"
    out.print(
        f"tenant {found.tenant}: aliases that need an approved request: {needs}; a request "
        f"expires after {found.expire_after_days:g} days undecided",
        highlight=False, markup=False,
    )  # fmt: skip
