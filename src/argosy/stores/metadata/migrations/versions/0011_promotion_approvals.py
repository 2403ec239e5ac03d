"""promotion approvals: an alias event made by an approved request names its requester and
the approval (the approver is the event's created_by)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # expand only: nullable columns, unseen by the previous version
    with op.batch_alter_table("model_alias_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("approval_id", sa.String(length=26), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_alias_events", schema=None) as batch_op:
        batch_op.drop_column("approval_id")
        batch_op.drop_column("requested_by")
