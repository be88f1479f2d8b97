"""Wire models of the dashboard's endpoints: the login session and the usage overview."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from imagefleet.protocol import JobStatus

WorkerState = Literal["busy", "idle", "offline", "quarantined"]


class SessionView(BaseModel):
    """Who is logged in (never the key itself)."""

    key_id: str
    name: str
    scope: str
    tier: str


class TierQueue(BaseModel):
    tier: str
    queued: int
    running: int


class WaitStats(BaseModel):
    """Queue wait (submit to first claim) of jobs that finished in the window or run now."""

    p50_seconds: float | None = None
    p95_seconds: float | None = None
    samples: int = 0


class Bucket(BaseModel):
    """One slice of the window: what finished in it, and how long those jobs waited."""

    start: datetime
    images: int
    succeeded: int
    failed: int
    wait_p50_seconds: float | None = None
    wait_p95_seconds: float | None = None


class WorkerSummary(BaseModel):
    id: str
    node_id: str
    state: WorkerState
    gpu_name: str
    vram_mb: int
    kinds: list[str]
    last_seen_at: datetime
    running_jobs: int
    resident_models: list[str] = Field(description="Models on the GPU, as name@version.")
    cached_models: int = Field(description="Model files in the worker's disk cache.")
    cached_names: list[str] = Field(
        description="Registered models among the first cached files, as name@version."
    )
    node_failures: int = Field(description="Failed attempts of its node in the quarantine window.")
    quarantine_reason: str | None = None


class RecentJob(BaseModel):
    """A job in the admin's fleet-wide list of newest jobs."""

    id: str
    owner: str
    tier: str
    kind: str
    status: JobStatus
    created_at: datetime
    progress_step: int
    progress_total: int


class OverviewView(BaseModel):
    """Usage in a window ending now. `scope` is `fleet` for an admin key (every tenant, plus
    workers), `account` for a client key (its own jobs only; no workers)."""

    scope: Literal["fleet", "account"]
    generated_at: datetime
    window_seconds: float
    queue: list[TierQueue]
    queued: int
    running: int
    succeeded: int
    failed: int
    images: int
    images_per_hour: float
    wait: WaitStats
    cost_units_per_hour: float = Field(
        description="Sum of the kinds' cost estimates of jobs that succeeded in the window, "
        "per hour (a price per unit turns it into money)."
    )
    cost_units_per_image: float | None = None
    prices_configured: bool = Field(
        False,
        description="Whether any price is set (IMAGEFLEET_GPU_PRICES, or a pool's "
        "price_per_hour); without one the cost in money below stays null.",
    )
    cost_usd: float | None = Field(
        None,
        description="USD of the attempts of the jobs that finished in the window (lease "
        "seconds x hourly price, as /v1/usage); null when none ran on a priced worker.",
    )
    cost_usd_per_hour: float | None = None
    cost_usd_per_image: float | None = Field(
        None, description="cost_usd over the images the window's succeeded jobs delivered."
    )
    unpriced_seconds: float = Field(
        0.0, description="Lease seconds in the window on workers whose pool and GPU have no price."
    )
    series: list[Bucket]
    workers: list[WorkerSummary] | None = None
    workers_by_state: dict[str, int] | None = None
    workers_by_gpu: dict[str, int] | None = None
    recent_jobs: list[RecentJob] | None = None
