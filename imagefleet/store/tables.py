"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/versions` create exactly this.

Times are stored as float seconds since the epoch: portable across SQLite and PostgreSQL,
cheap to compare in lease checks, and converted to datetimes only at the API edge.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("webhook_secret", String(64)),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("source", Text, nullable=False),
    Column("config_source", Text),
    Column("config_sha256", String(64)),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("base", String(16)),
    Column("format", String(32)),
    Column("trigger_words", Text),
    UniqueConstraint("name", "version", name="uq_models_name_version"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("params", Text, nullable=False),
    Column("model_id", Integer, ForeignKey("models.id")),
    Column("pixels", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("progress_step", Integer, nullable=False, default=0),
    Column("progress_total", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("current_attempt_id", String(32)),
    Column("lease_expires_at", Float),
    Column("result_attempt_id", String(32)),
    Column("error_code", String(100)),
    Column("error_message", Text),
    Column("stage_timings", Text),
    Column("webhook_url", Text),
    Column("webhook_events", Text),
    Column("run_after", Float),
    Column("min_vram_mb", Integer),
    Column("allow_same_node", Boolean, nullable=False, server_default=false()),
    Column("same_node_after", Float),
    Column("combo_key", String(64)),
    Column("cost_units", Float),
    Column("required_vram_mb", Integer),
)
Index("ix_jobs_queue", jobs.c.status, jobs.c.priority.desc(), jobs.c.created_at)
Index("ix_jobs_owner", jobs.c.owner_key_id, jobs.c.created_at, jobs.c.id)
Index("ix_jobs_lease", jobs.c.status, jobs.c.lease_expires_at)
Index("ix_jobs_owner_status", jobs.c.owner_key_id, jobs.c.status)
# The dashboard's overview window (store/overview.py).
Index("ix_jobs_finished", jobs.c.finished_at)

# The resolved combo of each job: which exact model versions it needs, in which role. Indexed
# by content hash so "queued jobs needing model X" is an index lookup, not a scan.
job_models = Table(
    "job_models",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("role", String(16), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("weight", Float),
)
Index("ix_job_models_sha256", job_models.c.sha256, job_models.c.job_id)

# Input files clients uploaded (init images, masks), and which job reads which.
inputs = Table(
    "inputs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("key", String(300), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    # A dataset zip (train_lora): its image count and how many images lack a caption file.
    Column("images", Integer),
    Column("uncaptioned", Integer),
)
Index("ix_inputs_owner_created", inputs.c.owner_key_id, inputs.c.created_at)

job_inputs = Table(
    "job_inputs",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("input_id", String(32), ForeignKey("inputs.id"), nullable=False),
)
Index("ix_job_inputs_input", job_inputs.c.input_id)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner_key_id", String(32), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("worker_id", String(200), nullable=False),
    Column("node_id", String(200), nullable=False),
    Column("worker_key_id", String(32)),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("outcome", String(32), nullable=False),
    Column("error_code", String(100)),
    Column("error_message", Text),
    UniqueConstraint("job_id", "seq", name="uq_attempts_job_seq"),
)
Index("ix_attempts_job", attempts.c.job_id)
Index("ix_attempts_node_outcome", attempts.c.node_id, attempts.c.outcome, attempts.c.ended_at)

artifacts = Table(
    "artifacts",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt_id", String(32), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("seed", BigInteger),
    Column("width", Integer),
    Column("height", Integer),
    Column("accepted", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_artifacts_job", artifacts.c.job_id, artifacts.c.attempt_id)

workers = Table(
    "workers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("node_id", String(200), nullable=False),
    Column("capabilities", Text, nullable=False),
    Column("first_seen_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    # What the worker holds (resident and cached models) is in `worker_state`, the one record
    # the scheduler and the dashboard both read (migration 0012).
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("quarantined_at", Float),
    Column("reason", Text),
    Column("updated_at", Float, nullable=False),
)

node_events = Table(
    "node_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("owner_key_id", String(32), nullable=False),
    Column("event", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("gave_up_at", Float),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
)
Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.delivered_at,
    webhook_deliveries.c.gave_up_at,
    webhook_deliveries.c.next_attempt_at,
)
Index("ix_webhook_deliveries_job", webhook_deliveries.c.job_id)

# Workers say their pool when they claim; the autoscaler asks one to drain (stop claiming,
# finish or hand back its job) through its claim and heartbeat answers.
workers.append_column(Column("pool", String(64)))
workers.append_column(Column("drain_requested_at", Float))
workers.append_column(Column("drain_reason", Text))
# Every claim and heartbeat asks whether its node is being drained.
Index("ix_workers_node", workers.c.node_id)
# The pool and GPU an attempt ran on: its cost is its lease time at that pool's price.
attempts.append_column(Column("pool", String(64)))
attempts.append_column(Column("gpu", String(200)))
# Where the job's checkpoint was when the worker claimed it: gpu, disk or miss (/metrics).
attempts.append_column(Column("model_cache", String(8)))
# What happened to each job, in order (queued, running, progress, succeeded, failed,
# cancelled): the server-sent event streams read it. `id` is global and only grows, so it is
# the SSE event id a client resumes from (Last-Event-ID), for one job or all of a key's jobs.
job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("owner_key_id", String(32), nullable=False),
    Column("event", String(32), nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_job_events_job", job_events.c.job_id, job_events.c.id)
Index("ix_job_events_owner", job_events.c.owner_key_id, job_events.c.id)
# --- model-aware claims (issue 11) -------------------------------------------------------------
# Why each claimed job went to its worker ("oldest paid job; combo resident"), for the job view.
# A plain ADD COLUMN: SQLite keeps ix_jobs_queue as it is.
jobs.append_column(Column("placement", Text))
# Set at submit when no worker seen recently could run the job (the reason); the reaper fails it
# `IMAGEFLEET_UNSERVABLE_AFTER_SECONDS` after `warned_at` unless a capable worker turned up.
jobs.append_column(Column("warning", Text))
jobs.append_column(Column("warned_at", Float))
Index("ix_jobs_warned", jobs.c.status, jobs.c.warned_at)
# The claim's bounded probes: the oldest queued jobs of one owner, of one combo, of one checkpoint
# (jobs.model_id is the job's checkpoint), each one index range scan whatever the queue's depth.
Index(
    "ix_jobs_queued_owner",
    jobs.c.status,
    jobs.c.owner_key_id,
    jobs.c.priority.desc(),
    jobs.c.created_at,
)
Index("ix_jobs_queued_combo", jobs.c.status, jobs.c.combo_key, jobs.c.created_at)
Index("ix_jobs_queued_checkpoint", jobs.c.status, jobs.c.model_id, jobs.c.created_at)
Index("ix_models_sha256", models.c.sha256)
# Queued jobs that were tried before (few, usually none): whether an idle claim's empty look
# holds for other nodes too (store.nodes.claim_blocks, orchestrator.empty_looks).
RETRIED_QUEUED_WHERE = "status = 'queued' AND attempts > 0"
Index(
    "ix_jobs_queued_retried",
    jobs.c.id,
    postgresql_where=text(RETRIED_QUEUED_WHERE),
    sqlite_where=text(RETRIED_QUEUED_WHERE),
)

# What each worker reported with its last claim: GPU, what it holds on the GPU and on disk, free
# disk, measured download speed. The claim ranks with the request itself; this row serves the
# queue's explanations ("waiting for a worker that holds model X") and the warm-worker wait.
worker_state = Table(
    "worker_state",
    metadata,
    Column("worker_id", String(200), primary_key=True),
    Column("node_id", String(200), nullable=False),
    Column("gpu_name", String(200), nullable=False),
    Column("vram_mb", Integer, nullable=False),
    Column("max_pixels", BigInteger, nullable=False),
    Column("kinds", Text, nullable=False),
    Column("resident_combos", Text, nullable=False),
    Column("resident_models", Text, nullable=False),
    Column("cached_models", Text, nullable=False),
    Column("free_disk_bytes", BigInteger),
    Column("download_bytes_per_s", Float),
    Column("updated_at", Float, nullable=False),
)
Index("ix_worker_state_updated", worker_state.c.updated_at)

# Tables declared in their own modules, on this metadata (imported last: they import it).
from imagefleet.store import tables_autoscaling as _tables_autoscaling  # noqa: E402, F401
from imagefleet.store import tables_deployments as _tables_deployments  # noqa: E402, F401
from imagefleet.store import tables_scheduling as _tables_scheduling  # noqa: E402, F401
from imagefleet.store import tables_training as _tables_training  # noqa: E402, F401
