"""The claim a completion carries (`next`), made in the completion's transaction.

A worker that completes a job usually claims the next at once. Sent with the completion, that
claim runs in the completion's transaction, after the completing statement, and comes back in
its answer: the worker saves a request, the database a transaction (docs/architecture.md,
"Completion and the next claim")."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection

from imagefleet.orchestrator.claim_answers import WorkerDraining, claim_answer
from imagefleet.orchestrator.empty_looks import ClaimLook, EmptyLooks, profile_of
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.orchestrator.worker_claims import WorkerClaims, claim_limits
from imagefleet.orchestrator.worker_sightings import report_of
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import Assignment, ClaimRequest, ClaimResponse


@dataclass
class FollowingClaim:
    """A claim made in the transaction of the call it follows (a completion's `next`): what it
    asks for and, once `FollowingClaims.claim_within` ran, what it got."""

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


class FollowingClaims(WorkerClaims):
    """The claim's writes (`WorkerClaims._claim_on`) on a completion's transaction."""

    def claim_within(self, conn: Connection, following: FollowingClaim, now: float) -> None:
        """`following`'s claim, made on the caller's transaction (a completion's, which commits
        whatever the claim finds): what `claim_batch` writes, without its read-only idle check
        (the worker was busy) and never raising for a quarantined or draining node (the
        completion must still commit): `following` records the answer. Call
        `following_committed` once the transaction committed."""
        request = following.request
        following.taken, following.blocked, following.made = [], None, True
        following.looked = False
        limits = claim_limits(request)
        if not limits.kinds or following.yields():
            return
        following.looked = True
        report = report_of(request)
        following.reports = self._touch_due(request, report, now)
        look = ClaimLook(profile_of(request), following.looks, False)
        try:
            following.taken = self._claim_on(
                conn, following.worker_key, request, limits, report, now, look
            )
        except (NodeQuarantined, WorkerDraining) as exc:
            following.blocked = exc

    def following_committed(self, following: FollowingClaim) -> ClaimResponse:
        """The replica's bookkeeping after `claim_within`'s transaction committed, and the
        claim's answer as /v1/worker/claim words it."""
        if following.looked:  # a claim left to a waiting one saw nothing: nothing to note
            self._claim_committed(
                following.request, following.taken, following.reports, following.looks
            )
        return following.answer()
