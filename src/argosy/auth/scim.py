"""SCIM 2.0 (RFC 7643/7644) users and groups, as an identity provider pushes them.

What Argosy keeps: per user its ``externalId`` (the stable subject its access tokens carry;
identities are never linked by e-mail), ``userName``, ``displayName``, e-mails and whether it
is ``active``; per group its ``displayName`` and member user ids. Roles never come from SCIM:
they come from the token's groups claim through role bindings. SCIM decides whether a user
may act at all: deactivating one (``active: false`` or ``DELETE``) revokes its browser
sessions, the API tokens it created and the tokens those minted at once, and is audited.

Both common dialects are accepted: Entra ID (``"op": "Replace"``, ``"path": "active"``,
``"value": "False"`` as a string) and Okta (``"op": "replace"``, ``"value": {"active": false}``).
Attributes Argosy does not keep (``name``, ``title``, extension schemas) are accepted and
ignored, so a provider's full mapping does not fail provisioning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from argosy.auth import audit
from argosy.auth.tokens import revoke_minted
from argosy.ids import new_id
from argosy.stores.metadata.tables import ApiToken, BrowserSession, ScimGroup, User

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
MEDIA_TYPE = "application/scim+json"
MAX_COUNT = 200

_FILTER = re.compile(r'^\s*([A-Za-z][\w.:]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)
_MEMBER_PATH = re.compile(r'^members\s*\[\s*value\s+eq\s+"([^"]*)"\s*\]$', re.IGNORECASE)
_EMAIL_PATH = re.compile(r'^emails\s*\[\s*type\s+eq\s+"([^"]*)"\s*\](?:\.value)?$', re.IGNORECASE)


class ScimError(Exception):
    """An error answered in SCIM's format: ``status``, optional ``scim_type``, ``detail``."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status),
                               "detail": self.detail}  # fmt: skip
        if self.scim_type:
            doc["scimType"] = self.scim_type
        return doc


