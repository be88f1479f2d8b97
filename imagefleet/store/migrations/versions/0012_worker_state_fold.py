"""Scheduling state in the database: the owners' last claims shared by every replica (round
robin between owners no longer per replica).

Revision ID: worker_state_fold
Revises: claim_policy
"""

import sqlalchemy as sa
from alembic import op

revision = "worker_state_fold"
down_revision = "claim_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owner_service",
        sa.Column("owner_key_id", sa.String(32), primary_key=True),
        sa.Column("served_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("owner_service")
