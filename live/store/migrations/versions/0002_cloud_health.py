"""The policy's view of each cloud, kept across restarts and leader changes.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cloud_health",
        sa.Column("cloud", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("since", sa.Float, nullable=True),
        sa.Column("backoff_s", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=True),
        sa.Column("probe_sent", sa.Boolean, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("probe_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("cloud_health")
