"""Idempotency keys for submits, and an index to count a client's queued jobs cheaply.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_key_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_jobs_owner_status", "jobs", ["owner_key_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_status", "jobs")
    op.drop_table("idempotency_keys")
