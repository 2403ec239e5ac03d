"""token chains and accepted outputs: the groups last known per user, the blobs each attempt
uploaded, and an index to walk API tokens by creator

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # expand only: new tables and an index, unseen by the previous version
    op.create_table(
        "known_groups",
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_known_groups")),
    )
    op.create_table(
        "attempt_uploads",
        sa.Column("attempt_id", sa.String(length=26), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempt_uploads")),
        sa.UniqueConstraint("attempt_id", "sha256", name=op.f("uq_attempt_uploads_attempt_id")),
    )
    with op.batch_alter_table("attempt_uploads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attempt_uploads_attempt_id"), ["attempt_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_attempt_uploads_tenant"), ["tenant"], unique=False)
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_api_tokens_created_by", ["created_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_api_tokens_created_by")
    with op.batch_alter_table("attempt_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attempt_uploads_tenant"))
        batch_op.drop_index(batch_op.f("ix_attempt_uploads_attempt_id"))
    op.drop_table("attempt_uploads")
    op.drop_table("known_groups")
