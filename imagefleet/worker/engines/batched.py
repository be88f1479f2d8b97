"""Micro-batches on the combo engine: several jobs' images in one denoising call.

The jobs share everything a batch key (kinds/batching.py) says they share: models, size,
steps, guidance, sampler, clip skip. What stays per job is per image here: each image's
prompt embeddings are stacked along the batch dimension and each image gets its own
``torch.Generator`` seeded ``seed + i`` of its job, so its initial latents and any sampler
noise are exactly those it would get alone (diffusers draws each batch row from its own
generator). Pixels then equal a lone run's up to float rounding of the batched matmuls.

Prompts whose embeddings differ in length (a prompt past 77 tokens is encoded in chunks)
cannot be stacked; such images are grouped by shape and each group is one call, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from imagefleet.worker.engines.base import (
    GeneratedImage,
    GenerationCancelled,
    StepCallback,
    StopCheck,
    step_reporter,
)
from imagefleet.worker.engines.combo_job import ComboJob, ComboOptions
from imagefleet.worker.engines.generation import generate
from imagefleet.worker.engines.prompts import prompt_embeddings

if TYPE_CHECKING:
    from imagefleet.worker.engines.model_manager import PreparedCombo


def check_batchable(jobs: Sequence[ComboJob]) -> None:
    """ValueError unless the jobs can share one call (the worker then runs them one by one)."""
    if not jobs:
        raise ValueError("an empty batch")
    first = jobs[0]
    plain = ComboOptions(clip_skip=first.options.clip_skip)
    shared = ("width", "height", "steps", "guidance_scale", "scheduler")
    for job in jobs:
        if job.task != "txt2img" or job.options != plain:
            raise ValueError("only plain txt2img jobs (no ControlNet, refiner or hires) batch")
        if list(job.models) != list(first.models) or job.combo_key != first.combo_key:
            raise ValueError("the jobs of a batch must use the same models")
        if any(getattr(job.request, f) != getattr(first.request, f) for f in shared):
            raise ValueError("the jobs of a batch must share size, steps, guidance and sampler")


def generate_batched(
    ready: PreparedCombo,
    jobs: Sequence[ComboJob],
    device: torch.device,
    on_step: StepCallback,
    should_stop: StopCheck,
) -> list[list[GeneratedImage]]:
    """Every job's images (a list per job, in order) from as few calls as shapes allow."""
    pipeline, first = ready.pipeline, jobs[0]
    if ready.refiner is not None or getattr(pipeline, "controlnet", None) is not None:
        raise ValueError("a batch runs on a plain pipeline (no refiner, no ControlNet)")
    rows: list[tuple[int, int, dict[str, torch.Tensor]]] = []  # (job index, seed, embeddings)
    for position, job in enumerate(jobs):
        request = job.request
        embeddings = prompt_embeddings(
            pipeline,
            _converted(pipeline, request.prompt),
            _negative(pipeline, request),
            job.options.clip_skip,
        )
        rows.extend((position, request.seed + i, embeddings) for i in range(request.num_images))
    groups: dict[tuple[Any, ...], list[tuple[int, int, dict[str, torch.Tensor]]]] = {}
    for row in rows:
        groups.setdefault(_shapes(row[2]), []).append(row)
    results: list[list[GeneratedImage]] = [[] for _ in jobs]
    request = first.request
    for index, group in enumerate(groups.values()):
        if should_stop():
            raise GenerationCancelled(f"cancelled before batch call {index}")
        stacked = {key: torch.cat([row[2][key] for row in group]) for key in group[0][2]}
        call = {
            **stacked,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "generator": [torch.Generator(device=device).manual_seed(row[1]) for row in group],
            "callback_on_step_end": step_reporter(on_step, should_stop, index, len(groups)),
            "width": request.width,
            "height": request.height,
        }
        images = generate(pipeline, call, first.clock)
        for (position, seed, _), image in zip(group, images, strict=True):
            results[position].append(GeneratedImage(image=image, seed=seed))
    return results


def _shapes(embeddings: dict[str, torch.Tensor]) -> tuple[Any, ...]:
    return tuple((key, tuple(value.shape)) for key, value in sorted(embeddings.items()))


def _converted(pipeline: Any, prompt: str) -> str:
    """Multi-vector embeddings' trigger words expanded, as the lone path does."""
    convert = getattr(pipeline, "maybe_convert_prompt", None)
    return prompt if convert is None else str(convert(prompt, pipeline.tokenizer))


def _negative(pipeline: Any, request: Any) -> str | None:
    negative = request.negative_prompt
    return None if negative is None else _converted(pipeline, negative)
