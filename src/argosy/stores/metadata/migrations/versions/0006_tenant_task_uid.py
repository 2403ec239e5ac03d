"""tenants get their own task uid offset (tasks of different tenants never share an OS user)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # expand only: a nullable column, readable by the previous version
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_uid", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_tenants_task_uid"), ["task_uid"])


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_tenants_task_uid"), type_="unique")
        batch_op.drop_column("task_uid")
