"""The wire format: pydantic models shared by the API, the worker and the Python client.

This module is the single source of truth for what crosses HTTP; the OpenAPI document is
generated from it. It imports nothing from the orchestrator or the worker.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from imagefleet.samplers import Sampler

MAX_SEED = 2**32 - 1
RANDOM_SEED = -1  # what A1111 users send for "pick one"; stored as absent, then filled
# The sampler table lives in samplers.py (names, A1111 labels, aliases); these derive from it.
SchedulerName = Sampler
SCHEDULER_NAMES: tuple[str, ...] = tuple(sampler.value for sampler in Sampler)
SHA256_PATTERN = "^[0-9a-f]{64}$"


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
        """JSON `true` is not the number 1, nor `0` a boolean, whatever Python thinks: for any
        field whose type is a number (int, float, constrained or optional) or a boolean."""
        kinds = _scalar_types(cls.model_fields[info.field_name or ""].annotation)
        if isinstance(value, bool) and bool not in kinds:
            if any(issubclass(kind, float) for kind in kinds):
                raise ValueError("must be a number, not true or false")
            if any(issubclass(kind, int) for kind in kinds):
                raise ValueError("must be an integer, not true or false")
        if kinds - {type(None)} == {bool} and value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


def _scalar_types(annotation: Any) -> set[type]:
    """The plain classes a field's annotation admits, seen through Annotated and unions."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_types(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return {kind for arg in get_args(annotation) for kind in _scalar_types(arg)}
    return {annotation} if origin is None and isinstance(annotation, type) else set()


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


