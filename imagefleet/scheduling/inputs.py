"""What the model-aware policy sees: small frozen records built per claim (or, in the simulator,
once per job), so the orchestrator and the fleet simulator feed the very same function.

They are plain dataclasses with `slots=True`: a claim builds one `WorkerView`, one `FleetView`
and a few dozen `Candidate`s on a hot path, and the simulator builds a million. Collections are
typed as `Container` where the policy only asks "is X in it?", so the orchestrator can pass
frozensets and the simulator its live cache indexes without copying.

A candidate carries `queued_since` (the epoch second of its first submission), not the seconds
it has waited: the policy subtracts it from `FleetView.now`, so a candidate stays valid across
claims and the simulator need not rebuild it every time the clock moves.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagefleet.scheduling.costs import Affinity

# One model a job needs: (sha256, size in bytes, role). Role is a `ModelRole` value from the wire
# contract: "checkpoint", "refiner", "vae", "lora", "embedding", "controlnet".
ModelNeed = tuple[str, int, str]

# Roles whose load builds (or swaps) a whole pipeline component rather than patching one in.
HEAVY_ROLES = frozenset({"checkpoint", "refiner", "controlnet"})
BASE_ROLES = frozenset({"checkpoint"})
# A combo's setup on one worker, as `costs.setup_parts` prices it when the combo is not the
# active one: (download seconds, load seconds, affinity).
SetupPrice = tuple[float, float, "Affinity"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued job, as far as scheduling is concerned."""

    job_id: str
    owner: str
    tier: str
    priority: int
    kind: str
    pixels: int
    queued_since: float
    combo_key: str
    models: tuple[ModelNeed, ...]
    cost_units: float
    failed_nodes: frozenset[str] = frozenset()
    min_vram_mb: int = 0
    allow_same_node: bool = False
    # After running out of memory on a GPU this size: a larger one should take it first.
    prefer_vram_above_mb: int = 0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """The worker asking for work: its claim body plus what the server knows about it.

    `seconds_per_unit` is the worker's measured generation time per cost unit, None until it has
    finished a job; `bandwidth_bytes_per_s` its measured download speed, None if unknown (the
    policy then assumes `PolicyConfig.default_bandwidth_bytes_per_s`). `live_nodes` matters only
    for jobs that allow a retry on a node where they already failed.

    `setup_memo`, when given, remembers each combo's setup price on this worker (the policy
    reads and fills it, keyed by combo key). The caller owns it and must clear it whenever the
    membership of `resident_models` or `cached_models` changes: the simulator keeps one per
    node across claims, so a candidate seen again is not priced again. The orchestrator builds
    a view per claim and passes none.
    """

    worker_id: str
    node_id: str
    kinds: Container[str]
    max_pixels: int
    vram_mb: int
    gpu_type: str
    resident_combos: Container[str]
    resident_models: Container[str]
    cached_models: Container[str]
    bandwidth_bytes_per_s: float | None = None
    seconds_per_unit: float | None = None
    live_nodes: frozenset[str] = frozenset()
    setup_memo: MutableMapping[str, SetupPrice] | None = None


@dataclass(frozen=True, slots=True)
class WarmHolders:
    """Busy workers that already hold a combo (or a checkpoint): the soonest of them is expected
    free in `free_in_seconds`; `queued` jobs need that combo (or checkpoint) right now."""

    free_in_seconds: float
    holders: int
    queued: int


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the orchestrator knows cheaply about everything but the claiming worker.

    - `served_at`: when each owner last had a job claimed (epoch seconds), for round robin
      between owners within a tier; owners absent from it have not been served recently. Only
      the candidates' owners are read.
    - `warm`: keyed by combo key and by checkpoint sha256; the policy only calls `.get()` on it,
      for candidates the claiming worker would have to load, so it may compute entries lazily.
    - `running`: how many jobs each owner has claimed and not finished, for the share an
      owner's tier head start covers (`PolicyConfig.head_start_jobs`); owners absent from it
      have none. Read only for candidates with a head start, and only when that knob is on.
    """

    now: float
    served_at: Mapping[str, float] = field(default_factory=dict)
    warm: Mapping[str, WarmHolders] = field(default_factory=dict)
    running: Mapping[str, int] = field(default_factory=dict)
