"""What the txt2img, img2img and inpaint handlers share: fetching and loading the checkpoint,
turning params into an engine request, and PNGs that carry their parameters."""

from __future__ import annotations

from typing import Any

from imagefleet.kinds import get_kind
from imagefleet.protocol import ModelRef, ModelRole
from imagefleet.worker.engines.base import GeneratedImage
from imagefleet.worker.handlers.base import InvalidJobInput, JobContext, OutputFile
from imagefleet.worker.png import encode_png


def checkpoint(ctx: JobContext) -> ModelRef:
    ref = next((m for m in ctx.assignment.models if m.role is ModelRole.checkpoint), None)
    if ref is None:
        raise InvalidJobInput("the job names no checkpoint")
    unsupported = sorted({m.role.value for m in ctx.assignment.models} - {"checkpoint"})
    if unsupported and not getattr(ctx.engine, "supports_combos", False):
        raise RuntimeError(
            f"this worker's engine cannot apply {', '.join(unsupported)} models; "
            "run a worker whose engine supports model combos"
        )
    return ref


def load_checkpoint(ctx: JobContext) -> ModelRef:
    """Makes the job's checkpoint resident on the engine; returns it."""
    ref = checkpoint(ctx)
    path, config = ctx.model_files(ref)
    with ctx.stage("model_load"):
        ctx.engine.load(ref.sha256, path, config)
    return ref


def parsed_params(ctx: JobContext) -> Any:
    return get_kind(ctx.assignment.kind).parse(ctx.assignment.params)


def request_fields(params: Any) -> dict[str, Any]:
    """The engine request's common fields from a generation kind's params."""
    if params.seed is None:
        raise InvalidJobInput("the orchestrator sent a job without a seed")
    return {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "width": params.width,
        "height": params.height,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "seed": params.seed,
        "num_images": params.num_images,
        "scheduler": params.scheduler,
    }


def png_outputs(images: list[GeneratedImage], params: Any, model: ModelRef) -> list[OutputFile]:
    described = params.model_dump(mode="json")
    described["model"] = model.name
    return [
        OutputFile(
            encode_png(generated.image, described, generated.seed, model.sha256),
            seed=generated.seed,
            width=generated.image.width,
            height=generated.image.height,
        )
        for generated in images
    ]


def run_generation(ctx: JobContext, method: str, request: Any, model: ModelRef) -> list[OutputFile]:
    params = parsed_params(ctx)
    with ctx.stage("inference"):
        images = getattr(ctx.engine, method)(request, ctx.on_step, ctx.should_stop)
    return png_outputs(images, params, model)
