"""The one authorization function: (principal, tenant, action) → allow or deny.

Every API route declares its :class:`Action`; the same function decides for the API, the
UI and artifact downloads, so permissions are identical everywhere. Roles are per tenant:

- ``viewer``: read everything in the tenant;
- ``editor``: also submit, cancel and retry runs, push pipelines, manage schedules,
  register models and move their aliases;
- ``owner``: also members (role bindings), API tokens, secrets, settings, the tenant's audit log,
  decisions on retrieval and promotion requests (never their own);
- platform admin (configured groups/users): everything, in every tenant, and tenant admin.

A user's roles come from role bindings naming the user's subject or one of the token's
groups; an API token has exactly the role and tenant it was created with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from argosy.auth.principal import Principal


class Role(IntEnum):
    """Tenant roles, each including the ones below it."""

    viewer = 1
    editor = 2
    owner = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; use viewer, editor or owner") from None


class Action(StrEnum):
    """What a request does. The value's prefix is the resource; the minimum role is below."""

    # reads (viewer)
    PIPELINE_READ = "pipeline.read"
    RUN_READ = "run.read"
    ARTIFACT_READ = "artifact.read"
    LOG_READ = "log.read"
    SCHEDULE_READ = "schedule.read"
    TENANT_READ = "tenant.read"
    COST_READ = "cost.read"  # the tenant's costs and budget
    RETRIEVAL_REQUEST = "retrieval.request"  # ask for archived data back (an owner decides)
    MODEL_READ = "model.read"
    # changes (editor)
    BLOB_WRITE = "blob.write"
    PIPELINE_PUSH = "pipeline.push"
    RUN_CREATE = "run.create"
    RUN_CANCEL = "run.cancel"
    RUN_RETRY = "run.retry"
    SCHEDULE_WRITE = "schedule.write"
    MODEL_WRITE = "model.write"  # register model versions
    MODEL_PROMOTE = "model.promote"  # move a model's aliases (promote, demote)
    # administration of the tenant (owner)
    MEMBER_READ = "member.read"
    MEMBER_WRITE = "member.write"
    TOKEN_READ = "token.read"
    TOKEN_WRITE = "token.write"
    SECRET_READ = "secret.read"  # names and metadata only: values are never returned
    SECRET_WRITE = "secret.write"
    TENANT_SETTINGS_WRITE = "tenant.settings.write"
    AUDIT_READ = "audit.read"
    RETRIEVAL_APPROVE = "retrieval.approve"
    MODEL_APPROVE = "model.approve"  # decide promotion requests (never one's own)
    LEGAL_HOLD_WRITE = "legal_hold.write"  # place and release legal holds, set retention
    RUN_DELETE = "run.delete"  # delete runs: their rows and bytes
    # platform (platform admin only)
    TENANT_CREATE = "tenant.create"
    TENANT_ARCHIVE = "tenant.archive"
    TENANT_QUOTAS_WRITE = "tenant.quotas.write"
    TENANT_LIST_ALL = "tenant.list_all"
    AUDIT_READ_ALL = "audit.read_all"
    METRICS_READ = "metrics.read"  # /metrics (or the scrape token)
    COST_READ_ALL = "cost.read_all"  # cost of every tenant
    GC = "gc"  # collect unreferenced blobs and leftovers of the whole deployment
    LIFECYCLE_RUN = "lifecycle.run"  # run the retention job now
    SCIM = "scim"
    # anyone, even anonymous (health probes, login, the OpenAPI document)
    PUBLIC = "public"
    # any authenticated principal (who am I, my tenants)
    AUTHENTICATED = "authenticated"
    # task processes only, with their attempt's task token (never a user or API token)
    TASK = "task"


MINIMUM_ROLE: dict[Action, Role] = {
    **{a: Role.viewer for a in (Action.PIPELINE_READ, Action.RUN_READ, Action.ARTIFACT_READ,
                                Action.LOG_READ, Action.SCHEDULE_READ, Action.TENANT_READ,
                                Action.MODEL_READ)},
    **{a: Role.editor for a in (Action.BLOB_WRITE, Action.PIPELINE_PUSH, Action.RUN_CREATE,
                                Action.RUN_CANCEL, Action.RUN_RETRY, Action.SCHEDULE_WRITE,
                                Action.MODEL_WRITE, Action.MODEL_PROMOTE)},
    **{a: Role.owner for a in (Action.MEMBER_READ, Action.MEMBER_WRITE, Action.TOKEN_READ,
                               Action.TOKEN_WRITE, Action.SECRET_READ, Action.SECRET_WRITE,
                               Action.TENANT_SETTINGS_WRITE, Action.AUDIT_READ,
                               Action.RETRIEVAL_APPROVE, Action.LEGAL_HOLD_WRITE,
                               Action.RUN_DELETE, Action.MODEL_APPROVE)},
    **{a: Role.viewer for a in (Action.COST_READ, Action.RETRIEVAL_REQUEST)},
}  # fmt: skip
PLATFORM_ONLY = {
    Action.TENANT_CREATE, Action.TENANT_ARCHIVE, Action.TENANT_QUOTAS_WRITE, Action.TENANT_LIST_ALL, Action.AUDIT_READ_ALL,
    Action.SCIM, Action.METRICS_READ, Action.COST_READ_ALL, Action.GC, Action.LIFECYCLE_RUN,
}  # fmt: skip


@dataclass(frozen=True)
class Binding:
    """A role binding as the policy sees it (rows of ``role_bindings`` in one tenant)."""

    role: str
    subject_kind: str  # user | group | service
    subject: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # why, for the audit log and the 403 message
    role: Role | None = None


def role_in(principal: Principal, tenant: str, bindings: Iterable[Binding]) -> Role | None:
    """The highest role ``principal`` has in ``tenant`` (None: no access)."""
    if principal.anonymous:
        return None
    if principal.kind == "service":
        if principal.token_tenant == tenant and principal.token_role:
            return Role.parse(principal.token_role)
        return None
    best: Role | None = None
    groups = set(principal.groups)
    for b in bindings:
        matches = (b.subject_kind == "user" and b.subject == principal.subject) or (
            b.subject_kind == "group" and b.subject in groups
        )
        if matches:
            role = Role.parse(b.role)
            best = role if best is None or role > best else best
    return best


def authorize(
    principal: Principal, tenant: str | None, action: Action, bindings: Iterable[Binding] = ()
) -> Decision:
    """THE authorization decision. ``bindings``: the role bindings of ``tenant``."""
    if action is Action.PUBLIC:
        return Decision(True, "public")
    if principal.anonymous:
        return Decision(
            False, "not authenticated: send a bearer token (OIDC access token or API token)"
        )
    if action is Action.TASK:
        allowed = principal.kind == "task"
        return Decision(allowed, "task token" if allowed else "only task processes use this")
    if action is Action.AUTHENTICATED:
        return Decision(True, "authenticated")
    if principal.kind == "local" or principal.platform_admin:
        return Decision(True, "platform admin" if principal.platform_admin else "local mode")
    if action in PLATFORM_ONLY:
        return Decision(False, f"{action.value} needs a platform admin")
    if tenant is None:
        return Decision(False, f"{action.value} needs a tenant")
    role = role_in(principal, tenant, bindings)
    needed = MINIMUM_ROLE[action]
    if role is None:
        return Decision(False, f"{principal.name} has no role in tenant {tenant!r}")
    if role < needed:
        return Decision(
            False, f"{action.value} needs the {needed.name} role in tenant {tenant!r}; "
            f"{principal.name} is {role.name}", role
        )  # fmt: skip
    return Decision(True, f"{role.name} in {tenant!r}", role)
