"""What the API answers with: jobs (progress, timings, outputs, combo, cost, why a queued job
waits), attempts, webhook deliveries, the account, models, inputs and nodes. The requests and
the enums these use are in `protocol.py`; like it, this module imports nothing from the
orchestrator or the worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from imagefleet.protocol import (
    AttemptOutcome,
    JobStatus,
    ModelBase,
    ModelKind,
    ModelRole,
    WebhookEvent,
)


class Progress(BaseModel):
    fraction: float = Field(ge=0.0, le=1.0)
    step: int
    total_steps: int


class Timings(BaseModel):
    """Wall-clock points and per-stage seconds; a stage not reached yet is null."""

    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_seconds: float | None = None
    download_seconds: float | None = None
    model_load_seconds: float | None = None
    adapter_seconds: float | None = None
    inference_seconds: float | None = None
    decode_seconds: float | None = None
    upload_seconds: float | None = None
    total_seconds: float | None = None


class OutputView(BaseModel):
    index: int
    url: str
    content_type: str
    size_bytes: int
    width: int | None = None
    height: int | None = None
    seed: int | None = None


class JobError(BaseModel):
    code: str
    message: str


class JobModelView(BaseModel):
    """One model of the job's combo, as resolved at submit."""

    role: ModelRole
    name: str
    version: int
    sha256: str
    weight: float | None = None


class JobCostView(BaseModel):
    """What a job cost: every attempt's lease time (claim to end) at its pool's hourly price."""

    billable_seconds: float = Field(description="Lease seconds over all its attempts.")
    cost_usd: float | None = Field(None, description="None when no attempt ran on a priced pool.")
    cost_per_image_usd: float | None = None
    unpriced_seconds: float = Field(0.0, description="Lease time on workers with no price.")


class QueueView(BaseModel):
    """Why a queued job waits and roughly where it stands (counts are capped: `ahead_capped`
    means "at least that many")."""

    reason: str
    ahead: int = Field(description="Queued jobs that rank ahead of it (priority, then age).")
    ahead_own: int = Field(description="Of those, your own.")
    ahead_capped: bool = False


class JobView(BaseModel):
    id: str
    kind: str = Field(description="The job kind; `params` follow that kind's schema.")
    status: JobStatus
    tier: str
    params: dict[str, Any]
    models: list[JobModelView] = Field(default_factory=list)
    combo_key: str | None = Field(None, description="Identifies the set of models it needs.")
    progress: Progress
    timings: Timings
    outputs: list[OutputView]
    error: JobError | None = Field(None, description="Why a failed or cancelled job ended.")
    last_error: JobError | None = Field(
        None, description="While a job waits for a retry: the error of its last failed attempt."
    )
    attempts: int
    cost: JobCostView | None = Field(None, description="Set once an attempt has claimed it.")
    placement: str | None = Field(
        None, description="Why its last attempt's worker got it (set when claimed)."
    )
    queue: QueueView | None = Field(
        None, description="For a queued job read on its own: why it waits, and where it stands."
    )
    warning: str | None = Field(
        None,
        description="Set when no worker seen recently could run this job; it fails after "
        "IMAGEFLEET_UNSERVABLE_AFTER_SECONDS unless one joins.",
    )
    owner: str | None = Field(
        None, description="The owning key's name: set only in an admin's all-tenants listing."
    )


class AttemptView(BaseModel):
    """One worker's try at a job, as its owner may see it."""

    number: int
    worker_id: str
    node_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: AttemptOutcome
    error: JobError | None = None


class WebhookDeliveryView(BaseModel):
    """One event's delivery to the job's webhook, with its retry state."""

    id: int
    event: WebhookEvent
    url: str
    state: Literal["pending", "delivered", "gave_up"]
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime


class AccountView(BaseModel):
    """The calling key, and the secret its webhook deliveries are signed with."""

    key_id: str
    name: str
    scope: str
    tier: str
    webhook_secret: str


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page.")


class ModelView(BaseModel):
    name: str
    version: int
    kind: ModelKind
    base: ModelBase | None = None
    format: str | None = None
    sha256: str
    size_bytes: int
    trigger_words: list[str] = Field(default_factory=list)


class InputView(BaseModel):
    """An uploaded input image; pass its id as a job's `init_image`, `mask` etc."""

    id: str
    content_type: str
    size_bytes: int
    sha256: str
    width: int
    height: int
    images: int | None = Field(None, description="A dataset zip: how many images it holds.")
    uncaptioned: int | None = Field(
        None, description="A dataset zip: images without a caption file (need instance_prompt)."
    )


class NodeView(BaseModel):
    id: str
    status: Literal["active", "quarantined"]
    reason: str | None = None
    quarantined_at: datetime | None = None
    recent_failures: int = Field(description="Failed attempts within the quarantine window.")
    last_seen_at: datetime | None = None


class NodeEventView(BaseModel):
    id: int
    node_id: str
    kind: Literal["quarantined", "released"]
    reason: str
    created_at: datetime
