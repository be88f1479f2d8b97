"""`imagefleet train watch`: the progress bar and the summary it prints."""

from __future__ import annotations

from imagefleet.cli.training import progress_line, summary_lines
from imagefleet.protocol import AttemptOutcome, JobStatus
from imagefleet.training_protocol import TrainingAttemptView, TrainingView


def view(**fields: object) -> TrainingView:
    base: dict[str, object] = {
        "job_id": "j",
        "status": JobStatus.running,
        "steps_done": 12,
        "total_steps": 20,
        "loss": 0.1234,
        "learning_rate": 1e-4,
        "eta_seconds": 40.0,
        "loss_curve": [],
        "checkpoints": [],
        "attempts": [],
        "interruptions_survived": 0,
        "steps_lost": 0,
        "billable_seconds": 12.5,
    }
    return TrainingView.model_validate({**base, **fields})


def test_the_progress_bar_shows_steps_loss_learning_rate_and_eta() -> None:
    assert progress_line(view()) == (
        "[##################............]  12/20 steps  loss 0.1234  lr 1.0e-04  eta 40s  running"
    )


def test_the_summary_tells_interruptions_cost_and_what_each_attempt_skipped() -> None:
    attempts = [
        TrainingAttemptView(
            number=1, outcome=AttemptOutcome.lease_expired, reached_step=14, billable_seconds=9
        ),
        TrainingAttemptView(
            number=2,
            outcome=AttemptOutcome.running,
            resumed_from_step=12,
            reached_step=12,
            billable_seconds=3,
            notes=["resumed from the checkpoint at step 12"],
        ),
    ]
    lines = summary_lines(
        view(
            attempts=attempts, interruptions_survived=1, steps_lost=2, cost=0.5, cost_per_step=0.025
        )
    )
    assert lines[0] == "interruptions survived: 1, steps lost to them: 2"
    assert lines[1] == "lease time: 12.5s, cost $0.500000 ($0.02500000 per step)"
    assert lines[3] == "attempt 1: lease_expired, steps ?...14"
    assert lines[4] == "attempt 2: running, steps 12...12\n  resumed from the checkpoint at step 12"
