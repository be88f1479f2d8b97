"""One settings object for every process, read from `IMAGEFLEET_*` environment variables.

Defaults make the one-machine setup work with no configuration at all: SQLite and artifacts
live in a data directory under the current working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Orchestrator settings. Every field can be set as `IMAGEFLEET_<FIELD>` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="IMAGEFLEET_", extra="ignore")

    data_dir: Path = Field(
        Path(".imagefleet"), description="Where SQLite, artifacts and models live."
    )
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in data_dir.")
    artifacts_dir: Path | None = Field(
        None, description="Local artifact store; default data_dir/artifacts."
    )

    migrate_on_start: bool = Field(
        True,
        description="Apply database migrations when the orchestrator starts. Set it to 0 where "
        "a migrations job runs `imagefleet db upgrade` first (several replicas): replicas then "
        "only check that the schema is current.",
    )

    lease_seconds: float = Field(
        30.0, gt=0, description="How long a claim lasts without heartbeat."
    )
    claim_wait_max_seconds: float = Field(
        30.0, ge=0, description="Longest long-poll a claim may ask."
    )
    reaper_interval_seconds: float = Field(
        2.0, gt=0, description="How often expired leases are reaped."
    )
    max_attempts: int = Field(3, ge=1, description="Failed attempts before a job fails for good.")
    max_attempts_per_kind: dict[str, int] = Field(
        default_factory=dict, description='Overrides per job kind, as JSON: {"train_lora": 5}.'
    )
    retry_backoff_seconds: float = Field(
        2.0, ge=0, description="Wait before retrying a failed job; doubles with each failure."
    )
    retry_backoff_max_seconds: float = Field(60.0, ge=0, description="Cap on that wait.")
    exhausted_nodes_policy: Literal["retry_same_node", "fail"] = Field(
        "retry_same_node",
        description="A job that failed on every live node (one-node fleets): retry it on the "
        "same node after a delay, or fail it for good with the reason.",
    )
    same_node_retry_delay_seconds: float = Field(
        5.0, ge=0, description="Least wait before such a same-node retry."
    )
    quarantine_failures: int = Field(
        5, ge=0, description="Failed attempts in the window that quarantine a node; 0 disables."
    )
    quarantine_window_seconds: float = Field(600.0, gt=0, description="The quarantine window.")
    tier_priority: dict[str, int] = Field(
        default_factory=lambda: {"free": 0, "paid": 10},
        description='Queue priority per client tier, as JSON: {"free": 0, "paid": 10}.',
    )

    retention_seconds: float = Field(
        7 * 24 * 3600,
        ge=0,
        description="Finished jobs and their files expire after this; 0 keeps all.",
    )
    retention_interval_seconds: float = Field(
        300.0, gt=0, description="How often the retention duty runs."
    )

    min_side: int = Field(64, ge=8, description="Smallest width or height accepted.")
    max_side: int = Field(2048, ge=8, description="Largest width or height accepted.")
    max_pixels: int = Field(1536 * 1536, gt=0, description="Largest width*height accepted.")

    max_loras: int = Field(5, ge=0, description="LoRAs one job may combine.")
    lora_weight_min: float = Field(-2.0, description="Lowest LoRA weight accepted.")
    lora_weight_max: float = Field(2.0, description="Highest LoRA weight accepted.")
    max_embeddings: int = Field(8, ge=0, description="Textual-inversion embeddings per job.")
    max_input_bytes: int = Field(
        20 << 20, gt=0, description="Largest input image a client may upload."
    )
    max_package_bytes: int = Field(
        20 << 20,
        gt=0,
        description="Largest deployment package (compressed tar.gz) a deploy may upload; "
        "it unpacks to at most 100 MiB (imagefleet/deployments/package.py).",
    )
    max_input_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest width*height of an uploaded input image."
    )
    # train_lora datasets named by URL or s3:// and fetched at submit (dataset_import.py).
    dataset_allow_private: bool = Field(
        False, description="Allow dataset URLs on private or loopback addresses."
    )
    dataset_s3_buckets: str = Field(
        "", description="Comma-separated buckets s3:// datasets may be read from."
    )
    dataset_fetch_timeout_seconds: float = Field(
        120.0, gt=0, description="Longest a dataset fetch at submit may take."
    )
    kind_plugins: str = Field(
        "", description="Comma-separated modules that register extra job kinds."
    )

    max_queued_per_key: int = Field(
        10_000, ge=1, description="Queued jobs one client key may have at once (429 beyond)."
    )
    # A platform's backend often submits for all its users through one key, so the default
    # only stops runaway clients; tighten it per deployment.
    rate_limit_per_second: float = Field(
        500.0, ge=0, description="Sustained requests/s per client key, per replica; 0 disables."
    )
    rate_limit_burst: int = Field(1000, ge=1, description="Requests a client key may burst.")
    idempotency_window_seconds: float = Field(
        24 * 3600, gt=0, description="How long an Idempotency-Key returns the same job."
    )

    proxy_downloads: bool = Field(
        False,
        description="With S3: serve downloads through the API instead of presigned URLs.",
    )

    webhook_allow_private: bool = Field(
        False, description="Allow webhook URLs on private or loopback addresses."
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Per delivery attempt.")
    webhook_max_age_seconds: float = Field(
        24 * 3600, gt=0, description="Retry a failing delivery for this long, then give up."
    )
    webhook_poll_seconds: float = Field(1.0, gt=0, description="How often the outbox is read.")

    max_body_bytes: int = Field(1 << 20, gt=0, description="Largest JSON request body.")
    max_upload_bytes: int = Field(
        64 << 20, gt=0, description="Largest artifact a worker may upload."
    )

    # Control-plane speed (issue 16).
    key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a replica trusts an API key it has looked up: a revoked key "
        "keeps working on a replica for at most this long. 0 looks every request up.",
    )
    hot_routes: bool = Field(
        True,
        description="Answer the busiest calls (submit; the worker's claim, heartbeat, "
        "complete, fail) on a lean path beside FastAPI's routing: the same answers for a third "
        "of the framework's CPU. false sends them through FastAPI like every other route.",
    )
    db_pool_size: int = Field(
        16,
        ge=1,
        description="Database connections per orchestrator process, and as many request "
        "threads, so that no request waits for a connection or opens a new one: three in four "
        "for imagefleet's own calls (the submit, the worker protocol, duties), the rest for "
        "FastAPI's plain routes (job reads, the dashboard). Parked claims hold neither; one "
        "process is one core of Python, which 16 threads keep busy.",
    )
    # What a job's lease time costs, by the GPU name workers report: training bills, and every
    # other cost (job records, /v1/usage, /metrics, the dashboard) for GPU types that no pool
    # and no [prices] of the pools file price.
    gpu_prices: dict[str, float] = Field(
        default_factory=dict,
        description='USD per worker-hour by GPU name, as JSON: {"NVIDIA GeForce RTX 4090": '
        '0.35, "cpu": 0.02}; a job on an unpriced GPU reports its seconds but no cost.',
    )
    # --- autoscaling (docs/autoscaling.md) ---
    pools_file: Path | None = Field(
        None, description="A TOML pools file; its pools are seeded into the database at start."
    )
    autoscale: bool = Field(
        True, description="Run the control loop (on the one replica holding the leader lease)."
    )
    autoscale_interval_seconds: float = Field(
        5.0, gt=0, description="How often the leader decides every pool's replicas."
    )
    leader_lease_seconds: float = Field(
        15.0, gt=0, description="The leader lease; another replica takes over after it expires."
    )
    # Progress streams and the synchronous compatibility endpoints (docs/api.md, compat.md).
    events_stream_max_seconds: float = Field(
        300.0,
        ge=0,
        description="An event stream closes after this long (clients reconnect with "
        "Last-Event-ID, as EventSource does); 0 sends what is recorded and closes.",
    )
    compat_wait_seconds: float = Field(
        300.0,
        ge=0,
        description="How long the OpenAI and A1111 endpoints wait for their job before "
        "answering 504 with its id.",
    )
    compat_default_model: str = Field(
        "",
        description="The checkpoint the OpenAI and A1111 endpoints use when a request names "
        "none (or names an OpenAI model such as dall-e-3).",
    )
    # --- scheduling (issue 11) ---
    policy: Literal["model-aware", "fifo", "declared-models", "lookahead-32"] = Field(
        "model-aware",
        description="How a claim ranks queued jobs: model-aware (tiers, aging, fairness between "
        "clients, what the worker holds) or a baseline (see docs/simulator.md).",
    )
    aging_bound_seconds: float = Field(
        3600.0, gt=0, description="Model-aware policy: no job should wait longer than this."
    )
    head_start_jobs: int = Field(
        0,
        ge=0,
        description="Model-aware policy: while a client has this many jobs running, its other "
        "jobs rank without their tier's head start (0: no limit; docs/simulator.md).",
    )
    unservable_after_seconds: float = Field(
        3600.0,
        ge=0,
        description="A queued job no worker seen recently can run fails after this long, with "
        "the reason (0 never fails it).",
    )
    worker_seen_seconds: float = Field(
        24 * 3600.0,
        gt=0,
        description="Workers seen within this window count when a submit checks that some "
        "worker could ever run the job.",
    )

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'imagefleet.db').resolve()}"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        return self

    @property
    def artifacts_path(self) -> Path:
        """The artifact directory, always set after validation."""
        assert self.artifacts_dir is not None
        return self.artifacts_dir
