"""Autoscaling: pools, their status and decisions, the leader lease, the pool of each worker
and attempt (cost accounting), and drain requests.

Only new tables and added nullable columns: `jobs` is not altered (see 0008 for why).

Revision ID: autoscaling
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "autoscaling"
down_revision = "training"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("edited_at", sa.Float),
    )
    op.create_table(
        "pool_status",
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("desired", sa.Integer, nullable=False),
        sa.Column("current", sa.Integer, nullable=False),
        sa.Column("wanted", sa.Integer, nullable=False),
        sa.Column("actual", sa.Integer),
        sa.Column("queued", sa.Integer, nullable=False),
        sa.Column("running", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("history", sa.Text, nullable=False),
        sa.Column("decided_at", sa.Float, nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("error_at", sa.Float),
        sa.Column("next_try_at", sa.Float),
    )
    op.create_table(
        "scaling_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("current", sa.Integer, nullable=False),
        sa.Column("desired", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("instance_id", sa.String(200)),
        sa.Column("node_id", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("decided_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_scaling_decisions_pool", "scaling_decisions", ["pool", "id"])
    op.create_index("ix_scaling_decisions_node", "scaling_decisions", ["node_id", "action"])
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    # Plain ADD COLUMN (nullable, no default) works on SQLite without a table rebuild.
    op.add_column("workers", sa.Column("pool", sa.String(64)))
    op.add_column("workers", sa.Column("drain_requested_at", sa.Float))
    op.add_column("workers", sa.Column("drain_reason", sa.Text))
    op.add_column("attempts", sa.Column("pool", sa.String(64)))
    op.add_column("attempts", sa.Column("gpu", sa.String(200)))
    op.add_column("attempts", sa.Column("model_cache", sa.String(8)))


def downgrade() -> None:
    op.drop_column("attempts", "model_cache")
    op.drop_column("attempts", "gpu")
    op.drop_column("attempts", "pool")
    op.drop_column("workers", "drain_reason")
    op.drop_column("workers", "drain_requested_at")
    op.drop_column("workers", "pool")
    op.drop_table("leader_leases")
    op.drop_index("ix_scaling_decisions_node", "scaling_decisions")
    op.drop_index("ix_scaling_decisions_pool", "scaling_decisions")
    op.drop_table("scaling_decisions")
    op.drop_table("pool_status")
    op.drop_table("pools")
