"""LoRA training: checkpoints, loss curve points, where each attempt resumed from, and the
image counts of dataset inputs. New tables only (and two nullable columns on `inputs`, which
SQLite adds in place), so `jobs` and its queue index are untouched.

Revision ID: training
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "training"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inputs", sa.Column("images", sa.Integer))
    op.add_column("inputs", sa.Column("uncaptioned", sa.Integer))
    op.create_table(
        "training_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt_id", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("corrupt_reason", sa.Text),
    )
    op.create_index("ix_training_checkpoints_job", "training_checkpoints", ["job_id", "step"])
    op.create_table(
        "training_points",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt_id", sa.String(32), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("loss", sa.Float, nullable=False),
        sa.Column("learning_rate", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_table(
        "training_attempts",
        sa.Column("attempt_id", sa.String(32), primary_key=True),
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("resumed_from_step", sa.Integer, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_training_attempts_job", "training_attempts", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_training_attempts_job", "training_attempts")
    op.drop_table("training_attempts")
    op.drop_table("training_points")
    op.drop_index("ix_training_checkpoints_job", "training_checkpoints")
    op.drop_table("training_checkpoints")
    with op.batch_alter_table("inputs") as batch:
        batch.drop_column("uncaptioned")
        batch.drop_column("images")