class AttemptOutcome(StrEnum):
    """How one attempt ended (`running` while it holds its lease)."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    lease_expired = "lease_expired"
    cancelled = "cancelled"
    handed_back = "handed_back"


class ModelKind(StrEnum):
    """What a registered model is."""

    checkpoint = "checkpoint"
    lora = "lora"
    vae = "vae"
    embedding = "embedding"
    controlnet = "controlnet"
    annotator = "annotator"  # a preprocess model, e.g. a depth estimator (transformers DPT)


class ModelBase(StrEnum):
    """The architecture family a model belongs to; models of one combo must agree."""

    sd15 = "sd15"
    sdxl = "sdxl"


class ModelRole(StrEnum):
    """What a model does in one job; each role takes models of one kind."""

    checkpoint = "checkpoint"
    refiner = "refiner"
    vae = "vae"
    lora = "lora"
    embedding = "embedding"
    controlnet = "controlnet"
    annotator = "annotator"

    @property
    def model_kind(self) -> ModelKind:
        return ModelKind.checkpoint if self is ModelRole.refiner else ModelKind(self.value)


class FailureCode(StrEnum):
    """Why an attempt or a job failed. Workers report the first six; the orchestrator sets the
    rest. Behaviour (retry, quarantine, placement) is decided from these codes, never from text."""

    worker_shutdown = "worker_shutdown"  # handed back on SIGTERM: retried at once, not counted
    out_of_memory = "out_of_memory"  # retried, preferably on a GPU with more memory
    model_unavailable = "model_unavailable"  # download or verification failed: retried
    input_unavailable = "input_unavailable"  # an input file could not be fetched: retried
    invalid_input = "invalid_input"  # the job cannot succeed anywhere: final, not the node's fault
    worker_error = "worker_error"  # anything else on the worker: retried
    lease_expired = "lease_expired"  # the worker stopped heartbeating
    cancelled = "cancelled"  # by the client
    no_eligible_worker = "no_eligible_worker"  # nothing in the fleet can ever run it

    @property
    def is_node_fault(self) -> bool:
        """Failures that say something about the node (they count towards quarantine)."""
        return self not in (
            FailureCode.invalid_input,
            FailureCode.worker_shutdown,
            FailureCode.cancelled,
            FailureCode.no_eligible_worker,
        )


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


def _name_or_object(schema: dict[str, Any]) -> None:
    """The JSON schema says what the validator takes: `"name"`, `"name@3"` or the object."""
    as_object = dict(schema)
    schema.clear()
    schema["title"] = as_object.pop("title", "ModelUse")
    schema["description"] = as_object.pop("description", "")
    schema["anyOf"] = [
        {"type": "string", "minLength": 1, "maxLength": 200, "description": "name or name@version"},
        as_object,
    ]


class ModelUse(Strict):
    """A reference to a registered model: its name, and optionally the exact version or content
    hash. Without either, the newest version is used and recorded with the job."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_name_or_object)

    name: str = Field(min_length=1, max_length=200)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    sha256: str | None = Field(None, pattern=SHA256_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        """`"name"` and `"name@3"` are shorthands for `{"name": ..., "version": ...}`."""
        if isinstance(value, str):
            name, at, version = value.rpartition("@")
            if at and version.isdigit():
                return {"name": name, "version": int(version)}
            return {"name": value}
        return value


class JobSubmission(BaseModel):
    """What every submit body has besides its kind's params (see kinds/). Not `Strict`: its
    `kind` discriminator must not run through before-validators; the fields are strict
    types instead."""

    model_config = ConfigDict(extra="forbid")

    webhook: WebhookSpec | None = None
    allow_same_node_retry: StrictBool = Field(
        False,
        description="Retry on a node where the job already failed, but only when it has "
        "failed on every node alive in the fleet.",
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


class ModelRegistration(Strict):
    """A model to register (`POST /v1/admin/models`, like `imagefleet models add`). A local
    `source` is a path on the orchestrator's machine, hashed there; a remote one (https://,
    hf:org/repo, s3://bucket/key) needs `sha256` and `size_bytes`, which workers verify."""

    name: str = Field(min_length=1, max_length=200, pattern="^[^@]+$")
    source: str = Field(min_length=1, max_length=2000)
    kind: ModelKind = ModelKind.checkpoint
    base: ModelBase | None = Field(None, description="Detected from the files when absent.")
    config_source: str | None = Field(
        None, max_length=2000, description="For a single-file checkpoint: its configs folder."
    )
    sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    size_bytes: int | None = Field(None, gt=0)
    trigger_words: list[str] = Field(default_factory=list, max_length=32)
    fetch_configs: bool = Field(
        False, description="A single-file checkpoint without configs: workers fetch them."
    )


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


# --- worker protocol ---------------------------------------------------------------------------


class WorkerCapabilities(Strict):
    gpu_name: str = Field("cpu", max_length=200)
    vram_mb: int = Field(0, ge=0)
    max_pixels: int = Field(
        1536 * 1536, gt=0, description="Largest width*height*num_images/1 it takes."
    )
    kinds: list[str] = Field(
        default_factory=lambda: ["txt2img"],
        max_length=64,
        description="Job kinds this worker's handlers serve.",
    )


class ClaimRequest(Strict):
    worker_id: str = Field(min_length=1, max_length=200)
    node_id: str = Field(min_length=1, max_length=200)
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    resident_combos: list[str] = Field(
        default_factory=list, max_length=64, description="combo keys loaded on the GPU"
    )
    resident_models: list[str] = Field(
        default_factory=list, max_length=256, description="sha256s on GPU"
    )
    cached_models: list[str] = Field(
        default_factory=list, max_length=4096, description="sha256s on disk"
    )
    wait_seconds: float = Field(
        0.0, ge=0.0, le=300.0, description="Long-poll bound (server caps it)."
    )
    pool: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The autoscaling pool this worker belongs to (its price and its scaling).",
    )
    free_disk_bytes: int | None = Field(
        None, ge=0, le=1 << 62, description="Room left in the worker's model cache (bytes)."
    )
    download_bytes_per_s: float | None = Field(
        None, gt=0, le=1e15, description="The worker's measured model download speed."
    )
    max_jobs: int = Field(
        1,
        ge=1,
        le=8,
        description="Micro-batching: up to this many compatible jobs (same batch key: combo, "
        "size, steps, sampler...) in one answer, each its own attempt (see `ClaimResponse.more`).",
    )


class ModelRef(BaseModel):
    """Everything a worker needs to fetch, verify and use one model of a job's combo."""

    name: str
    version: int
    kind: ModelKind
    base: ModelBase | None = None
    role: ModelRole = ModelRole.checkpoint
    weight: float | None = Field(None, description="LoRA strength or ControlNet scale.")
    format: str | None = Field(None, description="e.g. diffusers, single_file, kohya, peft.")
    trigger_words: list[str] = Field(default_factory=list)
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


class InputRef(BaseModel):
    """An input file of the job (an init image, a mask): where the worker fetches it."""

    name: str = Field(description="The param it fills, e.g. init_image or mask.")
    input_id: str
    url: str = Field(description="Absolute (presigned) or relative to the orchestrator URL.")
    sha256: str
    content_type: str
    width: int
    height: int


class ResumeCheckpoint(BaseModel):
    """A checkpoint a training attempt may resume from; an assignment lists them newest first."""

    checkpoint_id: int
    step: int
    url: str = Field(description="Absolute (presigned) or relative to the orchestrator URL.")
    sha256: str
    size_bytes: int


class Assignment(BaseModel):
    job_id: str
    attempt_id: str
    fencing_token: int = Field(description="Attempt number for this job; grows with every claim.")
    lease_seconds: float
    lease_expires_at: datetime
    kind: str
    params: dict[str, Any] = Field(description="Valid for the kind's params schema.")
    models: list[ModelRef]
    combo_key: str | None = None
    inputs: list[InputRef] = Field(default_factory=list)
    uploads: list[UploadTarget] = Field(
        default_factory=list,
        description="Direct upload URLs, one per output; empty means upload through the API.",
    )
    checkpoints: list[ResumeCheckpoint] = Field(
        default_factory=list,
        description="Training kinds: the job's checkpoints, newest first; resume from the "
        "first that reads back.",
    )
    placement: str | None = Field(
        None,
        description='Why this job went to this worker, e.g. "oldest paid job; combo resident".',
    )


class ClaimResponse(BaseModel):
    assignment: Assignment | None = None
    more: list[Assignment] = Field(
        default_factory=list,
        description="With max_jobs > 1: further jobs with the first one's batch key, each "
        "its own attempt, lease and fencing token.",
    )
    quarantined: str | None = Field(
        None, description="Set when this node is quarantined: why. Ask an admin to release it."
    )
    retry_after_seconds: float = Field(
        0.0, description="When nothing was handed out: wait this long."
    )
    drain: str | None = Field(
        None,
        description="Set when the autoscaler is removing this worker: why. It gets no more "
        "work; keep asking (it may be kept after all) until the provider stops it.",
    )


class HeartbeatRequest(Strict):
    step: int = Field(0, ge=0, le=1_000_000)
    total_steps: int = Field(0, ge=0, le=1_000_000)
    loss: float | None = Field(
        None, ge=0, le=1e12, allow_inf_nan=False, description="Training kinds: the step's loss."
    )
    learning_rate: float | None = Field(
        None, ge=0, le=1e6, allow_inf_nan=False, description="Training kinds: the step's LR."
    )


class HeartbeatResponse(BaseModel):
    action: Literal["continue", "cancel"]
    lease_expires_at: datetime | None = None
    reason: str | None = None
    drain: str | None = Field(
        None,
        description="Set when the autoscaler is removing this worker: finish this job, then "
        "claim no more (the claim answers say so too).",
    )


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
        None, pattern=SHA256_PATTERN, description="For direct uploads: the file's hash."
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED + 64, description="Images only.")
    width: int | None = Field(None, gt=0, le=16384, description="Images only.")
    height: int | None = Field(None, gt=0, le=16384, description="Images only.")


