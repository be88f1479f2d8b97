"""Pools: named groups of interchangeable workers that scale together, read from a TOML file.

A pool is a capability class (GPU type, VRAM, the job kinds and optionally the models its
workers serve), a provider that starts and stops them, an hourly price, and the limits the
autoscaler keeps to. The file is TOML because Python reads it without a dependency and its
tables map one to one onto these models (see docs/autoscaling.md for the format).

Loading validates everything up front and names the pool and field of every problem, so that a
typo in a limit is a start-up error, not a fleet that silently never scales.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# SaladCloud's own rule for organization, project and container group names.
SALAD_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
PROVIDER_TYPES = ("local", "kubernetes", "salad", "command")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalSettings(_Settings):
    """Worker processes on the orchestrator's own host (what `imagefleet up` uses)."""

    type: Literal["local"]
    command: list[str] = Field(
        default_factory=list,
        description="The worker command; empty means this Python's `-m imagefleet worker`.",
    )
    args: list[str] = Field(
        default_factory=list,
        description="Appended to the command, e.g. --orchestrator URL --cache-dir DIR.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Added to the orchestrator's environment."
    )
    drain_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="A drained worker may finish its job for this long (passed to it as "
        "IMAGEFLEET_WORKER_SHUTDOWN_GRACE); it is killed if still running 10 s after.",
    )
    log_dir: Path | None = Field(
        None, description="Each worker's output goes to LOG_DIR/<instance>.log; default: ours."
    )


class KubernetesSettings(_Settings):
    """A Deployment whose replicas the autoscaler sets through the scale subresource."""

    type: Literal["kubernetes"]
    deployment: str = Field(min_length=1, max_length=253)
    namespace: str = Field("default", min_length=1, max_length=63)
    kubeconfig: Path | None = Field(
        None,
        description="A kubeconfig file; default: in-cluster credentials when running in a pod, "
        "else $KUBECONFIG or ~/.kube/config.",
    )
    context: str | None = Field(None, description="The kubeconfig context; default: current.")
    node_id: Literal["pod", "node"] = Field(
        "pod",
        description="What the workers report as their node id: their pod name (the default "
        "hostname) or the Kubernetes node name (IMAGEFLEET_NODE_ID from spec.nodeName).",
    )
    request_timeout_seconds: float = Field(10.0, gt=0)


class SaladSettings(_Settings):
    """A SaladCloud container group whose replica count the autoscaler sets."""

    type: Literal["salad"]
    organization: str = Field(pattern=SALAD_NAME_PATTERN)
    project: str = Field(pattern=SALAD_NAME_PATTERN)
    container_group: str = Field(pattern=SALAD_NAME_PATTERN)
    api_key_env: str = Field(
        "SALAD_API_KEY", min_length=1, description="The variable holding the API key."
    )
    base_url: str = Field("https://api.salad.com/api/public", pattern=r"^https?://")
    request_timeout_seconds: float = Field(10.0, gt=0)


class CommandSettings(_Settings):
    """User scripts for any other cloud; see docs/autoscaling.md for their contract."""

    type: Literal["command"]
    scale: list[str] = Field(min_length=1, description="argv; gets IMAGEFLEET_REPLICAS.")
    replace: list[str] = Field(min_length=1, description="argv; gets IMAGEFLEET_INSTANCE_ID.")
    instances: list[str] | None = Field(
        None, min_length=1, description="argv printing the instances as JSON."
    )
    drain: list[str] | None = Field(
        None, min_length=1, description="argv; gets IMAGEFLEET_INSTANCE_ID."
    )
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(60.0, gt=0, description="Each script is killed after this.")


ProviderSettings = Annotated[
    LocalSettings | KubernetesSettings | SaladSettings | CommandSettings,
    Field(discriminator="type"),
]


class Pool(_Settings):
    """One pool: what its workers can run, who runs them, what they cost, and the limits."""

    name: str = Field(pattern=NAME_PATTERN)
    gpu: str = Field(min_length=1, max_length=100, description="GPU type, as in the price table.")
    vram_mb: int = Field(gt=0)
    kinds: list[str] = Field(default_factory=lambda: ["txt2img"], min_length=1)
    models: list[str] | None = Field(
        None, description="Model names this pool is dedicated to; default: any."
    )
    max_pixels: int | None = Field(None, gt=0, description="Largest width*height it takes.")
    price_per_hour: float = Field(ge=0, description="USD per worker-hour; see [prices].")
    min: int = Field(0, ge=0)
    max: int = Field(ge=0)
    scale_up_step: int | None = Field(
        None, ge=1, description="Most workers added per decision; default: no limit."
    )
    scale_down_cooldown_seconds: float = Field(120.0, ge=0)
    idle_to_zero_seconds: float = Field(300.0, ge=0)
    rule: Literal["queue", "throughput"] = "queue"
    target_wait_seconds: float = Field(60.0, gt=0)
    target_wait_seconds_by_tier: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict
    )
    seconds_per_unit: float | None = Field(
        None, gt=0, description="Throughput rule: a prior until the fleet has measured it."
    )
    provider: ProviderSettings

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and value < low:
            raise ValueError(f"must be at least min ({low}), got {value}")
        return value

    def target_wait(self, tier: str) -> float:
        """The wait the throughput rule sizes for, for jobs of this tier."""
        return self.target_wait_seconds_by_tier.get(tier, self.target_wait_seconds)

    def serves(self, kind: str, pixels: int, min_vram_mb: int | None, model: str | None) -> bool:
        """Whether a job with these requirements is work for this pool (its demand)."""
        return (
            kind in self.kinds
            and (self.max_pixels is None or pixels <= self.max_pixels)
            and (min_vram_mb is None or min_vram_mb <= self.vram_mb)
            and (self.models is None or model is None or model in self.models)
        )


