"""What happens to a job after one of its attempts failed: a pure decision, no I/O.

The worker transitions gather the facts (the failure, how often the job failed and where, which
nodes are alive) and apply the decision; this module only decides, so every branch is tested
without a database.

Why these rules:
- A worker handing its job back (SIGTERM) or a node that vanished (lease expired) says nothing
  bad about the job: retry at once, without backoff.
- A failure that is the job's own fault (invalid input) or that the worker calls final is not
  retried anywhere.
- Otherwise back off (doubling per failure, capped) so a job that breaks workers does not spin.
- A job is never retried on a node where it failed while another live node has not tried it.
  Once it has failed on every live node (a one-node `imagefleet up` fleet is the common case),
  the configuration says whether it retries on the same node after a delay (any other node
  may still take it sooner) or fails for good with the reason; it is never left queued
  without a word.
- After running out of memory the job prefers GPUs with more memory than the one that failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imagefleet.protocol import FailureCode

ExhaustedNodes = Literal["retry_same_node", "fail"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    exhausted_nodes: ExhaustedNodes = "retry_same_node"
    same_node_delay_seconds: float = 5.0


@dataclass(frozen=True)
class Failure:
    code: FailureCode
    message: str
    retryable: bool = True


@dataclass(frozen=True)
class JobHistory:
    """The job's record, this failure included."""

    failures: int  # counted failures (handed-back attempts do not count)
    failed_nodes: frozenset[str]
    live_nodes: frozenset[str]
    allow_same_node: bool = False  # the client opted in to same-node retries
    worker_vram_mb: int | None = None  # of the worker that just failed


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    message: str  # the error recorded on the job: the last error, or why it failed for good
    run_after: float | None = None  # not offered again before this time
    allow_same_node: bool = False  # may now run on a node where it failed...
    same_node_after: float | None = None  # ...but not before this time
    min_vram_mb: int | None = None  # prefer workers with more VRAM than this


def backoff(policy: RetryPolicy, failures: int) -> float:
    """Seconds before a job that failed `failures` times is offered again."""
    base = policy.backoff_seconds * 2 ** max(0, failures - 1)
    return min(base, policy.backoff_max_seconds)


def decide_retry(
    failure: Failure, history: JobHistory, policy: RetryPolicy, now: float
) -> RetryDecision:
    """Retry (when, where) or fail for good (with the reason)."""
    code = failure.code
    if code is FailureCode.worker_shutdown:
        return RetryDecision(True, failure.message, allow_same_node=history.allow_same_node)
    if not failure.retryable or code is FailureCode.invalid_input:
        return RetryDecision(False, failure.message)
    if history.failures >= policy.max_attempts:
        return RetryDecision(
            False,
            f"gave up after {history.failures} failed attempts; last: {failure.message}",
        )
    min_vram = history.worker_vram_mb if code is FailureCode.out_of_memory else None
    delay = 0.0 if code is FailureCode.lease_expired else backoff(policy, history.failures)
    exhausted = history.live_nodes <= history.failed_nodes
    if not exhausted:
        return RetryDecision(
            True,
            failure.message,
            run_after=now + delay if delay else None,
            allow_same_node=history.allow_same_node,
            min_vram_mb=min_vram,
        )
    if policy.exhausted_nodes == "fail" and not history.allow_same_node:
        return RetryDecision(False, f"failed on every available node: {failure.message}")
    # A node that joins meanwhile may take it after the usual backoff; the nodes where it
    # failed wait at least the same-node delay.
    return RetryDecision(
        True,
        failure.message,
        run_after=now + delay if delay else None,
        allow_same_node=True,
        same_node_after=now + max(delay, policy.same_node_delay_seconds),
        min_vram_mb=min_vram,
    )
