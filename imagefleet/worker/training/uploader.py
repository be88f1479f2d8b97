"""Writes and hands over checkpoints on a background thread, so training never waits for them.

The training thread only takes a CPU snapshot of the state (`TrainingState`) and submits it.
One worker thread writes it to a folder and calls ``on_checkpoint(step, folder)``, where the
upload and the orchestrator's checkpoint transition happen. The queue is bounded at one: while
a checkpoint is being handed over, a newer one waits, and a newer one still replaces the waiting
one (reported as superseded) instead of piling up. Losing a superseded checkpoint costs nothing,
since the newer one resumes further along.

A callback that raises is recorded and training goes on: the next checkpoint tries again, and a
lost lease is the stop check's business, not the uploader's.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from imagefleet.worker.training.checkpoint import TrainingState, write_checkpoint
from imagefleet.worker.training.types import CheckpointCallback, CheckpointReport


class CheckpointUploader:
    """At most one checkpoint in hand and one waiting; see the module docstring."""

    def __init__(self, root: Path, on_checkpoint: CheckpointCallback) -> None:
        self._root = root
        self._on_checkpoint = on_checkpoint
        self._condition = threading.Condition()
        self._waiting: TrainingState | None = None
        self._busy = False
        self._closing = False
        self.report = CheckpointReport()
        self._thread = threading.Thread(
            target=self._run, name="imagefleet-checkpoint-uploader", daemon=True
        )
        self._thread.start()

    def submit(self, state: TrainingState) -> None:
        """Queues ``state`` without blocking; a checkpoint still waiting is superseded."""
        with self._condition:
            if self._closing:
                raise RuntimeError("the checkpoint uploader is closed")
            if self._waiting is not None:
                self.report.superseded.append(self._waiting.step)
            self._waiting = state
            self._condition.notify_all()

    def drain(self) -> None:
        """Waits until every submitted checkpoint has been handed over (or has failed)."""
        with self._condition:
            self._condition.wait_for(lambda: self._waiting is None and not self._busy)

    def close(self, *, drop_waiting: bool) -> CheckpointReport:
        """Stops the thread after the checkpoint in hand; a waiting one is handed over first
        unless ``drop_waiting`` (the run succeeded or was cancelled: nobody will resume it).
        Closing again returns the same report."""
        with self._condition:
            if drop_waiting and self._waiting is not None:
                self.report.superseded.append(self._waiting.step)
                self._waiting = None
            self._closing = True
            self._condition.notify_all()
        self._thread.join()
        return self.report

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting is not None or self._closing)
                state = self._waiting
                if state is None:
                    return
                self._waiting = None
                self._busy = True
            try:
                self._hand_over(state)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _hand_over(self, state: TrainingState) -> None:
        folder = self._root / f"step-{state.step:07d}"
        try:
            write_checkpoint(state, folder)
            self._on_checkpoint(state.step, folder)
        except Exception as exc:  # a failed upload must not end the run: record it instead
            self.report.failed.append((state.step, f"{type(exc).__name__}: {exc}"))
        else:
            self.report.finished.append(state.step)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
