"""Scheduling state in the database, one record of each kind:

- `workers.resident_models` and `workers.cached_models` (the dashboard's copy of what a worker
  holds) are dropped: `worker_state`, written by the same claims since 0011, is the one record
  the scheduler and the dashboard read. A worker that has not claimed since 0011 shows no models
  until its next claim.
- `owner_service`: the owners' last claims, shared by every replica (round robin between owners
  no longer per replica).

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
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("cached_models")
        batch.drop_column("resident_models")
    op.create_table(
        "owner_service",
        sa.Column("owner_key_id", sa.String(32), primary_key=True),
        sa.Column("served_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("owner_service")
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("resident_models", sa.Text))
        batch.add_column(sa.Column("cached_models", sa.Text))
