"""The shape every scheduling policy shares, so the orchestrator and the simulator can swap the
model-aware policy for a baseline without changing a line.

A policy declares the `Selection` it needs (which index probes gather its candidates; the SQL
preselection in the orchestrator, in-memory indexes in the simulator), ranks those candidates for
a claiming worker, and picks which parked worker a newly queued job should wake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from imagefleet.scheduling.inputs import Candidate, FleetView, WorkerView


@dataclass(frozen=True, slots=True)
class Decision:
    """One candidate the worker may run, its score (higher first) and why, in a few words.

    `why` is the reason or a function that words it: a claim explains only the job it hands
    out, and the simulator none, so the words are put together only when `reason` is read."""

    candidate: Candidate
    score: float
    why: str | Callable[[], str]
    setup_seconds: float = 0.0

    @property
    def reason(self) -> str:
        return self.why if isinstance(self.why, str) else self.why()


@dataclass(frozen=True, slots=True)
class Selection:
    """Which queued jobs a claim gathers, each a bounded index probe, all hard limits applied:

    - `fair_head_per_tier`: the lowest fair-share start tags of each tier (index on tier,
      fair_tag; `scheduling.fairness.fair_tag` computes them at submit);
    - `oldest_per_tier`: the oldest jobs of each tier (index on tier, priority, created_at): the
      FIFO head, and the jobs nearest the aging bound;
    - `per_resident_combo`: the oldest jobs of each combo on the worker's GPU (index on
      combo_key, created_at);
    - `per_resident_checkpoint` for up to `resident_checkpoints_probed` checkpoints on the
      worker's GPU (the most recently used first): the oldest jobs needing each (`job_models` on
      sha256, created_at);
    - `per_cached_checkpoint` for up to `cached_checkpoints_probed` checkpoints on the worker's
      disk (the most recently used first).

    The union is deduplicated. Its size is bounded by the worker's resident and cached sets, not
    by the queue, so a claim costs the same with 1,000 or 1,000,000 jobs queued.
    """

    fair_head_per_tier: int = 0
    oldest_per_tier: int = 0
    per_resident_combo: int = 0
    per_resident_checkpoint: int = 0
    resident_checkpoints_probed: int = 64
    per_cached_checkpoint: int = 0
    cached_checkpoints_probed: int = 0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"selection.{name}: expected an integer >= 0, got {value!r}")
        if self.fair_head_per_tier + self.oldest_per_tier == 0:
            raise ValueError(
                "selection: fair_head_per_tier or oldest_per_tier must be > 0, or a worker with "
                "nothing resident would never see a job"
            )


class SchedulingPolicy(Protocol):
    """What the orchestrator's claim path and the simulator call."""

    @property
    def name(self) -> str: ...

    @property
    def selection(self) -> Selection: ...

    def rank(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> list[Decision]:
        """Every candidate `worker` should run now, best first (the claim tries them in order:
        another replica may take the first)."""
        ...

    def best(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> Decision | None:
        """The first of `rank`, computed without sorting: the simulator's hot path."""
        ...

    def choose_waiter(
        self, job: Candidate, waiters: Sequence[WorkerView], fleet: FleetView
    ) -> int | None:
        """Index of the parked worker a newly queued `job` should wake, or None to wake nobody
        (no waiter can run it, or it is better left for a busy worker)."""
        ...