class StageTimings(Strict):
    download_seconds: float = Field(0.0, ge=0, description="Fetching models and inputs.")
    model_load_seconds: float = Field(0.0, ge=0, description="Disk to GPU.")
    adapter_seconds: float = Field(0.0, ge=0, description="Applying LoRAs and embeddings.")
    inference_seconds: float = Field(0.0, ge=0)
    decode_seconds: float = Field(0.0, ge=0, description="VAE decode, when measured apart.")
    upload_seconds: float = Field(0.0, ge=0)


class CompleteRequest(Strict):
    outputs: list[CompletedOutput] = Field(min_length=1, max_length=64)
    timings: StageTimings = Field(default_factory=StageTimings)


class WorkerFailureCode(StrEnum):
    """The failure codes a worker may report (the rest of FailureCode is the orchestrator's)."""

    worker_shutdown = FailureCode.worker_shutdown.value
    out_of_memory = FailureCode.out_of_memory.value
    model_unavailable = FailureCode.model_unavailable.value
    input_unavailable = FailureCode.input_unavailable.value
    invalid_input = FailureCode.invalid_input.value
    worker_error = FailureCode.worker_error.value


class FailRequest(Strict):
    code: WorkerFailureCode
    message: str = Field("", max_length=4000)
    retryable: bool = True


