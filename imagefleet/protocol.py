"""The wire format: pydantic models shared by the API, the worker and the Python client.

This module (the requests and the enums they share), with `api_views.py` (what the API answers
with: jobs, attempts, models, inputs, nodes), `worker_protocol.py` (claim, heartbeat, upload,
complete, fail) and `training_protocol.py` (checkpoints and the training view), is the single
source of truth for what crosses HTTP; the OpenAPI document is generated from them. They import
nothing from the orchestrator or the worker.
"""

from __future__ import annotations

import functools
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
        kinds = _field_types(cls, info.field_name or "")
        if isinstance(value, bool) and bool not in kinds:
            if any(issubclass(kind, float) for kind in kinds):
                raise ValueError("must be a number, not true or false")
            if any(issubclass(kind, int) for kind in kinds):
                raise ValueError("must be an integer, not true or false")
        if kinds - {type(None)} == {bool} and value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


@functools.cache
def _field_types(model: type[BaseModel], field: str) -> frozenset[type]:
    """`_scalar_types` of a model's field, worked out once: every field of every request and
    stored job runs this check (about 5% of the in-process CPU of a job lifecycle)."""
    return frozenset(_scalar_types(model.model_fields[field].annotation))


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
