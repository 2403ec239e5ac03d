"""operations: log index marks, legal holds, approvals, the archive tier of blobs, deletions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # expand only: new tables, unseen by the previous version
    op.create_table(
        "approvals",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=26), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_tenant"), ["tenant"], unique=False)
        batch_op.create_index(
            "ix_approvals_tenant_kind_state", ["tenant", "kind", "state"], unique=False
        )

    op.create_table(
        "blob_tiers",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restored_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retrieval_id", sa.String(length=26), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob_tiers")),
        sa.UniqueConstraint("tenant", "sha256", name=op.f("uq_blob_tiers_tenant")),
    )
    with op.batch_alter_table("blob_tiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blob_tiers_tenant"), ["tenant"], unique=False)

    op.create_table(
        "deletions",
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=26), nullable=False),
        sa.Column("why", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletions")),
        sa.UniqueConstraint("target_id", name=op.f("uq_deletions_target_id")),
    )
    with op.batch_alter_table("deletions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deletions_tenant"), ["tenant"], unique=False)

    op.create_table(
        "legal_holds",
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=26), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=255), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_legal_holds_target_id"), ["target_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_legal_holds_tenant"), ["tenant"], unique=False)

    op.create_table(
        "log_index_marks",
        sa.Column("attempt_id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("run_id", sa.String(length=26), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_log_index_marks")),
    )
    with op.batch_alter_table("log_index_marks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_log_index_marks_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_log_index_marks_tenant"), ["tenant"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("log_index_marks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_index_marks_tenant"))
        batch_op.drop_index(batch_op.f("ix_log_index_marks_run_id"))

    op.drop_table("log_index_marks")
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_holds_tenant"))
        batch_op.drop_index(batch_op.f("ix_legal_holds_target_id"))

    op.drop_table("legal_holds")
    with op.batch_alter_table("deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deletions_tenant"))

    op.drop_table("deletions")
    with op.batch_alter_table("blob_tiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blob_tiers_tenant"))

    op.drop_table("blob_tiers")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_approvals_tenant_kind_state")
        batch_op.drop_index(batch_op.f("ix_approvals_tenant"))

    op.drop_table("approvals")
