"""Background threads that renew leases and report progress while a job runs.

`BeatLoop` is the timing both heartbeats share: it beats at least every `interval` seconds
(a third of the lease) and sooner when progress moved, at most every `progress_interval`
seconds, so clients see steps advance without a request per denoising step. `Heartbeat`
renews one attempt; `BatchHeartbeat` (batch_heartbeat.py) all of a micro-batch's in one call.
`finish()` sends the last step before the job completes: a job faster than one beat would
otherwise end as "step 0 of 0", since the orchestrator only knows the totals that heartbeats
told it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from imagefleet.worker.orchestrator_client import LeaseLost, OrchestratorClient

log = logging.getLogger("imagefleet.worker.heartbeat")
# After a failed beat, try again this soon: often enough to keep the lease through a short
# orchestrator restart, rarely enough not to hammer it while it is down.
RETRY_SECONDS = 0.5

# What one beat tells the loop: it went through, it failed (try again soon), or there is
# nothing more to renew (cancelled, lease lost).
BeatOutcome = Literal["sent", "retry", "stop"]


class BeatLoop:
    """The beating thread; subclasses say what one beat sends (`_beat`)."""

    def __init__(self, *, interval: float, progress_interval: float, name: str) -> None:
        self.interval = interval
        self.progress_interval = min(progress_interval, interval)
        self._step = 0
        self._total = 0
        self._sent_step = -1
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=35)

    def _beat(self) -> BeatOutcome:
        raise NotImplementedError

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(timeout=self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            since = time.monotonic() - last_beat
            if self._step == self._sent_step and since < self.interval:
                continue
            # Rate-limit progress beats, but never make stop() (and so the job's completion)
            # wait out the pause.
            if since < self.progress_interval and self._stop.wait(self.progress_interval - since):
                return
            outcome = self._beat()
            if outcome == "stop":
                return
            if outcome == "retry":
                if self._stop.wait(RETRY_SECONDS):
                    return
                continue
            last_beat = time.monotonic()


class Heartbeat(BeatLoop):
    def __init__(
        self,
        client: OrchestratorClient,
        attempt_id: str,
        *,
        interval: float,
        progress_interval: float = 0.5,
    ) -> None:
        super().__init__(interval=interval, progress_interval=progress_interval, name="heartbeat")
        self.client = client
        self.attempt_id = attempt_id
        self.cancel_reason: str | None = None
        # Set when the autoscaler is removing this worker: the job still runs to its end.
        self.drain_reason: str | None = None
        self._loss: float | None = None
        self._learning_rate: float | None = None

    @property
    def cancelled(self) -> bool:
        """True once the orchestrator said stop: the client cancelled or the lease was lost."""
        return self.cancel_reason is not None

    def progress(
        self,
        step: int,
        total: int,
        loss: float | None = None,
        learning_rate: float | None = None,
    ) -> None:
        """Records progress (training kinds add the step's loss and learning rate)."""
        self._step, self._total = step, total
        self._loss, self._learning_rate = loss, learning_rate
        self._wake.set()

    def finish(self) -> None:
        """Stops beating, then reports the final progress if the last beat did not carry it.

        Called before `complete`, which counts the job as having run every step it was told
        about; a failed beat here is only logged, because the result matters more.
        """
        self.stop()
        if not self.cancelled and self._step != self._sent_step:
            self._beat()

    def _beat(self) -> BeatOutcome:
        step, total, loss, rate = self._step, self._total, self._loss, self._learning_rate
        try:
            answer = self.client.heartbeat(self.attempt_id, step, total, loss, rate)
        except LeaseLost as exc:
            self.cancel_reason = f"lease lost: {exc}"
            return "stop"
        except Exception as exc:  # keep beating: the lease may survive a short network cut
            log.warning("heartbeat failed: %s", exc)
            return "retry"
        self._sent_step = step
        if answer.drain and self.drain_reason is None:
            self.drain_reason = answer.drain
            log.info("draining (%s): finishing this job, then no more", answer.drain)
        if answer.action == "cancel":
            self.cancel_reason = answer.reason or "cancelled"
            return "stop"
        return "sent"
