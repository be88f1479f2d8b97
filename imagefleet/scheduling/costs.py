"""Affinity priced in seconds: what it would cost this worker to get a job's models onto its GPU.

Pricing in seconds rather than in points lets the policy trade setup against waiting directly,
and lets an explanation say "needs a 14 s load here" instead of a score.
"""

from __future__ import annotations

from enum import IntEnum

from imagefleet.scheduling.config import PolicyConfig
from imagefleet.scheduling.inputs import HEAVY_ROLES, Candidate, WorkerView


class Affinity(IntEnum):
    """How much of a job's combo the worker already holds, best first."""

    combo = 0  # the exact combo is active on the GPU: no setup
    models = 1  # every model is on the GPU, another combo is active: a switch
    base = 2  # the checkpoint is on the GPU; adapters (LoRAs...) load from disk or download
    disk = 3  # the checkpoint must be loaded from the worker's disk
    download = 4  # some model must be downloaded first

    @property
    def phrase(self) -> str:
        return _PHRASES[self]


_PHRASES = {
    Affinity.combo: "combo resident",
    Affinity.models: "models resident",
    Affinity.base: "checkpoint resident",
    Affinity.disk: "checkpoint on disk",
    Affinity.download: "needs a download",
}


def setup_parts(
    worker: WorkerView, job: Candidate, config: PolicyConfig
) -> tuple[float, float, Affinity]:
    """Estimated (download seconds, load seconds) before `worker` could start generating
    `job`, and how warm it is. Loading covers checkpoint and adapter loads and combo switches."""
    combo = job.combo_key
    if combo in worker.resident_combos:
        return 0.0, 0.0, Affinity.combo
    memo = worker.setup_memo
    if memo is not None:
        known = memo.get(combo)
        if known is not None:
            return known
    price = _price(worker, job, config)
    if memo is not None:
        memo[combo] = price
    return price


def _price(
    worker: WorkerView, job: Candidate, config: PolicyConfig
) -> tuple[float, float, Affinity]:
    """`setup_parts` for a combo that is not the active one: from the models' residency alone."""
    resident = worker.resident_models
    cached = worker.cached_models
    bandwidth = worker.bandwidth_bytes_per_s or config.default_bandwidth_bytes_per_s
    disk_speed = config.disk_to_gpu_bytes_per_s
    download = load = 0.0
    base_resident = True
    for sha256, size, role in job.models:
        if sha256 in resident:
            continue
        heavy = role in HEAVY_ROLES
        if heavy:
            base_resident = False
        if sha256 not in cached:
            download += size / bandwidth
        load += size / disk_speed + (config.checkpoint_load_s if heavy else config.adapter_load_s)
    if load == 0.0:
        return 0.0, config.combo_switch_s, Affinity.models
    if download:
        return download, load, Affinity.download
    return 0.0, load, Affinity.base if base_resident else Affinity.disk


def setup_seconds(
    worker: WorkerView, job: Candidate, config: PolicyConfig
) -> tuple[float, Affinity]:
    """Estimated seconds before `worker` could start generating `job`, and how warm it is."""
    download, load, affinity = setup_parts(worker, job, config)
    return download + load, affinity


def generation_seconds(worker: WorkerView, job: Candidate, config: PolicyConfig) -> float:
    """Estimated generation time of `job` on `worker`, from its measured speed if it has one."""
    return job.cost_units * (worker.seconds_per_unit or config.reference_seconds_per_unit)
