"""The model catalog of a simulated hub and the draws from its popularity: checkpoints on
several bases and LoRAs, each with Zipf popularity, the combos and job shapes requests take, and
what a warm node holds on disk. Split from `workload` so that the arrival streams (rates, spike,
batches) read on their own."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imagefleet.scheduling.simulator.config import GB, MB, SimConfig

MAX_LORAS = 8


@dataclass(frozen=True)
class Catalog:
    """Models by index: checkpoints and LoRAs, each with a name (standing in for its sha256),
    a size and a base index into `base_names`."""

    base_names: tuple[str, ...]
    checkpoint_names: list[str]
    checkpoint_sizes: np.ndarray
    checkpoint_bases: np.ndarray
    lora_names: list[str]
    lora_sizes: np.ndarray
    lora_bases: np.ndarray


def zipf_weights(count: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, count + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def sample(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int32)


class Draw:
    """Draws combos and job shapes from the catalog's popularity."""

    def __init__(self, config: SimConfig, catalog: Catalog) -> None:
        w = config.workload
        self.config = config
        self.catalog = catalog
        self.hub_checkpoints = w.checkpoints.count  # the viral model is not in hub popularity
        self.checkpoint_weights = zipf_weights(self.hub_checkpoints, w.checkpoints.zipf)
        hub_lora_bases = catalog.lora_bases[: w.loras.count]
        self.loras_by_base = [np.flatnonzero(hub_lora_bases == b) for b in range(len(w.bases))]
        self.lora_weights = [
            zipf_weights(max(1, len(ids)), w.loras.zipf) for ids in self.loras_by_base
        ]
        self.lora_counts = np.asarray(w.loras.per_request)
        self.image_values = np.asarray(list(w.images_per_job), dtype=np.int16)
        self.image_weights = np.asarray(list(w.images_per_job.values()))
        specs = list(w.bases.values())
        self.base_pixels = np.asarray([s.pixels for s in specs], dtype=np.int32)
        self.base_factor = np.asarray([s.cost_factor * s.pixels / 2**20 for s in specs])
        self.base_vram_mb = np.asarray([int(s.min_vram_gb * 1024) for s in specs], dtype=np.int32)
        low, high = w.steps
        self.mean_steps = (low + high) / 2
        self.mean_images = float((self.image_values * self.image_weights).sum())

    def checkpoints(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return sample(rng, self.checkpoint_weights, size)

    def loras_for(self, rng: np.random.Generator, checkpoints: np.ndarray) -> np.ndarray:
        size = len(checkpoints)
        out = np.full((size, MAX_LORAS), -1, dtype=np.int32)
        counts = sample(rng, self.lora_counts, size)
        bases = self.catalog.checkpoint_bases[checkpoints]
        for base, ids in enumerate(self.loras_by_base):
            if len(ids) == 0:
                continue
            for slot in range(1, len(self.lora_counts)):
                rows = np.flatnonzero((bases == base) & (counts >= slot))
                if len(rows):
                    out[rows, slot - 1] = ids[sample(rng, self.lora_weights[base], len(rows))]
        return out

    def shapes(
        self, rng: np.random.Generator, checkpoints: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(cost units, images, pixels, min VRAM MB) per job."""
        low, high = self.config.workload.steps
        steps = rng.integers(low, high + 1, len(checkpoints))
        images = self.image_values[sample(rng, self.image_weights, len(checkpoints))]
        bases = self.catalog.checkpoint_bases[checkpoints]
        cost = self.base_factor[bases] * steps / 30.0 * images
        return cost, images, self.base_pixels[bases], self.base_vram_mb[bases]

    def mean_cost(self, base_shares: np.ndarray) -> float:
        return (
            float((base_shares * self.base_factor).sum()) * self.mean_steps / 30 * self.mean_images
        )

    def hub_base_shares(self) -> np.ndarray:
        bases = self.catalog.checkpoint_bases[: self.hub_checkpoints]
        return np.bincount(bases, weights=self.checkpoint_weights, minlength=len(self.base_factor))


def warm_models(
    config: SimConfig, catalog: Catalog, rng: np.random.Generator, disk_bytes: float
) -> tuple[list[int], list[int]]:
    """Checkpoints and LoRAs a node that has been serving the hub for a while would hold on
    disk: drawn by popularity (most recently used last) until 70% and 10% of `disk_bytes`."""
    draw = Draw(config, catalog)
    checkpoints: dict[int, None] = {}
    used = 0.0
    for index in draw.checkpoints(rng, 4096).tolist():
        size = float(catalog.checkpoint_sizes[index])
        if used + size > 0.7 * disk_bytes:
            break
        if index not in checkpoints:
            checkpoints[index] = None
            used += size
    loras: dict[int, None] = {}
    used = 0.0
    for row in draw.loras_for(rng, np.asarray(list(checkpoints) * 64, dtype=np.int32)).tolist():
        for index in row:
            if index < 0 or index in loras:
                continue
            size = float(catalog.lora_sizes[index])
            if used + size > 0.1 * disk_bytes:
                return list(checkpoints)[::-1], list(loras)[::-1]
            loras[index] = None
            used += size
    return list(checkpoints)[::-1], list(loras)[::-1]


def build_catalog(config: SimConfig) -> Catalog:
    w = config.workload
    rng = np.random.default_rng([config.seed, 1])
    names = tuple(w.bases)
    shares = np.asarray([b.share for b in w.bases.values()])
    sizes = np.asarray([b.size_gb * GB for b in w.bases.values()])
    ckpt_bases = sample(rng, shares, w.checkpoints.count).astype(np.int8)
    viral_base = np.int8(0)
    ckpt_bases = np.append(ckpt_bases, viral_base)
    lora_bases = sample(rng, shares, w.loras.count).astype(np.int8)
    extra = [viral_base] + [
        np.int8(names.index(_batch_base(config, i, ckpt_bases, names)))
        for i in range(len(w.batch_clients))
    ]
    lora_bases = np.append(lora_bases, np.asarray(extra, dtype=np.int8))
    lora_sizes = np.clip(
        rng.lognormal(math.log(w.loras.median_mb * MB), w.loras.sigma, len(lora_bases)),
        5 * MB,
        2 * GB,
    ).astype(np.int64)
    lora_names = (
        [f"lora-{i:06d}" for i in range(w.loras.count)]
        + ["lora-viral"]
        + [f"lora-{client.name}" for client in w.batch_clients]
    )
    return Catalog(
        base_names=names,
        checkpoint_names=[f"ckpt-{i:06d}" for i in range(w.checkpoints.count)] + ["ckpt-viral"],
        checkpoint_sizes=sizes[ckpt_bases].astype(np.int64),
        checkpoint_bases=ckpt_bases,
        lora_names=lora_names,
        lora_sizes=lora_sizes,
        lora_bases=lora_bases,
    )


def batch_checkpoint(config: SimConfig, index: int) -> int:
    """The checkpoint batch client `index` uses: drawn from hub popularity, its own stream."""
    rng = np.random.default_rng([config.seed, 100 + index, 0])
    weights = zipf_weights(config.workload.checkpoints.count, config.workload.checkpoints.zipf)
    return int(sample(rng, weights, 1)[0])


def _batch_base(
    config: SimConfig, index: int, ckpt_bases: np.ndarray, names: tuple[str, ...]
) -> str:
    return names[int(ckpt_bases[batch_checkpoint(config, index)])]
