"""LoRA training's tables (registered on `tables.metadata`): checkpoints, the loss curve, and
where each attempt resumed from."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from imagefleet.store.tables import metadata

# Resumable checkpoints an attempt reported (the `checkpoint` transition). The orchestrator keeps
# the newest `keep_last` of a job: older rows are deleted with their files. A checkpoint a
# resuming worker found corrupt keeps its row, with the reason, and is never handed out again.
training_checkpoints = Table(
    "training_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt_id", String(32), nullable=False),
    Column("step", Integer, nullable=False),
    Column("key", String(300), nullable=False, unique=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("corrupt_reason", Text),
)
Index("ix_training_checkpoints_job", training_checkpoints.c.job_id, training_checkpoints.c.step)

# The loss curve: one point per heartbeat that carried a loss (rate-limited by the worker).
training_points = Table(
    "training_points",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt_id", String(32), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("loss", Float, nullable=False),
    Column("learning_rate", Float, nullable=False),
    Column("at", Float, nullable=False),
)

# Where each training attempt started from, and what it passed over on the way (corrupt or
# incompatible checkpoints): the training part of the attempt history.
training_attempts = Table(
    "training_attempts",
    metadata,
    Column("attempt_id", String(32), primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("resumed_from_step", Integer, nullable=False),
    Column("notes", Text, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_training_attempts_job", training_attempts.c.job_id)
