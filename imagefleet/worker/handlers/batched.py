"""The handler side of a micro-batch: several txt2img jobs' requests to the engine as one call.

Each job keeps what is its own: its params (prompt, seeds, image count, safety filter), the
worker's prompt rewriter applied to its prompt, and its outputs (PNGs carrying its own
parameters). The stage timings of the shared call are each job's: its images took that long.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from imagefleet.worker.engines.base import StepCallback, StopCheck, Txt2ImgRequest
from imagefleet.worker.engines.combo_job import ComboJob
from imagefleet.worker.engines.model_specs import spec_from_ref
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.handlers.base import JobContext, OutputFile
from imagefleet.worker.handlers.generation import (
    _STAGES,
    checkpoint,
    combo_options,
    parsed_params,
    png_outputs,
    request_fields,
)
from imagefleet.worker.plugins import rewriter, safety_filter

BATCHED_KINDS = frozenset({"txt2img"})


def can_batch(engine: Any, kind: str) -> bool:
    """Whether this worker runs jobs of `kind` as one call (else one by one)."""
    return kind in BATCHED_KINDS and callable(getattr(engine, "generate_batch", None))


def run_txt2img_batch(
    contexts: list[JobContext], on_step: StepCallback, should_stop: StopCheck
) -> list[list[OutputFile]]:
    """Each job's output files, in the order of `contexts`, from one engine call."""
    first = contexts[0]
    settings = first.cache.settings
    rewrite = rewriter(settings.prompt_rewriter)
    clock = StageClock()
    jobs = []
    for ctx in contexts:
        request = Txt2ImgRequest(**request_fields(parsed_params(ctx)))
        if rewrite is not None:
            negative = request.negative_prompt
            request = replace(
                request,
                prompt=rewrite.rewrite(request.prompt),
                negative_prompt=None if negative is None else rewrite.rewrite(negative),
            )
        jobs.append(
            ComboJob(
                task="txt2img",
                request=request,
                models=[spec_from_ref(ref) for ref in ctx.assignment.models],
                combo_key=ctx.assignment.combo_key,
                options=combo_options(ctx),
                clock=clock,
            )
        )
    try:
        images = first.engine.generate_batch(jobs, on_step, should_stop)
    finally:
        for ctx in contexts:
            for stage, name in _STAGES.items():
                ctx.seconds[name] = ctx.seconds.get(name, 0.0) + getattr(clock, f"{stage}_seconds")
    outputs = []
    for ctx, job, made in zip(contexts, jobs, images, strict=True):
        params = parsed_params(ctx)
        check = safety_filter(settings.safety_filter) if params.safety_filter else None
        outputs.append(png_outputs(made, params, checkpoint(ctx), check, job.request.prompt))
    return outputs
