"""The worker side of the wire: claim, heartbeat, upload, complete and fail, and their batched
forms. Shared by the orchestrator's worker routes and the worker; imports nothing from either."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
)

from imagefleet.protocol import (
    MAX_SEED,
    SHA256_PATTERN,
    FailureCode,
    JobStatus,
    ModelBase,
    ModelKind,
    ModelRole,
    Strict,
)


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


# Caps on what one claim carries and takes (a worker trims its report to them).
MAX_RESIDENT_COMBOS = 64
MAX_RESIDENT_MODELS = 256
MAX_JOBS_PER_CLAIM = 8


class ClaimRequest(Strict):
    worker_id: str = Field(min_length=1, max_length=200)
    node_id: str = Field(min_length=1, max_length=200)
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    resident_combos: list[str] = Field(
        default_factory=list,
        max_length=MAX_RESIDENT_COMBOS,
        description="combo keys loaded on the GPU",
    )
    resident_models: list[str] = Field(
        default_factory=list, max_length=MAX_RESIDENT_MODELS, description="sha256s on GPU"
    )
    cached_models: list[str] = Field(
        default_factory=list, max_length=4096, description="sha256s on disk"
    )
    wait_seconds: float = Field(
        0.0,
        ge=0.0,
        le=300.0,
        description="Long-poll bound (the server caps it and ends it up to 25% early, at random).",
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
        le=MAX_JOBS_PER_CLAIM,
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


NEXT_DESCRIPTION = (
    "The worker's next claim, answered in the completion's own transaction (the answer's "
    "`next`): one request and one transaction fewer between two jobs. Answered at once, never "
    "long-polled (`wait_seconds` is not used); made only when the completion succeeds."
)


class CompleteRequest(Strict):
    outputs: list[CompletedOutput] = Field(min_length=1, max_length=64)
    timings: StageTimings = Field(default_factory=StageTimings)
    next: ClaimRequest | None = Field(None, description=NEXT_DESCRIPTION)


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
    next: ClaimResponse | None = Field(
        None,
        description="The answer to the completion's `next` claim, as /v1/worker/claim would "
        "give it without waiting (an assignment, a quarantine or drain, or nothing: then "
        "long-poll the claim as usual); null when the request asked for none or the "
        "completion repeated one that had succeeded.",
    )


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
    next: ClaimRequest | None = Field(None, description=NEXT_DESCRIPTION)
