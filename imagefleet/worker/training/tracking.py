"""Optional experiment tracking: the run's arguments and its loss and learning-rate curves.

Tracking is the operator's choice, never required: with no configuration nothing is tracked
and nothing is imported. Two backends:

- ``jsonl:PATH``: one JSON object per line (start, every step, finish), appended to PATH;
  no dependency, and what the tests and a quick look with ``jq`` use;
- ``mlflow:TRACKING_URI``: an MLflow run per attempt through ``MlflowClient`` (no global
  "active run" state), e.g. ``mlflow:sqlite:////var/lib/mlflow.db`` for a local store or
  ``mlflow:http://mlflow:5000`` for a server; needs the ``tracking`` extra (mlflow-skinny).

Each attempt is its own tracked run, tagged with the job and attempt ids; a resumed attempt
logs from the step it resumed at, so the curves of all attempts of a job line up on one axis.
A tracker that fails must not fail the job: `make_tracker` wraps every backend in
`QuietTracker`, which logs its errors instead of raising them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from imagefleet.worker.training.types import ProgressCallback, StepProgress

RunStatus = Literal["succeeded", "failed", "stopped"]
MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
logger = logging.getLogger(__name__)


class Tracker(Protocol):
    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None: ...

    def log(self, progress: StepProgress) -> None: ...

    def finish(self, status: RunStatus) -> None: ...


@dataclass(frozen=True)
class TrackingConfig:
    backend: Literal["jsonl", "mlflow"]
    target: str  # a file path (jsonl) or an MLflow tracking URI
    experiment: str = "imagefleet"


def parse_tracking(spec: str, experiment: str = "imagefleet") -> TrackingConfig:
    """``jsonl:PATH`` or ``mlflow:URI`` (the worker's tracking option) as a config."""
    backend, colon, target = spec.partition(":")
    if not colon or not target or backend not in ("jsonl", "mlflow"):
        raise ValueError(
            f"tracking {spec!r}: expected 'jsonl:PATH' or 'mlflow:TRACKING_URI' "
            "(e.g. mlflow:sqlite:////var/lib/imagefleet/mlflow.db)"
        )
    return TrackingConfig(backend, target, experiment)  # type: ignore[arg-type]


def make_tracker(config: TrackingConfig) -> Tracker:
    backend: Tracker
    if config.backend == "jsonl":
        backend = JsonlTracker(Path(config.target))
    else:
        backend = MlflowTracker(config.target, config.experiment)
    return QuietTracker(backend)


class QuietTracker:
    """Wraps a tracker so that its errors are logged, never raised: a tracking server that is
    down must not fail or slow down a paid training job."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        _quietly(lambda: self._tracker.start(run_name, params, tags))

    def log(self, progress: StepProgress) -> None:
        _quietly(lambda: self._tracker.log(progress))

    def finish(self, status: RunStatus) -> None:
        _quietly(lambda: self._tracker.finish(status))


def tracked(tracker: Tracker, on_progress: ProgressCallback | None = None) -> ProgressCallback:
    """A progress callback that calls ``on_progress`` and then feeds ``tracker``."""

    def report(progress: StepProgress) -> None:
        if on_progress is not None:
            on_progress(progress)
        tracker.log(progress)

    return report


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # best effort by design, see QuietTracker
        logger.warning("experiment tracking failed", exc_info=True)


class JsonlTracker:
    """Appends start, step and finish events to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._run = ""

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        self._run = run_name
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._write({"event": "start", "params": params, "tags": tags})

    def log(self, progress: StepProgress) -> None:
        self._write(
            {
                "event": "step",
                "step": progress.step,
                "total_steps": progress.total_steps,
                "loss": progress.loss,
                "learning_rate": progress.learning_rate,
            }
        )

    def finish(self, status: RunStatus) -> None:
        self._write({"event": "finish", "status": status})

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"run": self._run, "time": time.time(), **record}, allow_nan=True)
        with self._path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


@dataclass
class MlflowTracker:
    """One MLflow run per attempt; metrics are sent in batches to keep steps fast."""

    tracking_uri: str
    experiment: str
    flush_every: int = 20
    _client: Any = None
    _run_id: str | None = None
    _pending: list[Any] = field(default_factory=list)

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self._client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self._client.create_experiment(self.experiment)
        )
        run = self._client.create_run(experiment_id, run_name=run_name, tags=tags)
        self._run_id = run.info.run_id
        self._client.log_batch(
            self._run_id, params=[Param(key, str(value)) for key, value in params.items()]
        )

    def log(self, progress: StepProgress) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending += [
            Metric("loss", progress.loss, stamp, progress.step),
            Metric("learning_rate", progress.learning_rate, stamp, progress.step),
        ]
        if len(self._pending) >= 2 * self.flush_every:
            self._flush()

    def finish(self, status: RunStatus) -> None:
        self._flush()
        self._client.set_terminated(self._run_id, status=MLFLOW_STATUS[status])

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def _flush(self) -> None:
        if self._pending:
            self._client.log_batch(self._run_id, metrics=self._pending)
            self._pending = []
