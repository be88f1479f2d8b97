"""The wire format of LoRA training: checkpoint receipts, resume reports and the training view
(loss curve, checkpoints, cost) of `GET /v1/jobs/{id}/training`."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    BaseModel,
    Field,
)

from imagefleet.api_views import ModelView
from imagefleet.protocol import AttemptOutcome, JobStatus, Strict


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
