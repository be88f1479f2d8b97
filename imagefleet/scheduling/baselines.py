"""Baseline policies, same interface as the model-aware one, for side-by-side comparison:

- `FifoPolicy`: priority then age, blind to models: whichever worker asks gets the head.
- `DeclaredModelsPolicy` (AI Horde style): a worker declares the models it can serve (here: what
  it has on disk) and gets the oldest job for a declared model. The server knows nothing of what
  is loaded on the GPU. When no queued job uses a declared model the worker takes the head and
  downloads (a Horde worker would rather add the model to its list than idle; without this a
  job for a model nobody declared would never run).
- `LookaheadPolicy` (InvokeAI style): looks at the first 32 queued jobs for one whose models are
  all on the worker's GPU, else takes the head.

All apply the same hard limits (`can_run`) as the model-aware policy.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from imagefleet.scheduling.decisions import Decision, Selection
from imagefleet.scheduling.inputs import Candidate, FleetView, WorkerView
from imagefleet.scheduling.limits import can_run

FIFO_SELECTION = Selection(oldest_per_tier=2)
# Every checkpoint the worker has on disk, as AI Horde's pop query filters on declared models.
DECLARED_SELECTION = Selection(
    oldest_per_tier=2, per_cached_checkpoint=1, cached_checkpoints_probed=64
)
LOOKAHEAD_SELECTION = Selection(oldest_per_tier=32)


def _queue_key(job: Candidate) -> tuple[int, float, str]:
    return (-job.priority, job.queued_since, job.job_id)


def _queue_order(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=_queue_key)


def _holds_all(models: Container[str], job: Candidate) -> bool:
    return all(sha256 in models for sha256, _, _ in job.models)


def _first_waiter(job: Candidate, waiters: Sequence[WorkerView], prefer: str | None) -> int | None:
    """The longest-parked waiter (the sequence's order) that can run `job`, preferring one that
    holds all its models in `prefer` ("resident_models" or "cached_models")."""
    fallback: int | None = None
    for index, worker in enumerate(waiters):
        if not can_run(worker, job):
            continue
        if prefer is None or _holds_all(getattr(worker, prefer), job):
            return index
        if fallback is None:
            fallback = index
    return fallback


@dataclass(frozen=True, slots=True)
class FifoPolicy:
    selection: Selection = FIFO_SELECTION
    name: str = "fifo"

    def rank(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> list[Decision]:
        ordered = [job for job in _queue_order(candidates) if can_run(worker, job)]
        return [Decision(job, -i, "oldest job (FIFO)") for i, job in enumerate(ordered)]

    def best(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> Decision | None:
        top: Candidate | None = None
        for job in candidates:
            if can_run(worker, job) and (
                top is None
                or (-job.priority, job.queued_since, job.job_id)
                < (-top.priority, top.queued_since, top.job_id)
            ):
                top = job
        return None if top is None else Decision(top, 0, "oldest job (FIFO)")

    def choose_waiter(
        self, job: Candidate, waiters: Sequence[WorkerView], fleet: FleetView
    ) -> int | None:
        return _first_waiter(job, waiters, None)


@dataclass(frozen=True, slots=True)
class DeclaredModelsPolicy:
    selection: Selection = DECLARED_SELECTION
    name: str = "declared-models"

    def rank(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> list[Decision]:
        ordered = [job for job in _queue_order(candidates) if can_run(worker, job)]
        declared = [job for job in ordered if _holds_all(worker.cached_models, job)]
        others = [job for job in ordered if not _holds_all(worker.cached_models, job)]
        return [
            Decision(job, -i, "declared model" if i < len(declared) else "oldest job, undeclared")
            for i, job in enumerate(declared + others)
        ]

    def best(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> Decision | None:
        declared = [job for job in candidates if _holds_all(worker.cached_models, job)]
        for pool, reason in ((declared, "declared model"), (candidates, "oldest job, undeclared")):
            runnable = [job for job in pool if can_run(worker, job)]
            if runnable:
                return Decision(min(runnable, key=_queue_key), 0, reason)
        return None

    def choose_waiter(
        self, job: Candidate, waiters: Sequence[WorkerView], fleet: FleetView
    ) -> int | None:
        return _first_waiter(job, waiters, "cached_models")


@dataclass(frozen=True, slots=True)
class LookaheadPolicy:
    depth: int = 32
    selection: Selection = LOOKAHEAD_SELECTION
    name: str = "lookahead-32"

    def rank(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> list[Decision]:
        ordered = [job for job in _queue_order(candidates) if can_run(worker, job)]
        window = ordered[: self.depth]
        warm = [job for job in window if _holds_all(worker.resident_models, job)]
        picked = {id(job) for job in warm}
        rest = [job for job in ordered if id(job) not in picked]
        return [
            Decision(job, -i, "resident, within look-ahead" if i < len(warm) else "queue head")
            for i, job in enumerate(warm + rest)
        ]

    def best(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> Decision | None:
        ordered = [job for job in _queue_order(candidates) if can_run(worker, job)]
        if not ordered:
            return None
        for job in ordered[: self.depth]:
            if _holds_all(worker.resident_models, job):
                return Decision(job, 0, "resident, within look-ahead")
        return Decision(ordered[0], 0, "queue head")

    def choose_waiter(
        self, job: Candidate, waiters: Sequence[WorkerView], fleet: FleetView
    ) -> int | None:
        return _first_waiter(job, waiters, "resident_models")
