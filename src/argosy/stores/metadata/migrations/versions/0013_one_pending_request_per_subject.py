"""approvals: a request's subject (a promotion: ALIAS:VERSION of its model) and a partial unique
index that allows one pending request per subject, so two identical requests sent at once
cannot both be created

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 06:10:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    # expand only: a nullable column the previous version neither reads nor writes (its
    # requests keep a NULL subject, which the index does not compare), and an index on it
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
    # pending promotions made before: the oldest of each ask gets its subject (a duplicate
    # left by the race this revision closes keeps NULL and stays decidable)
    approvals = sa.table(
        "approvals",
        sa.column("id", sa.String),
        sa.column("tenant", sa.String),
        sa.column("kind", sa.String),
        sa.column("target_id", sa.String),
        sa.column("state", sa.String),
        sa.column("detail", sa.JSON),
        sa.column("subject", sa.String),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(approvals.c.id, approvals.c.tenant, approvals.c.target_id, approvals.c.detail)
        .where(approvals.c.kind == "promotion", approvals.c.state == "pending")
        .order_by(approvals.c.id)
    ).all()
    seen: set[tuple[str, str, str]] = set()
    for row in rows:
        detail: dict[str, Any] = row.detail or {}
        if "alias" not in detail or "version" not in detail:
            continue
        subject = f"{detail['alias']}:{detail['version']}"
        if (row.tenant, row.target_id, subject) in seen:
            continue
        seen.add((row.tenant, row.target_id, subject))
        bind.execute(approvals.update().where(approvals.c.id == row.id).values(subject=subject))
    op.create_index(
        "uq_approvals_pending_subject",
        "approvals",
        ["tenant", "kind", "target_id", "subject"],
        unique=True,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("uq_approvals_pending_subject", table_name="approvals")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("subject")
