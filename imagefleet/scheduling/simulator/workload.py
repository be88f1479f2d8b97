"""A seeded workload shaped like a public model hub's traffic.

- A catalog of checkpoints (on several bases: SDXL, SD 1.5) and LoRAs with Zipf popularity;
  a request takes one checkpoint and 0 to 3 LoRAs of the same base; with
  `repeat_probability` it reuses its owner's previous combo (people iterate on a prompt).
- Owners in tiers (paid, free) with Zipf activity; Poisson arrivals whose rate follows a daily
  cycle, plus a viral spike: for a few minutes the rate is multiplied and most of the extra
  requests ask for one new model nobody has cached.
- A few batch clients, each submitting large batches (one combo per client) at seeded times.

Each of these streams draws from its own random generator, so removing one client's jobs
(`Workload.without_owner`) leaves everybody else's arrivals exactly as they were: the fairness
goal compares the same traffic with and without the batch client.

The arrival rate is solved from `offered_load`: the generation work of all jobs (batches and
spike included) over the run is that fraction of the fleet's capacity (cost units per second
summed over its GPUs). Model loads are not part of the offered load: they are what a policy
adds on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from imagefleet.scheduling.simulator.catalog import (
    MAX_LORAS,
    Catalog,
    Draw,
    batch_checkpoint,
    build_catalog,
    sample,
    zipf_weights,
)
from imagefleet.scheduling.simulator.config import ConfigError, FleetConfig, SimConfig

DAY = 86400.0


@dataclass(frozen=True)
class Workload:
    """One row per job, sorted by arrival time."""

    catalog: Catalog
    times: np.ndarray  # float64 seconds from the start
    owner: np.ndarray  # int32 index into owner_names
    tier: np.ndarray  # int8 index into tier_names
    checkpoint: np.ndarray  # int32
    loras: np.ndarray  # int32 (jobs, MAX_LORAS), -1 padded
    cost: np.ndarray  # float64 cost units
    images: np.ndarray  # int16
    pixels: np.ndarray  # int32
    min_vram_mb: np.ndarray  # int32
    owner_names: list[str]
    tier_names: tuple[str, ...]
    tier_priority: tuple[int, ...]
    batch_owners: tuple[str, ...]
    horizon_s: float
    background_jobs_per_s: float

    @property
    def jobs(self) -> int:
        return len(self.times)

    def without_owner(self, name: str) -> Workload:
        """The same workload with every job of owner `name` removed."""
        if name not in self.owner_names:
            raise ValueError(f"owner: no owner named {name!r} in this workload")
        keep = self.owner != self.owner_names.index(name)
        return replace(
            self,
            times=self.times[keep],
            owner=self.owner[keep],
            tier=self.tier[keep],
            checkpoint=self.checkpoint[keep],
            loras=self.loras[keep],
            cost=self.cost[keep],
            images=self.images[keep],
            pixels=self.pixels[keep],
            min_vram_mb=self.min_vram_mb[keep],
        )

    def heaviest_batch_owner(self) -> str | None:
        """The batch client with the most generation work."""
        if not self.batch_owners:
            return None
        work = {
            name: float(self.cost[self.owner == self.owner_names.index(name)].sum())
            for name in self.batch_owners
        }
        return max(work, key=lambda name: work[name])


def fleet_capacity(fleet: FleetConfig) -> float:
    """Cost units per second the whole fleet generates when busy."""
    return sum(gpu.count / gpu.seconds_per_unit for gpu in fleet.gpus)


def _rate_factor(config: SimConfig, seconds: np.ndarray | float) -> np.ndarray | float:
    w = config.workload
    phase = 2 * math.pi * (np.asarray(seconds) / 3600.0 - w.peak_hour) / 24.0
    return 1.0 + w.daily_amplitude * np.cos(phase)


def generate(config: SimConfig, fleet: FleetConfig | None = None) -> Workload:
    """The workload for `config` (its offered load measured against `fleet`, by default the
    config's own), deterministic for `config.seed`."""
    w = config.workload
    fleet = fleet or config.fleet
    catalog = build_catalog(config)
    draw = Draw(config, catalog)
    horizon = w.hours * 3600.0
    tier_names = tuple(w.tiers)
    tier_shares = np.asarray([t.share for t in w.tiers.values()])
    offsets = np.cumsum([0] + [t.owners for t in w.tiers.values()])
    owner_names = [
        f"{name}-{i:06d}" for name, spec in w.tiers.items() for i in range(spec.owners)
    ] + [client.name for client in w.batch_clients]
    owner_weights = [zipf_weights(t.owners, w.owner_zipf) for t in w.tiers.values()]

    batches = [_batch_jobs(config, draw, i, horizon) for i in range(len(w.batch_clients))]
    batch_work = sum(float(b[2].sum()) for b in batches)
    spike_start = w.spike.start_hour * 3600.0
    spike_s = max(0.0, min(horizon, spike_start + w.spike.duration_s) - spike_start)
    viral_cost = draw.mean_cost(np.eye(len(draw.base_factor))[0])  # the viral model: base 0
    background_cost = draw.mean_cost(draw.hub_base_shares())
    spike_cost = w.spike.viral_share * viral_cost + (1 - w.spike.viral_share) * background_cost
    cycle = horizon + w.daily_amplitude * 3600 * 24 / (2 * math.pi) * (
        math.sin(2 * math.pi * (horizon / 3600 - w.peak_hour) / 24)
        - math.sin(2 * math.pi * (-w.peak_hour) / 24)
    )
    spike_jobs_per_rate = (
        (w.spike.multiplier - 1) * spike_s * float(_rate_factor(config, spike_start))
    )
    if w.jobs_per_day is not None:
        rate = w.jobs_per_day / DAY
    else:
        assert w.offered_load is not None
        wanted = w.offered_load * fleet_capacity(fleet) * horizon - batch_work
        if wanted <= 0:
            raise ConfigError(
                f"workload.batch_clients: the batches alone ({batch_work:.0f} cost units) exceed "
                f"the offered load ({w.offered_load} of the fleet over {w.hours} h); "
                "raise workload.offered_load or shrink the batches"
            )
        rate = wanted / (cycle * background_cost + spike_jobs_per_rate * spike_cost)

    rng_bg = np.random.default_rng([config.seed, 2])
    peak = 1.0 + w.daily_amplitude
    times = np.sort(rng_bg.uniform(0.0, horizon, rng_bg.poisson(rate * peak * horizon)))
    times = times[rng_bg.random(len(times)) * peak < _rate_factor(config, times)]
    bg = _hub_requests(config, draw, rng_bg, times, tier_shares, offsets, owner_weights)

    rng_spike = np.random.default_rng([config.seed, 3])
    spike_rate = (w.spike.multiplier - 1) * rate * float(_rate_factor(config, spike_start))
    spike_times = np.sort(
        rng_spike.uniform(
            spike_start, spike_start + spike_s, rng_spike.poisson(spike_rate * spike_s)
        )
    )
    spike = _hub_requests(config, draw, rng_spike, spike_times, tier_shares, offsets, owner_weights)
    viral = rng_spike.random(len(spike_times)) < w.spike.viral_share
    spike[2][viral] = len(catalog.checkpoint_names) - 1
    spike[3][viral] = -1
    spike[3][viral, 0] = w.loras.count  # the viral LoRA
    spike_shapes = draw.shapes(rng_spike, spike[2])

    parts = [(times, *bg, *draw.shapes(rng_bg, bg[2])), (spike_times, *spike, *spike_shapes)]
    for index, (btimes, bckpt, bcost, bimages, bpixels, bvram) in enumerate(batches):
        client = w.batch_clients[index]
        owner = np.full(len(btimes), len(owner_names) - len(batches) + index, dtype=np.int32)
        tier = np.full(len(btimes), tier_names.index(client.tier), dtype=np.int8)
        loras = np.full((len(btimes), MAX_LORAS), -1, dtype=np.int32)
        loras[:, 0] = w.loras.count + 1 + index
        parts.append((btimes, owner, tier, bckpt, loras, bcost, bimages, bpixels, bvram))
    columns = [np.concatenate([part[k] for part in parts]) for k in range(9)]
    order = np.argsort(columns[0], kind="stable")
    t, owner, tier, ckpt, loras, cost, images, pixels, vram = (c[order] for c in columns)
    return Workload(
        catalog=catalog,
        times=t,
        owner=owner.astype(np.int32),
        tier=tier.astype(np.int8),
        checkpoint=ckpt.astype(np.int32),
        loras=loras.astype(np.int32),
        cost=cost.astype(np.float64),
        images=images.astype(np.int16),
        pixels=pixels.astype(np.int32),
        min_vram_mb=vram.astype(np.int32),
        owner_names=owner_names,
        tier_names=tier_names,
        tier_priority=tuple(t.priority for t in w.tiers.values()),
        batch_owners=tuple(client.name for client in w.batch_clients if client.batches > 0),
        horizon_s=horizon,
        background_jobs_per_s=rate,
    )


def _hub_requests(
    config: SimConfig,
    draw: Draw,
    rng: np.random.Generator,
    times: np.ndarray,
    tier_shares: np.ndarray,
    offsets: np.ndarray,
    owner_weights: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(owner, tier, checkpoint, loras) for hub requests at `times`; with the configured
    probability a request repeats its owner's previous combo."""
    size = len(times)
    tier = sample(rng, tier_shares, size).astype(np.int8)
    owner = np.empty(size, dtype=np.int32)
    for index, weights in enumerate(owner_weights):
        rows = np.flatnonzero(tier == index)
        owner[rows] = offsets[index] + sample(rng, weights, len(rows))
    ckpt = draw.checkpoints(rng, size)
    loras = draw.loras_for(rng, ckpt)
    repeat = rng.random(size) < config.workload.repeat_probability
    if size:
        by_owner = np.lexsort((np.arange(size), owner))
        first = np.ones(size, dtype=bool)
        first[1:] = owner[by_owner][1:] != owner[by_owner][:-1]
        fresh = first | ~repeat[by_owner]
        source = np.where(fresh, np.arange(size), 0)
        source = np.maximum.accumulate(source)
        ckpt[by_owner] = ckpt[by_owner][source]
        loras[by_owner] = loras[by_owner][source]
    return owner, tier, ckpt, loras


def _batch_jobs(
    config: SimConfig, draw: Draw, index: int, horizon: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(times, checkpoints, cost, images, pixels, min VRAM) of batch client `index`'s jobs."""
    client = config.workload.batch_clients[index]
    rng = np.random.default_rng([config.seed, 100 + index, 1])
    span = min(client.submit_span_s, horizon)
    starts = rng.uniform(0.0, max(0.0, horizon - span), client.batches)
    times = np.sort(
        np.concatenate([s + rng.uniform(0.0, span, client.jobs_per_batch) for s in starts])
        if client.batches
        else np.empty(0)
    )
    ckpt = np.full(len(times), batch_checkpoint(config, index), dtype=np.int32)
    return (times, ckpt, *draw.shapes(rng, ckpt))
