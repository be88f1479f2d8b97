"""`imagefleet submit`: queue a txt2img job, optionally wait with a progress bar and save PNGs."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from imagefleet.cli.common import CLIENT_KEY_FILE, DEFAULT_URL, fail
from imagefleet.client import ApiError, ImageFleetClient
from imagefleet.protocol import SCHEDULER_NAMES, JobView


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)


def _default_key() -> str | None:
    if key := os.environ.get("IMAGEFLEET_KEY"):
        return key
    stored = Path(os.environ.get("IMAGEFLEET_DATA_DIR", ".imagefleet")) / CLIENT_KEY_FILE
    return stored.read_text().strip() if stored.exists() else None


def submit(
    prompt: str = typer.Argument(..., help="What to draw."),
    model: str = typer.Option("demo", "--model", help="A registered model name."),
    negative_prompt: str | None = typer.Option(None, "--negative", help="What to avoid."),
    width: int = typer.Option(512, "--width", help="Pixels, a multiple of 8."),
    height: int = typer.Option(512, "--height", help="Pixels, a multiple of 8."),
    steps: int = typer.Option(30, "--steps", help="Denoising steps (1..150)."),
    guidance: float = typer.Option(7.0, "--guidance", help="Classifier-free guidance scale."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed; random when absent."),
    num_images: int = typer.Option(1, "--num-images", help="Images per job (1..8)."),
    scheduler: str = typer.Option(
        "dpmpp_2m", "--scheduler", help=f"One of: {', '.join(SCHEDULER_NAMES)}."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result with a progress bar."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder to write PNGs to (implies --wait)."
    ),
    url: str = typer.Option(
        DEFAULT_URL, "--url", envvar="IMAGEFLEET_URL", help="Orchestrator URL."
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        help="Client API key. Default: $IMAGEFLEET_KEY, else the key `imagefleet up` stored.",
    ),
) -> None:
    """Submit a txt2img job."""
    key = key or _default_key()
    if not key:
        raise fail("no API key: pass --key, set IMAGEFLEET_KEY, or run `imagefleet up` here first")
    params = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "model": model,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "num_images": num_images,
        "scheduler": scheduler,
    }
    with ImageFleetClient(url, key) as client:
        try:
            job = client.submit_txt2img({k: v for k, v in params.items() if v is not None})
            typer.echo(f"job {job.id} queued (seed {job.params.get('seed')})")
            if not (wait or output):
                return
            job = _wait_with_progress(client, job)
            if job.status.value != "succeeded":
                error = f": {job.error.code}: {job.error.message}" if job.error else ""
                raise fail(f"job {job.id} {job.status.value}{error}")
            _report(job)
            if output:
                output.mkdir(parents=True, exist_ok=True)
                for out in job.outputs:
                    path = output / f"{job.id}-{out.index}.png"
                    path.write_bytes(client.download(job.id, out.index))
                    typer.echo(f"wrote {path} ({out.width}x{out.height}, seed {out.seed})")
        except ApiError as exc:
            raise fail(_explain(exc)) from exc
        except OSError as exc:
            raise fail(f"cannot reach the orchestrator at {url}: {exc}") from exc


def _wait_with_progress(client: ImageFleetClient, job: JobView) -> JobView:
    with Progress(
        TextColumn("[bold]{task.fields[status]:<9}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("job", total=job.params.get("steps", 1), status=job.status.value)

        def update(seen: JobView) -> None:
            total = seen.progress.total_steps or seen.params.get("steps", 1)
            bar.update(task, completed=seen.progress.step, total=total, status=seen.status.value)

        return client.wait(job.id, on_update=update)


def _report(job: JobView) -> None:
    t = job.timings
    parts = [
        f"queued {t.queue_seconds or 0:.2f}s",
        f"model load {t.model_load_seconds or 0:.2f}s",
        f"inference {t.inference_seconds or 0:.2f}s",
        f"upload {t.upload_seconds or 0:.2f}s",
        f"total {t.total_seconds or 0:.2f}s",
    ]
    typer.echo("timings: " + ", ".join(parts))


def _explain(exc: ApiError) -> str:
    if isinstance(exc.detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in exc.detail
        )
    return f"HTTP {exc.status}: {exc.detail}"
