"""The wire format: pydantic models shared by the API, the worker and the Python client.

This module is the single source of truth for what crosses HTTP; the OpenAPI document is
generated from it. It imports nothing from the orchestrator or the worker.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from imagefleet.samplers import Sampler, resolve_sampler

MAX_SEED = 2**32 - 1
RANDOM_SEED = -1  # what A1111 users send for "pick one"; stored as absent, then filled
# The sampler table lives in samplers.py (names, A1111 labels, aliases); these derive from it.
SchedulerName = Sampler
SCHEDULER_NAMES: tuple[str, ...] = tuple(sampler.value for sampler in Sampler)
JobKind = Literal["txt2img"]
JOB_KINDS: tuple[JobKind, ...] = ("txt2img",)
ModelKind = Literal["checkpoint"]


class Strict(BaseModel):
    """Refuses unknown fields so that a typo is a 422, not a silently ignored option, and text
    that cannot be stored: lone surrogates (not encodable as UTF-8) and NUL characters (refused
    by PostgreSQL)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        _check_text(value)
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_int_confusion(cls, value: Any, info: ValidationInfo) -> Any:
        """JSON `true` is not the integer 1, nor `0` a boolean, whatever Python thinks."""
        annotation = cls.model_fields[info.field_name or ""].annotation
        if isinstance(value, bool) and annotation in (int, int | None):
            raise ValueError("must be an integer, not true or false")
        if annotation is bool and not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    elif isinstance(value, list | tuple):
        for item in value:
            _check_text(item)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Txt2ImgParams(Strict):
    """What a client may ask of a txt2img job. Size bounds beyond these are server settings."""

    prompt: str = Field(min_length=1, max_length=4000)
    negative_prompt: str | None = Field(None, max_length=4000)
    model: str = Field(min_length=1, max_length=200, description="A registered model name.")
    width: int = Field(512, ge=8, le=16384, description="Pixels, a multiple of 8.")
    height: int = Field(512, ge=8, le=16384, description="Pixels, a multiple of 8.")
    steps: int = Field(30, ge=1, le=150)
    guidance_scale: float = Field(7.0, ge=0.0, le=50.0)
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Random when absent or -1 (as in A1111)."
    )
    num_images: int = Field(1, ge=1, le=8)
    scheduler: SchedulerName = Field(
        Sampler.dpmpp_2m,
        description="A sampler's API name; its A1111 label (`DPM++ 2M Karras`) is accepted too.",
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _minus_one_is_random(cls, value: Any) -> Any:
        return None if type(value) is int and value == RANDOM_SEED else value

    @field_validator("scheduler", mode="before")
    @classmethod
    def _sampler_spellings(cls, value: Any) -> Any:
        """A1111 labels ("Euler a") and aliases mean their sampler; the API name is stored."""
        if isinstance(value, str) and (sampler := resolve_sampler(value)) is not None:
            return sampler
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_eight(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value


WebhookEvent = Literal["running", "succeeded", "failed", "cancelled", "checkpoint"]
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("running", "succeeded", "failed", "cancelled")


class WebhookSpec(Strict):
    """Where to POST job events. Deliveries are signed (see docs/webhooks.md)."""

    url: AnyHttpUrl = Field(description="http(s) URL; private addresses need operator consent.")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1, max_length=5
    )

    @field_validator("url")
    @classmethod
    def _short_enough(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2000:
            raise ValueError("must be at most 2000 characters")
        return value


class Txt2ImgJob(Strict):
    kind: Literal["txt2img"] = "txt2img"
    params: Txt2ImgParams
    webhook: WebhookSpec | None = None
    allow_same_node_retry: bool = Field(
        False,
        description="Retry on a node where the job already failed, but only when it has "
        "failed on every node alive in the fleet.",
    )


# One kind for now; when others come this becomes a union discriminated on `kind`.
JobCreate = Txt2ImgJob


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
    model_load_seconds: float | None = None
    inference_seconds: float | None = None
    upload_seconds: float | None = None
    total_seconds: float | None = None


class OutputView(BaseModel):
    index: int
    url: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    seed: int


class JobError(BaseModel):
    code: str
    message: str


class JobView(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    tier: str
    params: Txt2ImgParams
    progress: Progress
    timings: Timings
    outputs: list[OutputView]
    error: JobError | None = None
    attempts: int


class AttemptView(BaseModel):
    """One worker's try at a job, as its owner may see it."""

    number: int
    worker_id: str
    node_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: Literal["running", "succeeded", "failed", "lease_expired", "cancelled", "handed_back"]
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
    sha256: str
    size_bytes: int


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


# --- worker protocol ---------------------------------------------------------------------------


class WorkerCapabilities(Strict):
    gpu_name: str = Field("cpu", max_length=200)
    vram_mb: int = Field(0, ge=0)
    max_pixels: int = Field(
        1536 * 1536, gt=0, description="Largest width*height*num_images/1 it takes."
    )
    kinds: list[JobKind] = Field(default_factory=lambda: list(JOB_KINDS))


class ClaimRequest(Strict):
    worker_id: str = Field(min_length=1, max_length=200)
    node_id: str = Field(min_length=1, max_length=200)
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    resident_models: list[str] = Field(
        default_factory=list, max_length=64, description="sha256s on GPU"
    )
    cached_models: list[str] = Field(
        default_factory=list, max_length=4096, description="sha256s on disk"
    )
    wait_seconds: float = Field(
        0.0, ge=0.0, le=300.0, description="Long-poll bound (server caps it)."
    )


class ModelRef(BaseModel):
    """Everything a worker needs to fetch and verify one model."""

    name: str
    version: int
    kind: ModelKind
    source: str
    sha256: str
    size_bytes: int
    config_source: str | None = Field(
        None, description="For a single-file checkpoint: a diffusers folder with its configs."
    )
    config_sha256: str | None = None


class UploadTarget(BaseModel):
    """Where a worker puts output `index` itself, bypassing the API (S3-compatible stores)."""

    index: int
    url: str = Field(description="Presigned PUT URL; send exactly `content_type`.")
    content_type: str
    multipart_threshold_bytes: int = Field(
        description="Files larger than this go through the multipart endpoints instead."
    )


class Assignment(BaseModel):
    job_id: str
    attempt_id: str
    fencing_token: int = Field(description="Attempt number for this job; grows with every claim.")
    lease_seconds: float
    lease_expires_at: datetime
    kind: JobKind
    params: Txt2ImgParams
    models: list[ModelRef]
    uploads: list[UploadTarget] = Field(
        default_factory=list,
        description="Direct upload URLs, one per output; empty means upload through the API.",
    )


class ClaimResponse(BaseModel):
    assignment: Assignment | None = None
    quarantined: str | None = Field(
        None, description="Set when this node is quarantined: why. Ask an admin to release it."
    )
    retry_after_seconds: float = Field(
        0.0, description="When nothing was handed out: wait this long."
    )


class HeartbeatRequest(Strict):
    step: int = Field(0, ge=0, le=1_000_000)
    total_steps: int = Field(0, ge=0, le=1_000_000)


class HeartbeatResponse(BaseModel):
    action: Literal["continue", "cancel"]
    lease_expires_at: datetime | None = None
    reason: str | None = None


class MultipartStart(Strict):
    size_bytes: int = Field(gt=0)
    content_type: str = Field("image/png", max_length=100)


class MultipartPart(BaseModel):
    part_number: int
    url: str
    size_bytes: int


class MultipartUpload(BaseModel):
    upload_id: str
    part_size: int
    parts: list[MultipartPart]


class FinishedPart(Strict):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=200)


class MultipartFinish(Strict):
    upload_id: str = Field(min_length=1, max_length=1000)
    parts: list[FinishedPart] = Field(min_length=1, max_length=10_000)


class UploadedArtifact(BaseModel):
    key: str
    size_bytes: int
    sha256: str


class CompletedOutput(Strict):
    index: int = Field(ge=0, le=63)
    sha256: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="For direct uploads: the file's hash."
    )
    seed: int = Field(ge=0, le=MAX_SEED + 64)
    width: int = Field(gt=0, le=16384)
    height: int = Field(gt=0, le=16384)


class StageTimings(Strict):
    model_load_seconds: float = Field(0.0, ge=0)
    inference_seconds: float = Field(0.0, ge=0)
    upload_seconds: float = Field(0.0, ge=0)


class CompleteRequest(Strict):
    outputs: list[CompletedOutput] = Field(min_length=1, max_length=64)
    timings: StageTimings = Field(default_factory=StageTimings)


class FailRequest(Strict):
    code: str = Field(min_length=1, max_length=100)
    message: str = Field("", max_length=4000)
    retryable: bool = True


class AttemptOutcome(BaseModel):
    job_id: str
    job_status: JobStatus
