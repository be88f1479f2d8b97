"""`imagefleet train watch JOB`: a training job's progress bar with its loss, then its
interruptions, checkpoints and bill. Translation only: everything comes from
`GET /v1/jobs/{id}/training`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from imagefleet.cli.common import UrlOption
from imagefleet.cli.connection import KeyOption, connect, talking_to
from imagefleet.cli.datadir import DataDirOption
from imagefleet.training_protocol import TrainingView

train_app = typer.Typer(help="Follow LoRA training jobs (kind train_lora).", no_args_is_help=True)
BAR_WIDTH = 30


def progress_line(view: TrainingView) -> str:
    """`[#######.......]  12/20 steps  loss 0.1234  lr 1.0e-04  eta 40s  running`."""
    total = max(1, view.total_steps)
    filled = min(BAR_WIDTH, BAR_WIDTH * view.steps_done // total)
    parts = [
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]",
        f"{view.steps_done}/{view.total_steps} steps",
    ]
    if view.loss is not None:
        parts.append(f"loss {view.loss:.4f}")
    if view.learning_rate is not None:
        parts.append(f"lr {view.learning_rate:.1e}")
    if view.eta_seconds is not None:
        parts.append(f"eta {view.eta_seconds:.0f}s")
    parts.append(view.status.value)
    return "  ".join(parts)


def summary_lines(view: TrainingView) -> list[str]:
    lines = [
        f"interruptions survived: {view.interruptions_survived}, "
        f"steps lost to them: {view.steps_lost}",
        f"lease time: {view.billable_seconds:.1f}s"
        + (f", cost ${view.cost:.6f}" if view.cost is not None else ", no price configured")
        + (f" (${view.cost_per_step:.8f} per step)" if view.cost_per_step is not None else ""),
        "checkpoints kept: " + (", ".join(str(c.step) for c in view.checkpoints) or "none"),
    ]
    for attempt in view.attempts:
        start = "?" if attempt.resumed_from_step is None else str(attempt.resumed_from_step)
        lines.append(
            f"attempt {attempt.number}: {attempt.outcome.value}, steps {start}..."
            f"{attempt.reached_step}" + "".join(f"\n  {note}" for note in attempt.notes)
        )
    if view.model is not None:
        lines.append(
            f"registered: {view.model.kind.value} {view.model.name} v{view.model.version} "
            f'(sha256 {view.model.sha256[:12]}…); use it as loras=["{view.model.name}"]'
        )
    return lines


@train_app.command("watch")
def train_watch(
    job_id: str = typer.Argument(..., help="The train_lora job's id."),
    once: bool = typer.Option(False, "--once", help="Print the state once instead of following."),
    poll: float = typer.Option(1.0, "--poll", min=0.1, help="Seconds between updates."),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """A progress bar with the loss until the job ends, then its summary."""
    with talking_to(url), connect(url, key, data_dir) as client:
        view = client.training(job_id)
        while not once and not view.status.is_final:
            typer.echo("\r" + progress_line(view), nl=False)
            time.sleep(poll)
            view = client.training(job_id)
    typer.echo(("\r" if not once else "") + progress_line(view))
    typer.echo("\n".join(summary_lines(view)))