class PoolsConfig(_Settings):
    """The whole file: an optional price table per GPU type, and the pools."""

    prices: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    pools: dict[str, Pool] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_names_and_prices(cls, data: Any) -> Any:
        """Pools are keyed by name in the file; their price defaults to their GPU's."""
        if not isinstance(data, dict) or not isinstance(data.get("pools"), dict):
            return data
        raw_prices = data.get("prices")
        prices: dict[Any, Any] = raw_prices if isinstance(raw_prices, dict) else {}
        pools = {}
        for name, pool in data["pools"].items():
            if isinstance(pool, dict):
                pool = {"name": name, **pool}
                gpu = pool.get("gpu")
                if "price_per_hour" not in pool and isinstance(gpu, str) and gpu in prices:
                    pool["price_per_hour"] = prices[gpu]
            pools[name] = pool
        return {**data, "pools": pools}

    @model_validator(mode="after")
    def _no_two_pools_on_one_target(self) -> PoolsConfig:
        """Two pools scaling the same Deployment or container group would undo each other."""
        seen: dict[tuple[str, ...], str] = {}
        for pool in self.pools.values():
            target = _scaled_target(pool.provider)
            if target is None:
                continue
            if target in seen:
                raise ValueError(
                    f"pools '{seen[target]}' and '{pool.name}' both scale {' '.join(target)}; "
                    "give each pool its own"
                )
            seen[target] = pool.name
        return self

    def pool(self, name: str) -> Pool:
        try:
            return self.pools[name]
        except KeyError:
            known = ", ".join(sorted(self.pools)) or "none"
            raise KeyError(f"no pool named '{name}' (pools: {known})") from None


def _scaled_target(provider: ProviderSettings) -> tuple[str, ...] | None:
    if isinstance(provider, KubernetesSettings):
        return ("kubernetes deployment", f"{provider.namespace}/{provider.deployment}")
    if isinstance(provider, SaladSettings):
        return (
            "salad container group",
            f"{provider.organization}/{provider.project}/{provider.container_group}",
        )
    return None


class PoolConfigError(ValueError):
    """The pools file is unreadable or invalid; `problems` has one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{source}: invalid pools file:\n{listed}")


def load_pools(path: Path) -> PoolsConfig:
    """Reads and validates a pools file; raises PoolConfigError naming each bad pool and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PoolConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    return parse_pools(text, source=str(path))


def parse_pools(text: str, source: str = "<pools>") -> PoolsConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PoolConfigError(source, [f"not valid TOML: {exc}"]) from exc
    try:
        return PoolsConfig.model_validate(data)
    except ValidationError as exc:
        raise PoolConfigError(source, [_describe(error) for error in exc.errors()]) from exc


def _describe(error: Any) -> str:
    """One validation error as 'pool 'x', field 'provider.organization': what is wrong'."""
    loc = [str(part) for part in error["loc"]]
    message = _message(error)
    if len(loc) >= 2 and loc[0] == "pools":
        pool, field = loc[1], loc[2:]
        # A provider's fields are reported under its type tag: provider.salad.organization.
        if len(field) >= 2 and field[0] == "provider" and field[1] in PROVIDER_TYPES:
            field = [field[0], *field[2:]]
        where = f"pool '{pool}', field '{'.'.join(field)}'" if field else f"pool '{pool}'"
        return f"{where}: {message}"
    return f"{'.'.join(loc)}: {message}" if loc else message


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        if error["loc"][-1] == "price_per_hour":
            return "required, or a [prices] entry for the pool's gpu"
        return "required"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling in docs/autoscaling.md)"
    if kind == "union_tag_invalid":
        expected = ", ".join(PROVIDER_TYPES)
        return f"unknown provider '{error['ctx']['tag']}'; expected one of {expected}"
    if kind == "union_tag_not_found":
        return f"provider.type is required: one of {', '.join(PROVIDER_TYPES)}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