@dataclass(frozen=True)
class Actor:
    """Who changes SCIM data (the provisioning client) and from where, for the audit log."""

    name: str = "scim"
    source: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def as_bool(value: Any, what: str = "active") -> bool:
    """A SCIM boolean: ``true``/``false`` or the strings Entra ID sends (``"False"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ScimError(400, f"{what} must be a boolean, not {value!r}", "invalidValue")


def _text(value: Any, what: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise ScimError(400, f"{what} is required", "invalidValue")
        return None
    if not isinstance(value, str) or len(value) > 255 or "\x00" in value:
        raise ScimError(400, f"{what} must be a string of at most 255 characters", "invalidValue")
    return value


# -- documents --------------------------------------------------------------------------------
def user_document(user: User, base_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": user.id,
        "externalId": user.external_id,
        "userName": user.user_name,
        "active": bool(user.active),
        "meta": {
            "resourceType": "User",
            "created": _iso(user.created_at),
            "lastModified": _iso(user.updated_at),
            "location": f"{base_url}/scim/v2/Users/{user.id}",
        },
    }
    if user.display_name:
        doc["displayName"] = user.display_name
    if user.emails:
        doc["emails"] = user.emails
    return doc


def group_document(group: ScimGroup, base_url: str, names: Mapping[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": group.id,
        "displayName": group.display_name,
        "members": [
            {"value": m, "display": names.get(m, m), "$ref": f"{base_url}/scim/v2/Users/{m}"}
            for m in group.members or []
        ],
        "meta": {
            "resourceType": "Group",
            "created": _iso(group.created_at),
            "lastModified": _iso(group.updated_at),
            "location": f"{base_url}/scim/v2/Groups/{group.id}",
        },
    }
    if group.external_id:
        doc["externalId"] = group.external_id
    return doc


def list_document(resources: list[dict[str, Any]], total: int, start: int) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


# -- filters and paging -----------------------------------------------------------------------
def parse_filter(text: str | None, allowed: Mapping[str, Any]) -> ColumnElement[bool] | None:
    """``attr eq "value"`` as a condition (case-insensitive for names); None for no filter."""
    if text is None or not text.strip():
        return None
    match = _FILTER.match(text)
    if match is None:
        raise ScimError(
            400, f'unsupported filter {text!r}: use one expression `attribute eq "value"`',
            "invalidFilter",
        )  # fmt: skip
    attribute, value = match.group(1), match.group(2).replace('\\"', '"').replace("\\\\", "\\")
    column = {k.lower(): v for k, v in allowed.items()}.get(attribute.lower())
    if column is None:
        raise ScimError(
            400, f"cannot filter on {attribute!r}; filter on {', '.join(allowed)}", "invalidFilter"
        )
    if attribute.lower() in ("username", "displayname"):
        condition: ColumnElement[bool] = func.lower(column) == value.lower()
        return condition
    condition = column == value
    return condition


def page_bounds(start_index: int | None, count: int | None) -> tuple[int, int]:
    """(1-based start, count) clamped as RFC 7644 3.4.2.4 says."""
    start = max(1, start_index or 1)
    return start, max(0, min(MAX_COUNT, MAX_COUNT if count is None else count))


# -- users ------------------------------------------------------------------------------------
USER_FILTERS = {"userName": User.user_name, "externalId": User.external_id, "id": User.id}


def _emails(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ScimError(400, "emails must be a list of {value, type, primary}", "invalidValue")
    kept: list[dict[str, Any]] = []
    for item in value[:20]:
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            kept.append({k: item[k] for k in ("value", "type", "primary") if k in item})
    return kept


def _unique_user(session: Session, user_name: str, external_id: str, but: str | None) -> None:
    query = select(User).where(
        (func.lower(User.user_name) == user_name.lower()) | (User.external_id == external_id)
    )
    if but is not None:
        query = query.where(User.id != but)
    clash = session.scalars(query.limit(1)).first()
    if clash is not None:
        raise ScimError(
            409, f"a user with userName {clash.user_name!r} or externalId {clash.external_id!r} "
            "exists already", "uniqueness",
        )  # fmt: skip


def create_user(session: Session, doc: Mapping[str, Any], actor: Actor) -> User:
    user_name = _text(doc.get("userName"), "userName", required=True)
    assert user_name is not None
    external_id = _text(doc.get("externalId"), "externalId") or user_name
    _unique_user(session, user_name, external_id, None)
    now = _now()
    user = User(
        id=new_id(), external_id=external_id, user_name=user_name,
        display_name=_text(doc.get("displayName"), "displayName"),
        emails=_emails(doc.get("emails")), active=True, created_at=now, updated_at=now,
        deactivated_at=None,
    )  # fmt: skip
    session.add(user)
    session.flush()
    if "active" in doc and not as_bool(doc["active"]):
        set_active(session, user, False, actor)
    return user


def get_user(session: Session, user_id: str, *, lock: bool = False) -> User:
    query = select(User).where(User.id == user_id)
    if lock:
        query = query.with_for_update()
    user = session.scalars(query).first()
    if user is None:
        raise ScimError(404, f"no user {user_id!r}")
    return user


def replace_user(session: Session, user: User, doc: Mapping[str, Any], actor: Actor) -> User:
    """PUT: the document replaces the kept attributes (``externalId`` may not change)."""
    user_name = _text(doc.get("userName"), "userName", required=True)
    assert user_name is not None
    external_id = _text(doc.get("externalId"), "externalId") or user.external_id
    if external_id != user.external_id:
        raise ScimError(
            400, "externalId is the user's stable subject and cannot change; create a new user",
            "mutability",
        )  # fmt: skip
    _unique_user(session, user_name, external_id, user.id)
    user.user_name = user_name
    user.display_name = _text(doc.get("displayName"), "displayName")
    user.emails = _emails(doc.get("emails"))
    user.updated_at = _now()
    set_active(session, user, as_bool(doc.get("active", True)), actor)
    return user


def _set_user_attribute(
    session: Session, user: User, path: str, value: Any, actor: Actor, op: str
) -> None:
    key = path.strip()
    lowered = key.lower()
    if lowered == "active":
        set_active(session, user, as_bool(value) if op != "remove" else False, actor)
    elif lowered == "username":
        name = _text(value, "userName", required=True)
        assert name is not None
        _unique_user(session, name, user.external_id, user.id)
        user.user_name = name
    elif lowered == "displayname":
        user.display_name = None if op == "remove" else _text(value, "displayName")
    elif lowered == "externalid":
        if value != user.external_id:
            raise ScimError(400, "externalId cannot change", "mutability")
    elif lowered == "emails":
        if op == "remove":
            user.emails = None
        else:
            new = _emails(value if isinstance(value, list) else [value]) or []
            user.emails = new if op == "replace" else [*(user.emails or []), *new]
    elif (found := _EMAIL_PATH.match(key)) is not None:
        kind = found.group(1)
        others = [e for e in user.emails or [] if e.get("type") != kind]
        if op != "remove" and isinstance(value, str):
            others.append({"value": value, "type": kind})
        user.emails = others
    # anything else (name.*, title, extension schemas) is accepted and not kept


def patch_user(session: Session, user: User, doc: Mapping[str, Any], actor: Actor) -> User:
    """RFC 7644 PatchOp: add/replace/remove with a ``path``, or with a dict ``value``."""
    for op, path, value in _operations(doc):
        if path is None:
            if not isinstance(value, dict):
                raise ScimError(400, "an operation without path needs an object value",
                                "invalidSyntax")  # fmt: skip
            for key, item in value.items():
                _set_user_attribute(session, user, key, item, actor, op)
        else:
            _set_user_attribute(session, user, path, value, actor, op)
    user.updated_at = _now()
    return user


def set_active(session: Session, user: User, active: bool, actor: Actor) -> None:
    """Activate or deactivate ``user``. Deactivation revokes its browser sessions and the API
    tokens it created, in this transaction, and is audited."""
    if active:
        if not user.active:
            user.active = True
            user.deactivated_at = None
            user.updated_at = _now()
            audit.record(
                session, actor=actor.name, actor_kind="service", action="scim.user.activate",
                resource=f"/scim/v2/Users/{user.id}", source=actor.source,
                detail={"user": user.external_id, "userName": user.user_name},
            )  # fmt: skip
        return
    now = _now()
    if user.active:
        user.active = False
        user.deactivated_at = now
        user.updated_at = now
    sessions = session.execute(
        update(BrowserSession)
        .where(BrowserSession.subject == user.external_id, BrowserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount  # type: ignore[attr-defined]
    own = list(session.scalars(select(ApiToken).where(ApiToken.created_by == user.external_id)))
    tokens = 0
    for token in own:
        if token.revoked_at is None:
            token.revoked_at = now
            tokens += 1
    # and what those tokens minted (refused anyway: a chain is checked up to its user)
    tokens += revoke_minted(session, [t.id for t in own], now)
    audit.record(
        session, actor=actor.name, actor_kind="service", action="scim.user.deactivate",
        resource=f"/scim/v2/Users/{user.id}", source=actor.source,
        detail={"user": user.external_id, "userName": user.user_name,
                "sessions_revoked": int(sessions or 0), "tokens_revoked": int(tokens or 0)},
    )  # fmt: skip


def _operations(doc: Mapping[str, Any]) -> list[tuple[str, str | None, Any]]:
    ops = doc.get("Operations", doc.get("operations"))
    if not isinstance(ops, list) or not ops:
        raise ScimError(400, "a PatchOp needs a non-empty Operations list", "invalidSyntax")
    parsed = []
    for item in ops:
        if not isinstance(item, dict):
            raise ScimError(400, "each operation must be an object", "invalidSyntax")
        op = str(item.get("op", "")).lower()
        if op not in ("add", "replace", "remove"):
            raise ScimError(400, f"unknown op {item.get('op')!r}; use add, replace or remove",
                            "invalidSyntax")  # fmt: skip
        path = item.get("path")
        if path is not None and not isinstance(path, str):
            raise ScimError(400, "path must be a string", "invalidPath")
        parsed.append((op, path or None, item.get("value")))
    return parsed


# -- groups -----------------------------------------------------------------------------------
GROUP_FILTERS = {"displayName": ScimGroup.display_name, "externalId": ScimGroup.external_id,
                 "id": ScimGroup.id}  # fmt: skip


def _member_ids(session: Session, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        member = item.get("value") if isinstance(item, dict) else item
        if not isinstance(member, str) or not member:
            raise ScimError(400, "members are objects with a user id as value", "invalidValue")
        ids.append(member)
    known = set(session.scalars(select(User.id).where(User.id.in_(ids))).all())
    unknown = [m for m in ids if m not in known]
    if unknown:
        raise ScimError(400, f"no user {unknown[0]!r} (members are SCIM user ids)", "invalidValue")
    return ids


def create_group(session: Session, doc: Mapping[str, Any], actor: Actor) -> ScimGroup:
    name = _text(doc.get("displayName"), "displayName", required=True)
    assert name is not None
    if session.scalars(select(ScimGroup).where(ScimGroup.display_name == name)).first():
        raise ScimError(409, f"a group named {name!r} exists already", "uniqueness")
    now = _now()
    members = _member_ids(session, doc.get("members") or [])
    group = ScimGroup(
        id=new_id(), display_name=name, external_id=_text(doc.get("externalId"), "externalId"),
        members=list(dict.fromkeys(members)), created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(group)
    session.flush()
    _audit_members(session, group, actor, "scim.group.create", added=group.members, removed=[])
    return group


def get_group(session: Session, group_id: str, *, lock: bool = False) -> ScimGroup:
    query = select(ScimGroup).where(ScimGroup.id == group_id)
    if lock:
        query = query.with_for_update()
    group = session.scalars(query).first()
    if group is None:
        raise ScimError(404, f"no group {group_id!r}")
    return group


def patch_group(session: Session, group: ScimGroup, doc: Mapping[str, Any], actor: Actor) -> None:
    before = list(group.members or [])
    members = list(before)
    for op, path, value in _operations(doc):
        lowered = (path or "").strip().lower()
        if path is None and isinstance(value, dict):
            for key, item in value.items():
                if key.lower() == "displayname":
                    group.display_name = _text(item, "displayName", required=True) or ""
                elif key.lower() == "members":
                    ids = _member_ids(session, item)
                    members = ids if op == "replace" else members + ids
        elif lowered == "displayname":
            group.display_name = _text(value, "displayName", required=True) or ""
        elif lowered == "externalid":
            group.external_id = _text(value, "externalId")
        elif lowered == "members":
            if op == "remove":
                drop = set(_member_ids(session, value)) if value else set(members)
                members = [m for m in members if m not in drop]
            else:
                ids = _member_ids(session, value)
                members = ids if op == "replace" else members + ids
        elif (found := _MEMBER_PATH.match((path or "").strip())) is not None and op == "remove":
            members = [m for m in members if m != found.group(1)]
        else:
            raise ScimError(400, f"cannot {op} {path!r} on a group", "invalidPath")
    group.members = list(dict.fromkeys(members))
    group.updated_at = _now()
    added = [m for m in group.members if m not in before]
    removed = [m for m in before if m not in group.members]
    if added or removed:
        _audit_members(session, group, actor, "scim.group.members", added=added, removed=removed)


def replace_group(session: Session, group: ScimGroup, doc: Mapping[str, Any], actor: Actor) -> None:
    name = _text(doc.get("displayName"), "displayName", required=True)
    assert name is not None
    before = list(group.members or [])
    group.display_name = name
    group.external_id = _text(doc.get("externalId"), "externalId") or group.external_id
    group.members = list(dict.fromkeys(_member_ids(session, doc.get("members") or [])))
    group.updated_at = _now()
    added = [m for m in group.members if m not in before]
    removed = [m for m in before if m not in group.members]
    if added or removed:
        _audit_members(session, group, actor, "scim.group.members", added=added, removed=removed)


def delete_group(session: Session, group: ScimGroup, actor: Actor) -> None:
    _audit_members(session, group, actor, "scim.group.delete", added=[],
                   removed=list(group.members or []))  # fmt: skip
    session.delete(group)


def _audit_members(
    session: Session,
    group: ScimGroup,
    actor: Actor,
    action: str,
    *,
    added: list[str],
    removed: list[str],
) -> None:
    audit.record(
        session, actor=actor.name, actor_kind="service", action=action,
        resource=f"/scim/v2/Groups/{group.id}", source=actor.source,
        detail={"group": group.display_name, "added": added[:100], "removed": removed[:100]},
    )  # fmt: skip


def member_names(session: Session, groups: list[ScimGroup]) -> dict[str, str]:
    ids = {m for g in groups for m in g.members or []}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.user_name).where(User.id.in_(ids))).all())


# -- discovery --------------------------------------------------------------------------------
def service_provider_config(base_url: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/argosy/argosy/blob/main/docs/security.md",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_COUNT},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [
            {"type": "oauthbearertoken", "name": "Bearer token",
             "description": "the token configured as ARGOSY_SCIM_TOKEN", "primary": True}
        ],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": f"{base_url}/scim/v2/ServiceProviderConfig"},
    }  # fmt: skip


def _attribute(name: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    doc = {"name": name, "type": kind, "multiValued": False, "required": False,
           "caseExact": False, "mutability": "readWrite", "returned": "default",
           "uniqueness": "none"}  # fmt: skip
    doc.update(extra)
    return doc


def schemas(base_url: str) -> list[dict[str, Any]]:
    user = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": USER_SCHEMA, "name": "User", "description": "A person provisioned by the IdP",
        "attributes": [
            _attribute("userName", required=True, uniqueness="server"),
            _attribute("displayName"),
            _attribute("active", "boolean"),
            _attribute("emails", "complex", multiValued=True, subAttributes=[
                _attribute("value"), _attribute("type"), _attribute("primary", "boolean")]),
        ],
        "meta": {"resourceType": "Schema", "location": f"{base_url}/scim/v2/Schemas/{USER_SCHEMA}"},
    }  # fmt: skip
    group = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": GROUP_SCHEMA, "name": "Group", "description": "A group of users",
        "attributes": [
            _attribute("displayName", required=True, uniqueness="server"),
            _attribute("members", "complex", multiValued=True, subAttributes=[
                _attribute("value", mutability="immutable"), _attribute("display")]),
        ],
        "meta": {"resourceType": "Schema",
                 "location": f"{base_url}/scim/v2/Schemas/{GROUP_SCHEMA}"},
    }  # fmt: skip
    return [user, group]


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": name,
         "name": name, "endpoint": f"/{name}s", "schema": schema,
         "meta": {"resourceType": "ResourceType",
                  "location": f"{base_url}/scim/v2/ResourceTypes/{name}"}}
        for name, schema in (("User", USER_SCHEMA), ("Group", GROUP_SCHEMA))
    ]  # fmt: skip
