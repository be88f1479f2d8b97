"""A partial index of the queued jobs that were tried before (usually none): an idle claim
checks in one index seek whether its empty look holds for workers on other nodes too
(orchestrator/empty_looks.py).

Revision ID: queued_retried
Revises: deployments
"""

import sqlalchemy as sa
from alembic import op

revision = "queued_retried"
down_revision = "deployments"
branch_labels = None
depends_on = None

WHERE = "status = 'queued' AND attempts > 0"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_queued_retried",
        "jobs",
        ["id"],
        postgresql_where=sa.text(WHERE),
        sqlite_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_retried", table_name="jobs")
