"""Wire models of the autoscaling and usage API: pools with their status, decisions, usage.

Kept beside the scaling code rather than in `imagefleet/protocol.py`: only admin tools and
the CLI read them, and they change with the pools' settings.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imagefleet.scaling.pools import Pool


class PoolStatusView(BaseModel):
    """What the control loop last decided for the pool, and the provider's health."""

    desired: int = Field(description="Replicas the provider was last asked for.")
    wanted: int = Field(description="What the rule wanted before limits and cooldown.")
    actual: int | None = Field(None, description="Instances the provider reported.")
    queued: int
    running: int
    rule: str
    reason: str
    decided_at: datetime
    decided_by: str = Field(description="The orchestrator replica that held the leader lease.")
    provider_error: str | None = Field(
        None, description="The last provider error, until a call succeeds again."
    )
    failures: int = Field(0, description="Consecutive failed provider calls.")
    next_try_at: datetime | None = Field(
        None, description="While backing off: when the provider is called again."
    )


class PoolView(BaseModel):
    name: str
    settings: Pool
    edited_at: datetime | None = Field(
        None, description="Set after an edit through the API: the pools file no longer wins."
    )
    workers: dict[str, int] = Field(
        default_factory=dict, description="Its workers seen recently, by state."
    )
    status: PoolStatusView | None = None


class PoolEdit(BaseModel):
    """The limits and price an operator may change live; omitted fields keep their value."""

    model_config = ConfigDict(extra="forbid")

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    scale_up_step: int | None = Field(None, ge=1)
    scale_down_cooldown_seconds: float | None = Field(None, ge=0)
    idle_to_zero_seconds: float | None = Field(None, ge=0)
    price_per_hour: float | None = Field(None, ge=0)
    rule: Literal["queue", "throughput"] | None = None
    target_wait_seconds: float | None = Field(None, gt=0)


class DecisionView(BaseModel):
    id: int
    pool: str
    action: Literal["up", "down", "drain", "undrain", "replace", "error"]
    current: int
    desired: int
    reason: str
    instance_id: str | None = None
    node_id: str | None = None
    error: str | None = None
    decided_by: str
    created_at: datetime


class KeyUsageRow(BaseModel):
    day: date
    kind: str
    jobs: int = Field(description="Jobs that finished that day (any outcome).")
    images: int
    gpu_seconds: float = Field(description="Lease seconds of their attempts.")
    cost_usd: float


class KeyUsageView(BaseModel):
    key_id: str
    start: datetime
    end: datetime
    rows: list[KeyUsageRow]
    jobs: int
    images: int
    gpu_seconds: float
    cost_usd: float


class FleetUsageRow(BaseModel):
    pool: str | None = Field(description="None: workers that named no pool.")
    gpu: str | None
    images: int
    images_per_hour: float
    seconds_per_image: float | None = Field(description="Lease seconds per image.")
    images_per_dollar: float | None
    idle_share: float | None = Field(description="Share of paid worker time without a job.")
    busy_seconds: float
    paid_seconds: float
    cost_usd: float | None


class FleetUsageView(BaseModel):
    start: datetime
    end: datetime
    pools: list[FleetUsageRow]
