"""A claim's answer as the worker protocol words it: its jobs, or why its node gets none."""

from __future__ import annotations

from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.worker_protocol import Assignment, ClaimResponse

QUARANTINED_RETRY_SECONDS = 60.0
# A drained worker keeps asking this often: it may be kept after all, or it waits to be stopped.
DRAINING_RETRY_SECONDS = 5.0


class WorkerDraining(RuntimeError):
    """The claiming worker's node is being removed by the autoscaler; the message says why."""


def claim_answer(taken: list[Assignment], blocked: Exception | None = None) -> ClaimResponse:
    """A claim's answer: its jobs, or why its node gets none (quarantined or draining), or
    nothing for now."""
    if isinstance(blocked, NodeQuarantined):
        return ClaimResponse(
            quarantined=str(blocked), retry_after_seconds=QUARANTINED_RETRY_SECONDS
        )
    if isinstance(blocked, WorkerDraining):
        return ClaimResponse(drain=str(blocked), retry_after_seconds=DRAINING_RETRY_SECONDS)
    if taken:
        return ClaimResponse(assignment=taken[0], more=taken[1:])
    return ClaimResponse()
