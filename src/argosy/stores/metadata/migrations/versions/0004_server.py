"""server: version tags, run queue/owner/retry/schedule, idempotency keys, schedules, leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def _row() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    ]


def upgrade() -> None:
    # expand only: new tables and nullable columns, readable by the previous version
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(26), nullable=True))
        batch_op.add_column(sa.Column("retry_of", sa.String(26), nullable=True))
        batch_op.add_column(sa.Column("schedule_id", sa.String(26), nullable=True))
        batch_op.create_index("ix_runs_retry_of", ["retry_of"], unique=False)
        batch_op.create_index("ix_runs_schedule_id", ["schedule_id"], unique=False)
        batch_op.create_index(
            "ix_runs_tenant_pipeline_id", ["tenant", "pipeline_id", "status", "id"], unique=False
        )
        batch_op.create_index("ix_runs_queue_owner", ["queue", "owner", "status"], unique=False)

    op.create_table(
        "pipeline_version_tags",
        *_row(),
        sa.Column("pipeline_id", sa.String(26), nullable=False),
        sa.Column("version_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"],
                                name=op.f("fk_pipeline_version_tags_pipeline_id_pipelines")),
        sa.ForeignKeyConstraint(["version_id"], ["pipeline_versions.id"],
                                name=op.f("fk_pipeline_version_tags_version_id_pipeline_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_version_tags")),
        sa.UniqueConstraint("pipeline_id", "name", name=op.f("uq_pipeline_version_tags_pipeline_id")),
    )  # fmt: skip
    op.create_index(op.f("ix_pipeline_version_tags_tenant"), "pipeline_version_tags", ["tenant"])
    op.create_index(
        op.f("ix_pipeline_version_tags_version_id"), "pipeline_version_tags", ["version_id"]
    )

    op.create_table(
        "idempotency_keys",
        *_row(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"],
                                name=op.f("fk_idempotency_keys_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("tenant", "key", name=op.f("uq_idempotency_keys_tenant")),
    )  # fmt: skip
    op.create_index(op.f("ix_idempotency_keys_tenant"), "idempotency_keys", ["tenant"])

    op.create_table(
        "schedules",
        *_row(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("pipeline_id", sa.String(26), nullable=False),
        sa.Column("version", sa.String(255), nullable=True),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("max_concurrent_runs", sa.Integer(), nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("catch_up_limit", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", Timestamp, nullable=True),
        sa.Column("last_fire_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"],
                                name=op.f("fk_schedules_pipeline_id_pipelines")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("tenant", "name", name=op.f("uq_schedules_tenant")),
    )  # fmt: skip
    op.create_index(op.f("ix_schedules_tenant"), "schedules", ["tenant"])
    op.create_index(op.f("ix_schedules_next_fire_at"), "schedules", ["next_fire_at"])

    op.create_table(
        "schedule_fires",
        *_row(),
        sa.Column("schedule_id", sa.String(26), nullable=False),
        sa.Column("fire_time", Timestamp, nullable=False),
        sa.Column("run_id", sa.String(26), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"], ondelete="CASCADE",
                                name=op.f("fk_schedule_fires_schedule_id_schedules")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_fires")),
        sa.UniqueConstraint("schedule_id", "fire_time", name=op.f("uq_schedule_fires_schedule_id")),
    )  # fmt: skip
    op.create_index(op.f("ix_schedule_fires_tenant"), "schedule_fires", ["tenant"])

    op.create_table(
        "server_instances",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=False),
        sa.Column("capacity", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_instances")),
    )
    op.create_index(op.f("ix_server_instances_heartbeat_at"), "server_instances", ["heartbeat_at"])

    op.create_table(
        "leases",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("owner", sa.String(26), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", Timestamp, nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index(op.f("ix_server_instances_heartbeat_at"), table_name="server_instances")
    op.drop_table("server_instances")
    op.drop_index(op.f("ix_schedule_fires_tenant"), table_name="schedule_fires")
    op.drop_table("schedule_fires")
    op.drop_index(op.f("ix_schedules_next_fire_at"), table_name="schedules")
    op.drop_index(op.f("ix_schedules_tenant"), table_name="schedules")
    op.drop_table("schedules")
    op.drop_index(op.f("ix_idempotency_keys_tenant"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_pipeline_version_tags_version_id"), table_name="pipeline_version_tags")
    op.drop_index(op.f("ix_pipeline_version_tags_tenant"), table_name="pipeline_version_tags")
    op.drop_table("pipeline_version_tags")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_queue_owner")
        batch_op.drop_index("ix_runs_tenant_pipeline_id")
        batch_op.drop_index("ix_runs_schedule_id")
        batch_op.drop_index("ix_runs_retry_of")
        batch_op.drop_column("schedule_id")
        batch_op.drop_column("retry_of")
        batch_op.drop_column("owner")
        batch_op.drop_column("queue")
