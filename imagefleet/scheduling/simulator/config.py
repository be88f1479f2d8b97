"""Every simulator parameter, with its default, validated with errors that name the field.

A config file (YAML or JSON) holds any subset of these; what it leaves out keeps the default.
docs/simulator.md explains each one and why its default is what it is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from imagefleet.scheduling.config import PolicyConfig

GB = 1e9
MB = 1e6


class ConfigError(ValueError):
    """A simulator or plan parameter is invalid; the message names each bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuType(_Model):
    name: str = Field(min_length=1)
    count: int = Field(ge=0, le=100_000)
    seconds_per_unit: float = Field(
        gt=0, description="Seconds to generate one cost unit (a 1024x1024, 30-step SDXL image)."
    )
    hourly_usd: float = Field(ge=0)
    vram_gb: float = Field(gt=0)
    disk_gb: float = Field(gt=0, description="Model cache on the node's disk.")
    bandwidth_mb_s: float = Field(gt=0, description="Model download speed.")
    interruptions_per_hour: float = Field(ge=0, description="Node losses (spot, home PCs).")
    max_pixels: int = Field(2048 * 2048, gt=0)


def default_gpus() -> list[GpuType]:
    return [
        GpuType(name="RTX 3090", count=16, seconds_per_unit=9.0, hourly_usd=0.22, vram_gb=24,
                disk_gb=150, bandwidth_mb_s=125, interruptions_per_hour=0.05),
        GpuType(name="RTX 4090", count=16, seconds_per_unit=5.0, hourly_usd=0.35, vram_gb=24,
                disk_gb=150, bandwidth_mb_s=125, interruptions_per_hour=0.05),
        GpuType(name="A100 80GB", count=4, seconds_per_unit=4.0, hourly_usd=1.40, vram_gb=80,
                disk_gb=500, bandwidth_mb_s=1000, interruptions_per_hour=0.01),
        GpuType(name="H100 80GB", count=4, seconds_per_unit=2.5, hourly_usd=2.20, vram_gb=80,
                disk_gb=500, bandwidth_mb_s=1000, interruptions_per_hour=0.01),
    ]  # fmt: skip


class FleetConfig(_Model):
    gpus: list[GpuType] = Field(default_factory=default_gpus, min_length=1)
    disk_to_gpu_gb_s: float = Field(1.5, gt=0, description="Checkpoint load speed, disk to GPU.")
    checkpoint_load_s: float = Field(2.0, ge=0, description="Fixed part of a checkpoint load.")
    adapter_load_s: float = Field(0.3, ge=0, description="Fixed part of a LoRA load and apply.")
    combo_switch_s: float = Field(0.3, ge=0, description="Switching between resident combos.")
    vram_reserved_gb: float = Field(
        6.0, ge=0, description="GPU memory kept for activations, not for resident checkpoints."
    )
    adapter_slots: int = Field(16, ge=1, description="LoRAs kept on the GPU at once.")
    warm_start: bool = Field(
        True,
        description="Start with caches filled by popularity, as a fleet that has been running; "
        "replacement nodes always start empty.",
    )
    replacement_delay_s: float = Field(
        300.0, ge=0, description="A lost node is replaced (empty caches) after this long."
    )

    @model_validator(mode="after")
    def _names_unique(self) -> FleetConfig:
        names = [gpu.name for gpu in self.gpus]
        if len(set(names)) != len(names):
            raise ValueError(f"gpus: names must be unique, got {names}")
        if sum(gpu.count for gpu in self.gpus) == 0:
            raise ValueError("gpus: the fleet has no GPU (every count is 0)")
        return self


class BaseSpec(_Model):
    share: float = Field(ge=0, le=1, description="Fraction of checkpoints on this base.")
    size_gb: float = Field(gt=0)
    pixels: int = Field(gt=0)
    cost_factor: float = Field(gt=0, description="Cost units per megapixel at 30 steps.")
    min_vram_gb: float = Field(0, ge=0)


def default_bases() -> dict[str, BaseSpec]:
    return {
        "sdxl": BaseSpec(share=0.6, size_gb=6.9, pixels=1024 * 1024, cost_factor=1.0,
                         min_vram_gb=10),
        "sd15": BaseSpec(share=0.4, size_gb=2.1, pixels=512 * 512, cost_factor=0.6,
                         min_vram_gb=4),
    }  # fmt: skip


