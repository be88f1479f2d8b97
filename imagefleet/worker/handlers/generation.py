"""What the txt2img, img2img and inpaint handlers share: turning params into an engine request,
running it with the job's model combo, and PNGs that carry their parameters.

An engine that supports combos (the default `ManagedEngine`) gets the whole combo and loads it
through the model manager; a single-model engine (a plug-in, `DiffusersEngine`) is given the
checkpoint to load and refuses jobs with more models than that."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from imagefleet.kinds import get_kind
from imagefleet.kinds.generation import hires_size
from imagefleet.protocol import ModelRole
from imagefleet.worker.engines.base import GeneratedImage
from imagefleet.worker.engines.combo_job import ComboJob, ComboOptions, HiresPass
from imagefleet.worker.engines.model_specs import spec_from_ref
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.handlers.base import InvalidJobInput, JobContext, OutputFile
from imagefleet.worker.plugins import SafetyFilter, filtered, rewriter, safety_filter
from imagefleet.worker.png import encode_png
from imagefleet.worker_protocol import ModelRef

if TYPE_CHECKING:
    from imagefleet.worker.engines.components import Task


def engine_serves(engine: Any, kind: str) -> bool:
    """A combo engine lists its kinds; a single-model engine has a method per kind."""
    if getattr(engine, "supports_combos", False):
        return kind in getattr(engine, "kinds", ())
    return hasattr(engine, kind)


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


def png_outputs(
    images: list[GeneratedImage],
    params: Any,
    model: ModelRef,
    check: SafetyFilter | None = None,
    rewritten: str | None = None,
) -> list[OutputFile]:
    """PNGs carrying the job's parameters; with a safety filter, each says whether it was
    filtered (and an unsafe image is replaced, see worker/plugins.py)."""
    described = params.model_dump(mode="json")
    described["model"] = model.name
    if rewritten is not None and rewritten != params.prompt:
        described["rewritten_prompt"] = rewritten
    outputs = []
    for generated in images:
        image, meta = generated.image, described
        if check is not None:
            image, flagged = filtered(image, check)
            meta = {**described, "safety_filtered": flagged}
        outputs.append(
            OutputFile(
                encode_png(image, meta, generated.seed, model.sha256),
                seed=generated.seed,
                width=image.width,
                height=image.height,
            )
        )
    return outputs


DEFAULT_REFINER_SWITCH = 0.8  # diffusers' documented ensemble-of-experts hand-over

# The model manager's stage names -> the job context's (StageTimings' fields).
_STAGES = {
    "download": "download",
    "load": "model_load",
    "adapters": "adapter",
    "inference": "inference",
    "vae_decode": "decode",
}


def combo_options(ctx: JobContext) -> ComboOptions:
    """What the job adds to its request: the ControlNet's control image, the refiner's
    hand-over, clip skip and the hires pass."""
    names = {item.name for item in ctx.assignment.inputs}
    control = ctx.input_image("control_image") if "control_image" in names else None
    params = parsed_params(ctx)
    hires = None
    if getattr(params, "hires", None) is not None:
        width, height = hires_size(params.width, params.height, params.hires.scale)
        hires = HiresPass(width, height, params.hires.steps, params.hires.strength)
    refiner_steps = getattr(params, "refiner_steps", None)
    refiner_switch = getattr(params, "refiner_switch", None)
    if getattr(params, "refiner", None) is not None and refiner_steps is None:
        refiner_switch = DEFAULT_REFINER_SWITCH if refiner_switch is None else refiner_switch
    return ComboOptions(
        control_image=control,
        refiner_steps=refiner_steps,
        refiner_switch=refiner_switch,
        clip_skip=getattr(params, "clip_skip", None),
        hires=hires,
    )


def run_task(ctx: JobContext, task: Task, request: Any) -> list[OutputFile]:
    """Runs the request on the engine: the whole combo when it supports combos, else the
    checkpoint alone (loaded first) through the engine's method named after the task. The
    worker's prompt rewriter runs before, the safety filter after when the job asks for it."""
    settings = ctx.cache.settings
    params = parsed_params(ctx)
    check = safety_filter(settings.safety_filter) if params.safety_filter else None
    rewrite = rewriter(settings.prompt_rewriter)
    if rewrite is not None:
        negative = request.negative_prompt
        request = replace(
            request,
            prompt=rewrite.rewrite(request.prompt),
            negative_prompt=None if negative is None else rewrite.rewrite(negative),
        )
    if not getattr(ctx.engine, "supports_combos", False):
        model = load_checkpoint(ctx)
        with ctx.stage("inference"):
            images = getattr(ctx.engine, task)(request, ctx.on_step, ctx.should_stop)
        return png_outputs(images, params, model, check, request.prompt)
    model = checkpoint(ctx)
    clock = StageClock()
    job = ComboJob(
        task=task,
        request=request,
        models=[spec_from_ref(ref) for ref in ctx.assignment.models],
        combo_key=ctx.assignment.combo_key,
        options=combo_options(ctx),
        clock=clock,
    )
    try:
        images = ctx.engine.generate(job, ctx.on_step, ctx.should_stop)
    finally:
        for stage, name in _STAGES.items():
            ctx.seconds[name] = ctx.seconds.get(name, 0.0) + getattr(clock, f"{stage}_seconds")
    return png_outputs(images, params, model, check, request.prompt)
