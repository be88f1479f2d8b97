"""Why a queued job waits, in words a client can act on: pure functions of the job's needs, the
workers seen recently and the job's place in the queue (no I/O; the orchestrator gathers them).

- `unservable`: no worker seen in the window could ever run it (kind, size, VRAM): the job is
  flagged at submit and failed after `IMAGEFLEET_UNSERVABLE_AFTER_SECONDS` with this reason.
- `why_waiting`: the first thing that holds it back: no capable worker online, a retry backoff,
  the jobs ahead of it (its owner's own first), or busy workers (those holding its checkpoint
  first, which the model-aware policy waits for a little rather than load it cold elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobNeeds:
    kind: str
    pixels: int
    required_vram_mb: int | None
    checkpoint_sha256: str | None = None
    checkpoint_name: str | None = None


@dataclass(frozen=True, slots=True)
class SeenWorker:
    """A worker as its last claim reported it; `live` if it claimed within a few leases."""

    worker_id: str
    kinds: frozenset[str]
    max_pixels: int
    vram_mb: int
    resident_models: frozenset[str]
    cached_models: frozenset[str]
    live: bool
    busy: bool


@dataclass(frozen=True, slots=True)
class Place:
    """Queued jobs ahead of it (higher priority, or as high and older), and of those its
    owner's; counts stop at a cap (`capped`: at least that many)."""

    ahead: int
    ahead_own: int
    capped: bool = False
    retry_in_s: float = 0.0


def can_serve(worker: SeenWorker, needs: JobNeeds) -> bool:
    """The hard limits of the claim's SQL, against a worker's last report."""
    if needs.kind not in worker.kinds or needs.pixels > worker.max_pixels:
        return False
    return not (
        worker.vram_mb and needs.required_vram_mb and needs.required_vram_mb > worker.vram_mb
    )


def unservable(needs: JobNeeds, workers: Sequence[SeenWorker], window_s: float) -> str | None:
    """Why no worker among `workers` (seen within `window_s`) could run the job; None if one
    could, or if no worker was seen at all (a fleet scaling up from zero is not judged)."""
    if not workers or any(can_serve(w, needs) for w in workers):
        return None
    hours = window_s / 3600
    seen = f"no worker seen in the last {hours:g} h"
    kind = [w for w in workers if needs.kind in w.kinds]
    if not kind:
        return f"{seen} serves job kind {needs.kind!r}"
    sized = [w for w in kind if needs.pixels <= w.max_pixels]
    if not sized:
        largest = max(w.max_pixels for w in kind)
        return f"{seen} takes {needs.pixels} pixels (largest: {largest})"
    largest_vram = max(w.vram_mb for w in sized)
    return f"{seen} has {needs.required_vram_mb} MB of GPU memory (largest: {largest_vram} MB)"


def why_waiting(needs: JobNeeds, workers: Sequence[SeenWorker], place: Place) -> str:
    """The first reason the job is still queued."""
    capable = [w for w in workers if w.live and can_serve(w, needs)]
    if not capable:
        if needs.required_vram_mb:
            return f"no worker with {needs.required_vram_mb} MB of GPU memory online"
        return f"no worker that runs {needs.kind} at {needs.pixels} pixels online"
    if place.retry_in_s > 0:
        return f"retrying after a failure in {place.retry_in_s:.0f} s"
    more = "+" if place.capped else ""
    if place.ahead_own and 2 * place.ahead_own >= place.ahead:
        return f"behind {place.ahead_own}{more} jobs of your own"
    if place.ahead:
        return f"behind {place.ahead}{more} jobs (higher tier or submitted earlier)"
    idle = [w for w in capable if not w.busy]
    sha = needs.checkpoint_sha256
    holders = [w for w in capable if sha and sha in w.resident_models]
    name = needs.checkpoint_name or (sha[:12] if sha else "")
    if holders and all(w.busy for w in holders):
        return f"waiting for a worker that holds model {name} ({len(holders)} busy)"
    if not idle:
        return f"all {len(capable)} workers that can run it are busy"
    return "next in line: an idle worker that can run it should claim it shortly"
