"""Wire models of the progress streams (GET /v1/jobs/{id}/events, GET /v1/events).

Each server-sent event carries `id` (resume from it with Last-Event-ID), `event` (one of
`JobEventType`) and `data`, a `JobEvent` as JSON. Kept apart from protocol.py because only
the event routes and the Python client read them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from imagefleet.api_views import JobView


class JobEventType(StrEnum):
    queued = "queued"
    running = "running"
    progress = "progress"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobEventType.succeeded, JobEventType.failed, JobEventType.cancelled)


class JobEvent(BaseModel):
    """One event of one job. `data` holds what the event tells: for `progress` its step,
    total_steps and fraction; for `queued` the attempts so far (and `last_error` when it is a
    retry); for `running` the attempt's number; for final events the status and any error,
    and `job` is the whole job as GET /v1/jobs/{id} shows it (outputs with download URLs)."""

    id: int = Field(description="The event's id: send it back as Last-Event-ID to resume.")
    event: JobEventType
    job_id: str
    created_at: datetime
    data: dict[str, Any]
    job: JobView | None = Field(None, description="Set on succeeded, failed and cancelled.")
