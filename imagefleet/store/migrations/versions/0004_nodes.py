"""Node health: quarantine state per node and an event log the autoscaler can follow.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("quarantined_at", sa.Float),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "node_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_attempts_node_outcome", "attempts", ["node_id", "outcome", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_node_outcome", "attempts")
    op.drop_table("node_events")
    op.drop_table("nodes")
