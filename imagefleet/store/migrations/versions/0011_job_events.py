"""Job events: the ordered record that progress streams (server-sent events) read.

A new table only: `jobs` is not altered, so SQLite keeps its queue index as it is.

Revision ID: job_events
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "job_events"
down_revision = "autoscaling"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner_key_id", sa.String(32), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    op.create_index("ix_job_events_owner", "job_events", ["owner_key_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_events_owner", "job_events")
    op.drop_index("ix_job_events_job", "job_events")
    op.drop_table("job_events")