class TierSpec(_Model):
    priority: int = Field(ge=0, le=1000)
    share: float = Field(gt=0, le=1, description="Fraction of the hub's traffic (not batches).")
    owners: int = Field(gt=0, le=10_000_000)


def default_tiers() -> dict[str, TierSpec]:
    return {
        "paid": TierSpec(priority=10, share=0.3, owners=1000),
        "free": TierSpec(priority=0, share=0.7, owners=5000),
    }


class CatalogSpec(_Model):
    count: int = Field(gt=0, le=10_000_000)
    zipf: float = Field(ge=0, le=5, description="Popularity exponent (rank r has weight r^-zipf).")


class LoraSpec(CatalogSpec):
    per_request: list[float] = Field(
        default_factory=lambda: [0.4, 0.3, 0.2, 0.1],
        min_length=1,
        max_length=9,
        description="Probability of 0, 1, 2, ... LoRAs in a request.",
    )
    median_mb: float = Field(100.0, gt=0)
    sigma: float = Field(0.8, ge=0, description="Log-normal spread of LoRA sizes.")

    @model_validator(mode="after")
    def _probabilities(self) -> LoraSpec:
        _check_distribution(self.per_request, "per_request")
        return self


class SpikeSpec(_Model):
    start_hour: float = Field(9.0, ge=0)
    duration_s: float = Field(120.0, ge=0)
    multiplier: float = Field(10.0, ge=1, description="Arrival rate during the spike, x normal.")
    viral_share: float = Field(
        0.7, ge=0, le=1, description="Part of the spike's requests for one new (viral) model."
    )


class BatchClient(_Model):
    name: str = Field(min_length=1)
    tier: str
    batches: int = Field(ge=0, le=10_000)
    jobs_per_batch: int = Field(gt=0, le=10_000_000)
    submit_span_s: float = Field(60.0, ge=0, description="A batch arrives over this long.")


def default_batch_clients() -> list[BatchClient]:
    return [
        BatchClient(name="batch-studio", tier="paid", batches=2, jobs_per_batch=2000),
        BatchClient(name="batch-dataset", tier="free", batches=2, jobs_per_batch=2000),
        BatchClient(name="batch-bot", tier="free", batches=4, jobs_per_batch=500),
    ]


class WorkloadConfig(_Model):
    hours: float = Field(24.0, gt=0, le=24 * 365)
    offered_load: float | None = Field(
        0.8, gt=0, le=10, description="Generation work / fleet capacity, averaged over the run."
    )
    jobs_per_day: float | None = Field(None, gt=0, description="Hub traffic; overrides load.")
    daily_amplitude: float = Field(0.1, ge=0, lt=1)
    peak_hour: float = Field(20.0, ge=0, lt=24)
    spike: SpikeSpec = Field(default_factory=SpikeSpec)
    tiers: dict[str, TierSpec] = Field(default_factory=default_tiers, min_length=1)
    owner_zipf: float = Field(1.0, ge=0, le=5)
    repeat_probability: float = Field(
        0.5, ge=0, lt=1, description="A request reuses its owner's previous combo."
    )
    bases: dict[str, BaseSpec] = Field(default_factory=default_bases, min_length=1)
    checkpoints: CatalogSpec = Field(default_factory=lambda: CatalogSpec(count=2000, zipf=1.8))
    loras: LoraSpec = Field(default_factory=lambda: LoraSpec(count=20000, zipf=1.0))
    images_per_job: dict[int, float] = Field(default_factory=lambda: {1: 0.5, 2: 0.2, 4: 0.3})
    steps: tuple[int, int] = Field((20, 40), description="Uniform range of sampler steps.")
    batch_clients: list[BatchClient] = Field(default_factory=default_batch_clients)

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadConfig:
        if (self.offered_load is None) == (self.jobs_per_day is None):
            raise ValueError("offered_load, jobs_per_day: set exactly one (the other to null)")
        if not math.isclose(sum(t.share for t in self.tiers.values()), 1.0, abs_tol=1e-6):
            raise ValueError("tiers: the shares must add up to 1")
        if not math.isclose(sum(b.share for b in self.bases.values()), 1.0, abs_tol=1e-6):
            raise ValueError("bases: the shares must add up to 1")
        _check_distribution(list(self.images_per_job.values()), "images_per_job")
        if any(n <= 0 for n in self.images_per_job):
            raise ValueError("images_per_job: image counts must be > 0")
        low, high = self.steps
        if not 0 < low <= high:
            raise ValueError(f"steps: expected 0 < low <= high, got {list(self.steps)}")
        for index, client in enumerate(self.batch_clients):
            if client.tier not in self.tiers:
                raise ValueError(
                    f"batch_clients.{index}.tier: unknown tier {client.tier!r}; "
                    f"expected one of {sorted(self.tiers)}"
                )
        return self


