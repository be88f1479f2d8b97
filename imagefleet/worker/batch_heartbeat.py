"""The heartbeat of a micro-batch: every attempt's lease renewed by one batched call.

Like `Heartbeat` (heartbeat.py), it beats at least every `interval` seconds and sooner when
progress moved (at most every `progress_interval`), but for all the batch's attempts at once
(`POST /v1/worker/heartbeats`). Each attempt answers for itself: one the client cancelled, or
whose lease is lost, is marked and no longer renewed, while the others go on. `release` hands
an attempt over to its own heartbeat (when the batch falls back to running its jobs one by
one, the waiting ones keep their leases here meanwhile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from imagefleet.worker.heartbeat import BeatLoop, BeatOutcome
from imagefleet.worker.orchestrator_client import OrchestratorClient
from imagefleet.worker_protocol import AttemptHeartbeat

log = logging.getLogger("imagefleet.worker.heartbeat")


class BatchHeartbeat(BeatLoop):
    def __init__(
        self,
        client: OrchestratorClient,
        attempt_ids: Iterable[str],
        *,
        interval: float,
        progress_interval: float = 0.5,
    ) -> None:
        super().__init__(
            interval=interval, progress_interval=progress_interval, name="batch-heartbeat"
        )
        self.client = client
        self._active = list(attempt_ids)
        self.cancel_reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def cancelled(self, attempt_id: str) -> bool:
        return attempt_id in self.cancel_reasons

    @property
    def all_cancelled(self) -> bool:
        """True when no attempt of the batch is wanted any more: the call may stop."""
        with self._lock:
            return all(a in self.cancel_reasons for a in self._active)

    def progress(self, step: int, total: int) -> None:
        self._step, self._total = step, total
        self._wake.set()

    def release(self, attempt_id: str) -> None:
        """Stops renewing this attempt (it has a heartbeat of its own now)."""
        with self._lock:
            if attempt_id in self._active:
                self._active.remove(attempt_id)

    def finish(self) -> None:
        """Stops beating, then sends the final progress of every attempt still wanted (before
        they complete), unless the last beat carried it; a failure here is only logged."""
        self.stop()
        if self._step != self._sent_step:
            self._beat()

    def _beat(self) -> BeatOutcome:
        """One batched beat for every attempt still wanted."""
        with self._lock:
            wanted = [a for a in self._active if a not in self.cancel_reasons]
        if not wanted:
            return "sent"
        step, total = self._step, self._total
        beats = [AttemptHeartbeat(attempt_id=a, step=step, total_steps=total) for a in wanted]
        try:
            results = self.client.heartbeat_many(beats)
        except Exception as exc:  # keep beating: the leases may survive a short network cut
            log.warning("batch heartbeat failed: %s", exc)
            return "retry"
        self._sent_step = step
        for result in results:
            if result.action != "continue":
                self.cancel_reasons[result.attempt_id] = result.reason or result.action
        return "sent"
