"""Model-aware claims: each job's placement reason and the warning of a job no worker could
run, the indexes of the claim's bounded probes (per owner, per combo, per checkpoint; models by
sha256), and each worker's reported state.

`placement` is a plain ADD COLUMN (no batch rebuild of `jobs`), so SQLite keeps
`ix_jobs_queue`'s `priority DESC`.

Revision ID: claim_policy
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "claim_policy"
down_revision = "dashboard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("placement", sa.Text))
    op.add_column("jobs", sa.Column("warning", sa.Text))
    op.add_column("jobs", sa.Column("warned_at", sa.Float))
    op.create_index("ix_jobs_warned", "jobs", ["status", "warned_at"])
    op.create_index(
        "ix_jobs_queued_owner",
        "jobs",
        ["status", "owner_key_id", sa.text("priority DESC"), "created_at"],
    )
    op.create_index("ix_jobs_queued_combo", "jobs", ["status", "combo_key", "created_at"])
    op.create_index("ix_jobs_queued_checkpoint", "jobs", ["status", "model_id", "created_at"])
    op.create_index("ix_models_sha256", "models", ["sha256"])
    op.create_table(
        "worker_state",
        sa.Column("worker_id", sa.String(200), primary_key=True),
        sa.Column("node_id", sa.String(200), nullable=False),
        sa.Column("gpu_name", sa.String(200), nullable=False),
        sa.Column("vram_mb", sa.Integer, nullable=False),
        sa.Column("max_pixels", sa.BigInteger, nullable=False),
        sa.Column("kinds", sa.Text, nullable=False),
        sa.Column("resident_combos", sa.Text, nullable=False),
        sa.Column("resident_models", sa.Text, nullable=False),
        sa.Column("cached_models", sa.Text, nullable=False),
        sa.Column("free_disk_bytes", sa.BigInteger),
        sa.Column("download_bytes_per_s", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_worker_state_updated", "worker_state", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_state_updated", "worker_state")
    op.drop_table("worker_state")
    op.drop_index("ix_models_sha256", "models")
    op.drop_index("ix_jobs_queued_checkpoint", "jobs")
    op.drop_index("ix_jobs_queued_combo", "jobs")
    op.drop_index("ix_jobs_queued_owner", "jobs")
    op.drop_index("ix_jobs_warned", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("warned_at")
        batch.drop_column("warning")
        batch.drop_column("placement")
    op.drop_index("ix_jobs_queue", "jobs")
    op.create_index("ix_jobs_queue", "jobs", ["status", sa.text("priority DESC"), "created_at"])
