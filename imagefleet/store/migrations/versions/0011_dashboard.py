"""What each worker has resident and cached, for the dashboard's workers page, and an index on
when jobs finished, for its overview window.

Revision ID: dashboard
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "dashboard"
down_revision = "job_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `workers` has no index that a SQLite batch rebuild could lose.
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("resident_models", sa.Text))
        batch.add_column(sa.Column("cached_models", sa.Text))
    # A plain CREATE INDEX: `jobs` is not rebuilt, so ix_jobs_queue keeps its order.
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("cached_models")
        batch.drop_column("resident_models")
