"""Which OS user a tenant's tasks run as on a server.

With ``task_user`` alone every task runs as that user. With ``task_uid_base`` too, each
tenant gets its own uid, ``task_uid_base + N`` (N allocated once per tenant, unique, stored on
the tenant), in the task user's group: processes of different tenants never share a uid, so
one tenant's task cannot read another's process environment (secrets), memory or scratch,
even for processes a step starts itself. No passwd entry is needed for these uids.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from argosy.config import Settings
from argosy.errors import StoreError
from argosy.executors.local.executor import TaskUser
from argosy.stores.metadata.db import MetadataStore
from argosy.stores.metadata.tables import Tenant

UID_SPAN = 65_536  # per-tenant task uids: task_uid_base .. + this


def tenant_uid_offset(metadata: MetadataStore, tenant: str) -> int:
    """The tenant's N (allocated on first use; concurrent allocations retry on the unique key)."""
    for _ in range(10):
        try:
            with metadata.session() as s:
                row = s.scalar(select(Tenant).where(Tenant.name == tenant).with_for_update())
                if row is None:
                    raise StoreError(f"tenant {tenant!r} does not exist")
                if row.task_uid is not None:
                    return row.task_uid
                top = s.scalar(select(func.max(Tenant.task_uid)))
                row.task_uid = 0 if top is None else top + 1
                s.flush()
                return row.task_uid
        except IntegrityError:
            continue  # another instance took that N at the same moment: take the next
    raise StoreError(f"could not allocate a task uid for tenant {tenant!r}; retry")


def task_user_for(settings: Settings, metadata: MetadataStore, tenant: str) -> TaskUser | None:
    """The OS user the tenant's tasks run as (None: the server's own user)."""
    if not settings.task_user:
        return None
    base = TaskUser.lookup(settings.task_user)
    if settings.task_uid_base is None:
        return base
    offset = tenant_uid_offset(metadata, tenant)
    if offset >= UID_SPAN:
        raise StoreError(f"no task uid left for tenant {tenant!r} (more than {UID_SPAN} tenants)")
    return TaskUser(f"{base.name}-{offset}", settings.task_uid_base + offset, base.gid)
