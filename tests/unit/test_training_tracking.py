"""Experiment tracking: the JSONL and MLflow (local SQLite store) backends, and failing quietly."""

import json
from pathlib import Path
from typing import Any

import pytest

from imagefleet.worker.training.tracking import (
    MlflowTracker,
    QuietTracker,
    make_tracker,
    parse_tracking,
    tracked,
)
from imagefleet.worker.training.types import StepProgress

STEPS = [StepProgress(step, 3, 1.0 / step, 1e-4 * step) for step in (1, 2, 3)]


def test_the_jsonl_tracker_writes_the_run_its_steps_and_its_end(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "training.jsonl"
    tracker = make_tracker(parse_tracking(f"jsonl:{path}"))
    tracker.start("job-1/attempt-2", {"rank": 4}, {"job_id": "job-1"})
    seen: list[int] = []
    report = tracked(tracker, lambda progress: seen.append(progress.step))
    for progress in STEPS:
        report(progress)
    tracker.finish("succeeded")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "step", "step", "step", "finish"]
    assert {r["run"] for r in records} == {"job-1/attempt-2"}
    assert records[0]["params"] == {"rank": 4}
    assert [r["loss"] for r in records[1:4]] == [1.0, 0.5, 1 / 3]
    assert records[-1]["status"] == "succeeded"
    assert seen == [1, 2, 3]


def test_the_mlflow_tracker_records_params_and_curves_in_a_local_store(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "imagefleet-tests", flush_every=2)
    tracker.start("job-1/attempt-1", {"rank": 4, "learning_rate": 1e-4}, {"job_id": "job-1"})
    for progress in STEPS:
        tracker.log(progress)
    tracker.finish("stopped")

    client = MlflowClient(tracking_uri=uri)
    assert tracker.run_id is not None
    run = client.get_run(tracker.run_id)
    assert run.data.params == {"rank": "4", "learning_rate": "0.0001"}
    assert run.data.tags["job_id"] == "job-1"
    assert run.info.status == "KILLED"
    history = client.get_metric_history(tracker.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]


class Broken:
    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        raise ConnectionError("tracking server down")

    def log(self, progress: StepProgress) -> None:
        raise ConnectionError("tracking server down")

    def finish(self, status: str) -> None:
        raise ConnectionError("tracking server down")


def test_a_failing_tracker_is_logged_and_never_fails_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = QuietTracker(Broken())  # type: ignore[arg-type]
    tracker.start("run", {}, {})
    tracked(tracker)(STEPS[0])
    tracker.finish("failed")
    assert caplog.text.count("experiment tracking failed") == 3


@pytest.mark.parametrize("spec", ["", "jsonl", "jsonl:", "wandb:offline", "file.jsonl"])
def test_a_malformed_tracking_option_says_what_is_expected(spec: str) -> None:
    with pytest.raises(ValueError, match="expected 'jsonl:PATH' or 'mlflow:TRACKING_URI'"):
        parse_tracking(spec)
