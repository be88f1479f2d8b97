"""Retry policy per job: backoff time, a VRAM floor after out-of-memory, same-node consent.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("run_after", sa.Float))
        batch.add_column(sa.Column("min_vram_mb", sa.Integer))
        batch.add_column(
            sa.Column("allow_same_node", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("allow_same_node")
        batch.drop_column("min_vram_mb")
        batch.drop_column("run_after")
