"""A claim's answer, and a claim made inside the transaction of the call it follows.

A worker that completes a job usually claims the next at once. Sent with the completion (its
`next`), that claim runs in the completion's transaction and comes back in its answer: the
worker saves a request, the database a transaction (docs/architecture.md, "Completion and the
next claim")."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagefleet.orchestrator.empty_looks import EmptyLooks, profile_of
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import Assignment, ClaimRequest, ClaimResponse

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


@dataclass
class FollowingClaim:
    """A claim made in the transaction of the call it follows (a completion's `next`): what it
    asks for and, once `WorkerClaims.claim_within` ran, what it got."""

    worker_key: ApiKey
    request: ClaimRequest
    signal: WorkSignal | None = None  # the replica's parked claims and empty looks
    taken: list[Assignment] = field(default_factory=list)
    blocked: NodeQuarantined | WorkerDraining | None = None
    reports: bool = False  # the claim recorded the worker's report
    made: bool = False  # the claim ran (not when the call it follows was refused or repeated)
    looked: bool = False  # it looked at the queue (not when it was left to a waiting claim)

    def answer(self) -> ClaimResponse:
        return claim_answer(self.taken, self.blocked)

    def yields(self) -> bool:
        """Whether to leave the claim to a claim of a worker like this one parked on this
        replica: that worker is idle, so what it can run was not queued when it looked, and a
        job queued since wakes it. This claim would only race it for that job, and mostly
        lose (a transaction's worth of statements for nothing): the worker is told that
        nothing is there for it now, and long-polls as usual."""
        return self.signal is not None and self.signal.parked(profile_of(self.request))

    @property
    def looks(self) -> EmptyLooks | None:
        return self.signal.empty_looks if self.signal is not None else None
