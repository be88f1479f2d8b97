"""Restore `priority DESC` in the queue index: SQLite's batch table rebuild in 0006 recreated
ix_jobs_queue without it, so every claim sorted the whole queue instead of reading the index.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_queue", "jobs")
    op.create_index("ix_jobs_queue", "jobs", ["status", sa.text("priority DESC"), "created_at"])


def downgrade() -> None:
    pass  # the corrected index is right for every earlier schema too
