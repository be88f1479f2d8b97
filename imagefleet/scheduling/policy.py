"""The scheduling policy: a pure ranking of queued jobs for one worker asking for work.

No I/O here, so the orchestrator and a fleet simulator run the very same code, and a baseline
policy can be compared against it on identical inputs.

Why these weights: a job whose model is already on the worker's GPU saves a model load (seconds
to tens of seconds for SDXL), one whose model is on its disk saves a download (minutes); tier
priority dominates both so paid work is never starved by cache affinity, and age grows without
bound so that no job waits forever behind better-placed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerView:
    """What the worker told us in its claim, plus the nodes currently alive in the fleet."""

    node_id: str
    kinds: frozenset[str]
    max_pixels: int
    resident_models: frozenset[str]
    cached_models: frozenset[str]
    vram_mb: int = 0
    live_nodes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Candidate:
    """A queued job as the policy sees it."""

    job_id: str
    kind: str
    priority: int
    pixels: int
    waited_seconds: float
    model_sha256: str
    failed_nodes: frozenset[str]
    min_vram_mb: int | None = None
    allow_same_node: bool = False


@dataclass(frozen=True)
class Weights:
    priority: float = 1000.0
    resident: float = 300.0
    cached: float = 100.0
    per_second_waited: float = 1.0
    too_little_vram: float = -5000.0


Policy = Callable[[WorkerView, Sequence[Candidate]], list[Candidate]]


def can_run(worker: WorkerView, job: Candidate) -> bool:
    """Hard constraints: the worker can do the kind, it fits, and the job never failed on this
    node, unless the job allows a same-node retry and it has failed on every live node."""
    if job.kind not in worker.kinds or job.pixels > worker.max_pixels:
        return False
    if worker.node_id not in job.failed_nodes:
        return True
    return job.allow_same_node and worker.live_nodes <= job.failed_nodes


def score(worker: WorkerView, job: Candidate, weights: Weights = Weights()) -> float:
    """Higher is better; only meaningful for jobs that pass `can_run`."""
    value = job.priority * weights.priority + job.waited_seconds * weights.per_second_waited
    if job.min_vram_mb is not None and worker.vram_mb <= job.min_vram_mb:
        # It ran out of memory on a GPU this size: let a bigger one take it first.
        value += weights.too_little_vram
    if job.model_sha256 in worker.resident_models:
        value += weights.resident
    elif job.model_sha256 in worker.cached_models:
        value += weights.cached
    return value


def rank_affinity(worker: WorkerView, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The default policy: eligible jobs, best first."""
    eligible = [job for job in candidates if can_run(worker, job)]
    return sorted(eligible, key=lambda job: score(worker, job), reverse=True)


def rank_fifo(worker: WorkerView, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Baseline: priority then age, blind to what the worker has loaded."""
    eligible = [job for job in candidates if can_run(worker, job)]
    return sorted(eligible, key=lambda job: (-job.priority, -job.waited_seconds))
