"""The initial schema: VMs, transitions, users, requests, allocations, health samples, leak candidates.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vms",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(128), nullable=False),
        sa.Column("cloud", sa.String(128), nullable=False),
        sa.Column("cloud_id", sa.String(256), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("probe", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ready_at", sa.Float, nullable=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("allocated_at", sa.Float, nullable=True),
        sa.Column("last_input_at", sa.Float, nullable=True),
        sa.Column("last_busy_at", sa.Float, nullable=True),
        sa.Column("cpu_percent", sa.Float, nullable=False),
        sa.Column("io_bytes_per_s", sa.Float, nullable=False),
        sa.Column("warned_at", sa.Float, nullable=True),
        sa.Column("drained", sa.Boolean, nullable=False),
        sa.Column("terminate_sent_at", sa.Float, nullable=True),
        sa.Column("gone_at", sa.Float, nullable=True),
    )
    op.create_index("uq_vms_live_cloud_id", "vms", ["cloud", "cloud_id"], unique=True,
                    sqlite_where=sa.text("state != 'gone'"), postgresql_where=sa.text("state != 'gone'"))
    op.create_index("ix_vms_state", "vms", ["state"])
    op.create_table(
        "vm_transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("vm_id", sa.String(64), sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reason", sa.String(128), nullable=True),
    )
    op.create_index("ix_vm_transitions_vm_id", "vm_transitions", ["vm_id"])
    op.create_table(
        "users",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("first_seen_at", sa.Float, nullable=False),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(128), nullable=False),
        sa.Column("user", sa.String(128), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("announced", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("vm_id", sa.String(64), sa.ForeignKey("vms.id"), nullable=True),
        sa.Column("assigned_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    op.create_index("ix_requests_state", "requests", ["state"])
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), sa.ForeignKey("requests.id"), nullable=False, unique=True),
        sa.Column("vm_id", sa.String(64), sa.ForeignKey("vms.id"), nullable=False),
        sa.Column("active_vm", sa.String(64), nullable=True, unique=True),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_allocations_vm_id", "allocations", ["vm_id"])
    op.create_table(
        "health_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cloud", sa.String(128), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("call", sa.String(32), nullable=True),
    )
    op.create_index("ix_health_cloud_at", "health_samples", ["cloud", "at"])
    op.create_table(
        "leak_candidates",
        sa.Column("cloud", sa.String(128), primary_key=True),
        sa.Column("cloud_id", sa.String(256), primary_key=True),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("passes", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("leak_candidates", "health_samples", "allocations", "requests", "users",
                  "vm_transitions", "vms"):
        op.drop_table(table)
