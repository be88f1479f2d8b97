"""Job kinds and model combos: model kinds with their base architecture, each job's resolved
combo (job_models) and its key, uploaded inputs (init images, masks).

Existing jobs keep working: each gets its checkpoint as its combo (role checkpoint) and the
combo key that submit would compute, so claims, views and scheduling read them like new ones.

Revision ID: 0010
Revises: 0009
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("base", sa.String(16)))
        batch.add_column(sa.Column("format", sa.String(32)))
        batch.add_column(sa.Column("trigger_words", sa.Text))
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("model_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("combo_key", sa.String(64)))
        batch.add_column(sa.Column("cost_units", sa.Float))
        batch.add_column(sa.Column("required_vram_mb", sa.Integer))
    # SQLite's batch rebuild of `jobs` recreates its indexes without `priority DESC` (as in
    # 0006; see 0008): put the queue index back as claims need it.
    op.drop_index("ix_jobs_queue", "jobs")
    op.create_index("ix_jobs_queue", "jobs", ["status", sa.text("priority DESC"), "created_at"])
    op.create_table(
        "job_models",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("weight", sa.Float),
    )
    op.create_index("ix_job_models_sha256", "job_models", ["sha256", "job_id"])
    op.create_table(
        "inputs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_inputs_owner_created", "inputs", ["owner_key_id", "created_at"])
    op.create_table(
        "job_inputs",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("input_id", sa.String(32), sa.ForeignKey("inputs.id"), nullable=False),
    )
    op.create_index("ix_job_inputs_input", "job_inputs", ["input_id"])
    _backfill_combos()


def _backfill_combos() -> None:
    """Every existing job ran one checkpoint: that is its combo. Set-based, one pass per model
    (few), so a large jobs table migrates in a few statements."""
    conn = op.get_bind()
    for model_id, sha256 in conn.execute(sa.text("SELECT id, sha256 FROM models")).all():
        key = hashlib.sha256(f"checkpoint:{sha256}".encode()).hexdigest()
        params = {"model": model_id, "sha": sha256, "key": key}
        conn.execute(
            sa.text(
                "INSERT INTO job_models (job_id, position, role, model_id, sha256, weight) "
                "SELECT id, 0, 'checkpoint', model_id, :sha, NULL FROM jobs "
                "WHERE model_id = :model"
            ),
            params,
        )
        conn.execute(sa.text("UPDATE jobs SET combo_key = :key WHERE model_id = :model"), params)


def downgrade() -> None:
    op.drop_index("ix_job_inputs_input", "job_inputs")
    op.drop_table("job_inputs")
    op.drop_index("ix_inputs_owner_created", "inputs")
    op.drop_table("inputs")
    op.drop_index("ix_job_models_sha256", "job_models")
    op.drop_table("job_models")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("required_vram_mb")
        batch.drop_column("cost_units")
        batch.drop_column("combo_key")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("trigger_words")
        batch.drop_column("format")
        batch.drop_column("base")
