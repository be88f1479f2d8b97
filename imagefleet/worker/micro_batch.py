"""Running a claimed micro-batch: several compatible jobs as one pipeline call.

The claim answered several assignments with one batch key (`ClaimResponse.more`); each is its
own attempt, and keeps its own fate here:
- one batched heartbeat renews every lease; a job its client cancels (or whose lease is lost)
  is marked, still rides along in the running call, and is never completed; when every job of
  the batch is cancelled the call stops at its next step;
- after the call each job is uploaded and completed on its own (a failure there fails that job
  alone);
- if the batched call raises, the worker falls back to running the jobs one by one, each
  through the ordinary path (`Worker.process`: its own heartbeat, its own failure code and
  retry decision), while the waiting ones keep their leases on the batched heartbeat. A job
  that cannot batch (another kind, an engine without `generate_batch`) runs that way too.
- a worker told to stop hands every unfinished job of the batch back (worker_shutdown).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from imagefleet.protocol import FailureCode
from imagefleet.worker.batch_heartbeat import BatchHeartbeat
from imagefleet.worker.handlers.base import JobContext
from imagefleet.worker.handlers.batched import can_batch, run_txt2img_batch
from imagefleet.worker.orchestrator_client import LeaseLost
from imagefleet.worker_protocol import Assignment

if TYPE_CHECKING:
    from imagefleet.worker.loop import Worker

log = logging.getLogger("imagefleet.worker")


def run_batch(worker: Worker, assignments: list[Assignment]) -> None:
    """Runs the batch to its end: see the module docstring."""
    from imagefleet.worker.engines.base import GenerationCancelled

    kind = assignments[0].kind
    ids = [a.attempt_id for a in assignments]
    beat = BatchHeartbeat(
        worker.client, ids, interval=min(a.lease_seconds for a in assignments) / 3
    )
    beat.start()
    if any(a.kind != kind for a in assignments) or not can_batch(worker.engine, kind):
        try:
            one_by_one(worker, assignments, beat)
        finally:
            beat.stop()
        return
    log.info("micro-batch of %d: attempts %s", len(ids), ", ".join(ids))

    def stop() -> bool:
        return beat.all_cancelled or worker._must_hand_back()

    try:
        contexts = [
            JobContext(
                assignment=a,
                engine=worker.engine,
                cache=worker.cache,
                fetch=worker.client.fetch,
                on_step=beat.progress,
                should_stop=stop,
                client=worker.client,
            )
            for a in assignments
        ]
        try:
            files = run_txt2img_batch(contexts, beat.progress, stop)
        except GenerationCancelled:
            if not beat.all_cancelled:
                for a in assignments:
                    if not beat.cancelled(a.attempt_id):
                        worker._report(
                            a.attempt_id,
                            FailureCode.worker_shutdown,
                            "the worker is shutting down",
                            True,
                        )
            log.info("micro-batch stopped (%s)", ", ".join(beat.cancel_reasons.values()))
            return
        except Exception as exc:
            log.warning(
                "micro-batch call failed (%s: %s); running its jobs one by one",
                type(exc).__name__,
                exc,
            )
            one_by_one(worker, assignments, beat)
            return
        beat.finish()
        for ctx, outputs in zip(contexts, files, strict=True):
            attempt = ctx.assignment.attempt_id
            if beat.cancelled(attempt):
                log.info("attempt %s: stopped (%s)", attempt, beat.cancel_reasons[attempt])
                continue
            try:
                worker.deliver(ctx, outputs, lambda: None)
            except LeaseLost as exc:
                log.warning("attempt %s: lease lost, result dropped: %s", attempt, exc)
            except Exception as exc:
                log.exception("attempt %s: completing failed", attempt)
                worker._report(
                    attempt, FailureCode.worker_error, f"{type(exc).__name__}: {exc}", True
                )
    finally:
        beat.stop()


def one_by_one(worker: Worker, assignments: list[Assignment], beat: BatchHeartbeat) -> None:
    """Each job through `Worker.process`; the waiting ones stay on `beat` until their turn."""
    for assignment in assignments:
        attempt = assignment.attempt_id
        if beat.cancelled(attempt):
            log.info("attempt %s: stopped (%s)", attempt, beat.cancel_reasons[attempt])
            continue
        beat.release(attempt)
        if worker._stopping:
            worker._report(
                attempt, FailureCode.worker_shutdown, "the worker is shutting down", True
            )
            continue
        worker.process(assignment)