class AttemptResult(BaseModel):
    """The answer to complete and fail: the job's status right after the transition."""

    job_id: str
    job_status: JobStatus


# --- batched worker calls (issue 16) -------------------------------------------------------------

MAX_BATCH_ATTEMPTS = 64


class AttemptHeartbeat(HeartbeatRequest):
    attempt_id: str = Field(min_length=1, max_length=64)


class BatchHeartbeatRequest(Strict):
    """Renews the leases of several attempts of one worker (a micro-batch) in one call."""

    attempts: list[AttemptHeartbeat] = Field(min_length=1, max_length=MAX_BATCH_ATTEMPTS)


class AttemptHeartbeatResult(BaseModel):
    """One attempt's answer: `continue` (lease renewed), `cancel` (the client cancelled the
    job) or `lost` (not this key's attempt, or its lease went to another attempt): each
    attempt of a batch keeps its own lease and fate."""

    attempt_id: str
    action: Literal["continue", "cancel", "lost"]
    lease_expires_at: datetime | None = None
    reason: str | None = None


class BatchHeartbeatResponse(BaseModel):
    results: list[AttemptHeartbeatResult]


class InlineOutput(CompletedOutput):
    """A small output sent inside the complete call, base64-encoded (the JSON body limit,
    IMAGEFLEET_MAX_BODY_BYTES, bounds what fits; bigger outputs are uploaded first)."""

    content_type: str = Field("image/png", max_length=100)
    data_base64: str = Field(min_length=1)


class InlineCompleteRequest(Strict):
    """Upload-and-complete in one call: the outputs' files and the completion together."""

    outputs: list[InlineOutput] = Field(min_length=1, max_length=MAX_BATCH_ATTEMPTS)
    timings: StageTimings = Field(default_factory=StageTimings)


# --- LoRA training (train_lora) ------------------------------------------------------------------


class CheckpointReceipt(BaseModel):
    """The answer to the `checkpoint` transition: what the orchestrator now keeps."""

    checkpoint_id: int
    step: int
    kept_steps: list[int] = Field(description="The job's checkpoints in storage, newest first.")
    deleted_steps: list[int] = Field(description="Older checkpoints deleted to keep keep_last.")


class SkippedCheckpoint(Strict):
    checkpoint_id: int = Field(ge=1, le=2**62)
    reason: str = Field(min_length=1, max_length=2000)


class ResumeReport(Strict):
    """Where a training attempt starts from, and the checkpoints it passed over (corrupt or of
    another run), for the attempt history."""

    resumed_from_step: int = Field(ge=0, le=1_000_000)
    skipped: list[SkippedCheckpoint] = Field(default_factory=list, max_length=100)


class LossPoint(BaseModel):
    step: int
    loss: float
    learning_rate: float
    attempt: int = Field(description="The attempt number that reported it.")


class TrainingCheckpointView(BaseModel):
    step: int
    attempt: int
    size_bytes: int
    created_at: datetime


class TrainingAttemptView(BaseModel):
    """One attempt of a training job: where it started, how far it got, what it skipped."""

    number: int
    outcome: AttemptOutcome
    resumed_from_step: int | None = Field(None, description="None until the worker reported.")
    reached_step: int
    billable_seconds: float
    notes: list[str] = Field(default_factory=list)


class TrainingView(BaseModel):
    """A training job's progress, checkpoints, interruptions and bill."""

    job_id: str
    status: JobStatus
    steps_done: int
    total_steps: int
    loss: float | None = None
    learning_rate: float | None = None
    eta_seconds: float | None = Field(None, description="From the current attempt's pace.")
    loss_curve: list[LossPoint]
    checkpoints: list[TrainingCheckpointView]
    attempts: list[TrainingAttemptView]
    interruptions_survived: int = Field(description="Attempts that ended without finishing.")
    steps_lost: int = Field(description="Steps trained again because an interruption lost them.")
    billable_seconds: float = Field(description="Time the job's attempts held their leases.")
    hourly_price: float | None = Field(None, description="USD per hour, from the price table.")
    cost: float | None = Field(None, description="USD; None when no price is configured.")
    cost_per_step: float | None = None
    model: ModelView | None = Field(None, description="The registered LoRA, once succeeded.")