class PlanSpec(_Model):
    target_p95_s: float = Field(120.0, gt=0, description="Wait target for the tier below.")
    tier: str = Field("paid")
    max_per_type: int = Field(64, ge=1, le=10_000, description="Search bound per GPU type.")
    min_per_type: int = Field(0, ge=0)
    max_simulations: int = Field(60, ge=1, le=10_000)


class SimConfig(_Model):
    seed: int = Field(1, ge=0, le=2**32 - 1)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    policy: dict[str, float] = Field(
        default_factory=dict, description="Overrides of the model-aware policy's knobs."
    )
    repoll_s: float = Field(
        10.0, gt=0, description="A worker whose claim came back empty asks again after this."
    )
    plan: PlanSpec = Field(default_factory=PlanSpec)

    @model_validator(mode="after")
    def _plan_and_policy(self) -> SimConfig:
        if self.plan.tier not in self.workload.tiers:
            raise ValueError(
                f"plan.tier: unknown tier {self.plan.tier!r}; "
                f"expected one of {sorted(self.workload.tiers)}"
            )
        if self.plan.min_per_type > self.plan.max_per_type:
            raise ValueError("plan.min_per_type: must not exceed plan.max_per_type")
        self.policy_config()
        return self

    def policy_config(self) -> PolicyConfig:
        """The model-aware policy's config: its load-time estimates calibrated to the simulated
        fleet (as an operator would set them), then the file's `policy` overrides."""
        known = set(PolicyConfig.__dataclass_fields__)
        unknown = sorted(set(self.policy) - known)
        if unknown:
            raise ValueError(
                f"policy.{unknown[0]}: unknown knob; expected one of {', '.join(sorted(known))}"
            )
        fleet = self.fleet
        knobs: dict[str, float] = {
            "disk_to_gpu_bytes_per_s": fleet.disk_to_gpu_gb_s * GB,
            "checkpoint_load_s": fleet.checkpoint_load_s,
            "adapter_load_s": fleet.adapter_load_s,
            "combo_switch_s": fleet.combo_switch_s,
        }
        knobs.update(self.policy)
        return PolicyConfig(**knobs)


def _check_distribution(values: list[float], name: str) -> None:
    if any(v < 0 for v in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"{name}: expected probabilities >= 0 adding up to 1, got {values}")


def parse_config(data: dict[str, Any]) -> SimConfig:
    """A SimConfig from plain data (a parsed file), or ConfigError naming every bad field."""
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def read_config_data(path: Path) -> dict[str, Any]:
    """The raw contents of a config file (.yaml, .yml or .json), not yet validated."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError are ValueErrors
        kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise ConfigError(f"config: {path} is not valid {kind}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: {path} must hold a mapping of sections, got {type(data).__name__}"
        )
    return data


def load_config(path: Path | None) -> SimConfig:
    """The config in `path`, or the defaults when `path` is None."""
    return SimConfig() if path is None else parse_config(read_config_data(path))


def _describe(exc: ValidationError) -> str:
    """One line per error, each starting with the field's dotted path. Our own checks (type
    "value_error") already name the field relative to the model that raised them."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "value_error":
            lines.append(f"{where}.{message}" if where else message)
        else:
            lines.append(f"{where or 'config'}: {message}")
    return "\n".join(lines)


def defaults_document() -> dict[str, Any]:
    """The full default config as plain data (what `imagefleet simulate --write-config` saves)."""
    return SimConfig().model_dump(mode="json")
