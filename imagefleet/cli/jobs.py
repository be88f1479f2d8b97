"""`imagefleet jobs list|get|cancel|download|attempts`: a client's own jobs, over the API."""

from __future__ import annotations

from pathlib import Path

import typer

from imagefleet.api_views import JobView
from imagefleet.cli.common import UrlOption, fail
from imagefleet.cli.connection import KeyOption, connect, talking_to
from imagefleet.cli.datadir import DataDirOption
from imagefleet.cli.tables import print_table, when
from imagefleet.client import ImageFleetClient
from imagefleet.protocol import JobStatus

jobs_app = typer.Typer(help="List, inspect, cancel and download your jobs.", no_args_is_help=True)
JobIdArgument = typer.Argument(..., help="The job id `imagefleet submit` printed.")
PROMPT_PREVIEW_CHARS = 40


def error_line(job: JobView) -> str:
    """': code: message' for a job that has an error (a final one, or a queued one that failed
    before and waits for a retry), else ''."""
    error = job.error or job.last_error
    return f": {error.code}: {error.message}" if error else ""


def progress_text(job: JobView) -> str:
    total = job.progress.total_steps or job.params.get("steps", 0)
    return f"{job.progress.step}/{total}"


def model_text(job: JobView) -> str:
    """The job's checkpoint (name and version), plus how many other models its combo has."""
    checkpoint = next((m for m in job.models if m.role.value == "checkpoint"), None)
    text = f"{checkpoint.name} v{checkpoint.version}" if checkpoint else "-"
    others = len(job.models) - (1 if checkpoint else 0)
    return f"{text} +{others}" if others else text


def _error_code(job: JobView) -> str:
    error = job.error or job.last_error
    return error.code if error else ""


def size_text(job: JobView) -> str:
    width, height = job.params.get("width"), job.params.get("height")
    return f"{width}x{height}" if width and height else "-"


def save_outputs(client: ImageFleetClient, job: JobView, folder: Path) -> list[Path]:
    """Writes each output as FOLDER/<job id>-<index>.png and says so."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for out in job.outputs:
        path = folder / f"{job.id}-{out.index}.png"
        path.write_bytes(client.download(job.id, out.index))
        typer.echo(f"wrote {path} ({out.width}x{out.height}, seed {out.seed})")
        written.append(path)
    return written


@jobs_app.command("list")
def jobs_list(
    status: JobStatus | None = typer.Option(None, "--status", help="Only jobs in this state."),
    limit: int = typer.Option(20, "--limit", min=1, max=200, help="How many, newest first."),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Your newest jobs with their state and progress."""
    with talking_to(url), connect(url, key, data_dir) as client:
        page = client.list_jobs(status=status, limit=limit)
    print_table(
        ("id", "status", "queued at (UTC)", "model", "size", "steps", "prompt", "error"),
        (
            (
                job.id,
                job.status.value,
                when(job.timings.queued_at),
                model_text(job),
                size_text(job),
                progress_text(job),
                _preview(str(job.params.get("prompt", ""))),
                _error_code(job),
            )
            for job in page.jobs
        ),
        empty="no jobs" + (f" in state {status.value}" if status else ""),
    )


@jobs_app.command("get")
def jobs_get(
    job_id: str = JobIdArgument,
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """One job: state, progress, error, parameters, timings and outputs."""
    with talking_to(url), connect(url, key, data_dir) as client:
        job = client.get(job_id)
    p, t = job.params, job.timings
    lines = [
        f"job {job.id}: {job.status.value}, step {progress_text(job)}, "
        f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}",
        f"kind: {job.kind}",
    ]
    if job.error:
        lines.append(f"error: {job.error.code}: {job.error.message}")
    if job.last_error:
        lines.append(
            f"last error (waiting for a retry): {job.last_error.code}: {job.last_error.message}"
        )
    lines += [
        *([f"prompt: {p['prompt']}"] if p.get("prompt") else []),
        *([f"negative prompt: {p['negative_prompt']}"] if p.get("negative_prompt") else []),
        *(
            f"{m.role.value}: {m.name} v{m.version}"
            + (f" (weight {m.weight})" if m.weight is not None else "")
            for m in job.models
        ),
        ", ".join(
            f"{name} {p[name]}"
            for name in ("width", "height", "steps", "scheduler", "guidance_scale", "strength")
            if p.get(name) is not None
        )
        + f", seed {p.get('seed')}, {p.get('num_images', 1)} output(s)",
        f"queued {when(t.queued_at)}, started {when(t.started_at)}, "
        f"finished {when(t.finished_at)} (UTC)",
    ]
    if t.total_seconds is not None:
        lines.append(
            f"timings: model load {t.model_load_seconds or 0:.2f}s, inference "
            f"{t.inference_seconds or 0:.2f}s, upload {t.upload_seconds or 0:.2f}s, "
            f"total {t.total_seconds:.2f}s"
        )
    lines += [f"output {o.index}: {o.width}x{o.height}, seed {o.seed}" for o in job.outputs]
    if job.status is JobStatus.succeeded:
        lines.append(f"download with `imagefleet jobs download {job.id} -o out/`")
    typer.echo("\n".join(lines))


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str = JobIdArgument,
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Cancel a queued or running job (a running one stops at its next step)."""
    with talking_to(url), connect(url, key, data_dir) as client:
        job = client.cancel(job_id)
    typer.echo(f"job {job.id}: {job.status.value}")


@jobs_app.command("download")
def jobs_download(
    job_id: str = JobIdArgument,
    output: Path = typer.Option(Path("."), "-o", "--output", help="Folder to write PNGs to."),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Save a finished job's images as PNGs (they carry their generation parameters)."""
    with talking_to(url), connect(url, key, data_dir) as client:
        job = client.get(job_id)
        if job.status is not JobStatus.succeeded:
            hint = (
                f"; wait for it to succeed (`imagefleet jobs get {job.id}`)"
                if not job.status.is_final
                else error_line(job)
            )
            raise fail(f"job {job.id} is {job.status.value}, it has no images{hint}")
        save_outputs(client, job, output)


@jobs_app.command("attempts")
def jobs_attempts(
    job_id: str = JobIdArgument,
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Each try at a job: which worker and node, when, and how it ended."""
    with talking_to(url), connect(url, key, data_dir) as client:
        attempts = client.attempts(job_id)
    print_table(
        ("#", "outcome", "node", "worker", "started (UTC)", "ended (UTC)", "error"),
        (
            (
                str(a.number),
                a.outcome,
                a.node_id,
                a.worker_id,
                when(a.started_at),
                when(a.ended_at),
                f"{a.error.code}: {a.error.message}" if a.error else "",
            )
            for a in sorted(attempts, key=lambda a: a.number)
        ),
        empty=f"job {job_id} has not been tried yet",
    )


def _preview(prompt: str) -> str:
    flat = " ".join(prompt.split())
    if len(flat) <= PROMPT_PREVIEW_CHARS:
        return flat
    return flat[: PROMPT_PREVIEW_CHARS - 1] + "…"
