"""Hard limits: whether a worker may run a job at all. The claim's SQL filters on the same rules
before ranking (so jobs a worker cannot run never hide jobs it can); the policy checks them again
so that no caller can hand out a job the worker would fail."""

from __future__ import annotations

from enum import StrEnum

from imagefleet.scheduling.inputs import Candidate, WorkerView


class Refusal(StrEnum):
    """Why a worker cannot run a job (words for the queue's explanations)."""

    kind = "kind not served by this worker"
    pixels = "image larger than this worker's limit"
    vram = "needs more GPU memory than this worker has"
    failed_here = "already failed on this node"


def refusal(worker: WorkerView, job: Candidate) -> Refusal | None:
    """None when `worker` may run `job`, else the first limit it breaks.

    A job never runs again on a node where it failed, unless it allows a same-node retry and has
    failed on every live node (`worker.live_nodes`, which must then include this one)."""
    if job.kind not in worker.kinds:
        return Refusal.kind
    if job.pixels > worker.max_pixels:
        return Refusal.pixels
    if job.min_vram_mb > worker.vram_mb:
        return Refusal.vram
    failed = job.failed_nodes
    retry_here = job.allow_same_node and bool(worker.live_nodes) and worker.live_nodes <= failed
    if failed and worker.node_id in failed and not retry_here:
        return Refusal.failed_here
    return None


def can_run(worker: WorkerView, job: Candidate) -> bool:
    """True when no hard limit keeps `worker` from running `job` (the rules of `refusal`,
    inlined: this runs for every candidate of every claim)."""
    if job.kind not in worker.kinds or job.pixels > worker.max_pixels:
        return False
    if job.min_vram_mb > worker.vram_mb:
        return False
    failed = job.failed_nodes
    if failed and worker.node_id in failed:
        return job.allow_same_node and bool(worker.live_nodes) and worker.live_nodes <= failed
    return True
