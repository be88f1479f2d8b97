"""`imagefleet submit`: queue a txt2img, img2img or inpaint job, optionally wait with a progress
bar and save the PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from imagefleet.api_views import JobView
from imagefleet.cli.common import UrlOption, fail
from imagefleet.cli.connection import KeyOption, connect, talking_to
from imagefleet.cli.datadir import DataDirOption
from imagefleet.cli.jobs import error_line, save_outputs
from imagefleet.client import ImageFleetClient, JobEvent, JobEventType
from imagefleet.protocol import SCHEDULER_NAMES, JobStatus
from imagefleet.samplers import SAMPLER_NAMES, Sampler

DEFAULT_WAIT_SECONDS = 600.0


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)


def submit(
    prompt: str = typer.Argument(
        ..., help="What to draw; A1111 weights like (word:1.3) and long prompts work."
    ),
    model: str = typer.Option("demo", "--model", help="A registered model name."),
    negative_prompt: str | None = typer.Option(None, "--negative", help="What to avoid."),
    width: int = typer.Option(512, "--width", help="Pixels, a multiple of 8."),
    height: int = typer.Option(512, "--height", help="Pixels, a multiple of 8."),
    steps: int = typer.Option(30, "--steps", help="Denoising steps (1..150)."),
    guidance: float = typer.Option(7.0, "--guidance", help="Classifier-free guidance scale."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed; random when absent or -1."),
    num_images: int = typer.Option(1, "--num-images", help="Images per job (1..8)."),
    scheduler: str = typer.Option(
        Sampler.dpmpp_2m.value,
        "--scheduler",
        help=f"One of: {', '.join(SCHEDULER_NAMES)}; A1111 names work too "
        f"(e.g. {SAMPLER_NAMES[Sampler.dpmpp_2m_karras].label!r}).",
    ),
    init_image: Path | None = typer.Option(
        None,
        "--init-image",
        exists=True,
        dir_okay=False,
        help="Start from this PNG/JPEG/WebP (an img2img job; with --mask, inpaint).",
    ),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        exists=True,
        dir_okay=False,
        help="With --init-image: repaint where this grey-scale mask is white.",
    ),
    strength: float | None = typer.Option(
        None,
        "--strength",
        help="With --init-image: how much to change it (0 < s <= 1; img2img 0.75, inpaint 1).",
    ),
    lora: list[str] = typer.Option(
        [], "--lora", help="A LoRA as NAME or NAME:WEIGHT (default 1.0); repeat for several."
    ),
    vae: str | None = typer.Option(None, "--vae", help="A registered VAE replacing the model's."),
    embedding: list[str] = typer.Option(
        [], "--embedding", help="A textual-inversion embedding; write its trigger in the prompt."
    ),
    controlnet: str | None = typer.Option(
        None, "--controlnet", help="A ControlNet as NAME or NAME:WEIGHT; needs --control-image."
    ),
    control_image: Path | None = typer.Option(
        None,
        "--control-image",
        exists=True,
        dir_okay=False,
        help="With --controlnet: the condition image (e.g. an edge map).",
    ),
    same_node_retry: bool = typer.Option(
        False,
        "--same-node-retry",
        help="If the job fails on every live node, retry it on one where it already failed "
        "(a one-machine fleet, like `imagefleet up`, has only one node).",
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result with a progress bar."),
    timeout: float = typer.Option(
        DEFAULT_WAIT_SECONDS,
        "--timeout",
        min=0.0,
        help="With --wait: seconds to wait before leaving the job to finish on its own.",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder to write PNGs to (implies --wait)."
    ),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Submit a txt2img job (img2img with --init-image, inpaint with --init-image and --mask),
    with LoRAs, a VAE, embeddings and a ControlNet if asked."""
    if (mask or strength is not None) and init_image is None:
        raise fail("--mask and --strength need --init-image")
    image_to_image = init_image is not None
    params: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "model": model,
        # An img2img job defaults to its init image's size.
        "width": None if image_to_image and width == 512 else width,
        "height": None if image_to_image and height == 512 else height,
        "steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "num_images": num_images,
        "scheduler": scheduler,
    }
    if (controlnet is None) != (control_image is None):
        raise fail("--controlnet and --control-image go together")
    params["loras"] = [_weighted(item, "--lora") for item in lora] or None
    params["vae"] = vae
    params["embeddings"] = list(embedding) or None
    with talking_to(url), connect(url, key, data_dir) as client:
        if controlnet is not None and control_image is not None:
            params["controlnet"] = {
                **_weighted(controlnet, "--controlnet"),
                "image": client.upload_input(*_image_file(control_image)).id,
            }
        kind = "txt2img"
        if init_image is not None:
            kind = "inpaint" if mask else "img2img"
            params["init_image"] = client.upload_input(*_image_file(init_image)).id
            params["mask"] = client.upload_input(*_image_file(mask)).id if mask else None
            params["strength"] = strength
        options: dict[str, Any] = {"allow_same_node_retry": True} if same_node_retry else {}
        job = client.submit(kind, {k: v for k, v in params.items() if v is not None}, **options)
        typer.echo(f"job {job.id} queued (seed {job.params.get('seed')})")
        if not (wait or output):
            typer.echo(f"follow it with `imagefleet jobs get {job.id}`")
            return
        try:
            job = _wait_with_progress(client, job, timeout)
        except KeyboardInterrupt:
            raise fail(
                f"stopped waiting; job {job.id} goes on: `imagefleet jobs get {job.id}`", 130
            ) from None
        if job.status is not JobStatus.succeeded:
            raise fail(f"job {job.id} {job.status.value}{error_line(job)}")
        _report(job)
        if output:
            save_outputs(client, job, output)


def _wait_with_progress(client: ImageFleetClient, job: JobView, timeout: float) -> JobView:
    """Shows status and steps live from the job's event stream until it is final; a failed
    attempt (the job waits for a retry) is printed above the bar when it happens."""
    with Progress(
        TextColumn("[bold]{task.fields[status]:<9}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("job", total=job.params.get("steps", 1), status=job.status.value)

        def update(event: JobEvent) -> None:
            data = event.data
            if event.event is JobEventType.progress:
                bar.update(task, completed=data["step"], total=data["total_steps"])
                return
            bar.update(task, status=event.event.value)
            if event.job is not None:
                done = event.job.progress
                bar.update(task, completed=done.step, total=done.total_steps or done.step or 1)
            error = data.get("last_error")
            if event.event is JobEventType.queued and error:
                line = (
                    f"attempt {data.get('attempts')} failed: {error['code']}: "
                    f"{error['message']}; waiting for a retry"
                )
                bar.console.print(line, markup=False, highlight=False)

        return client.wait_streaming(job.id, timeout=timeout, on_event=update)


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


IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def _weighted(value: str, option: str) -> dict[str, object]:
    """NAME or NAME:WEIGHT (a name may hold @VERSION) as a model reference with its weight."""
    name, colon, weight = value.rpartition(":")
    if not colon:
        return {"name": value}
    try:
        return {"name": name, "weight": float(weight)}
    except ValueError:
        raise fail(f"{option} {value!r}: expected NAME or NAME:WEIGHT") from None


def _image_file(path: Path) -> tuple[bytes, str]:
    content_type = IMAGE_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise fail(f"{path} is not a .png, .jpg or .webp file")
    return path.read_bytes(), content_type
