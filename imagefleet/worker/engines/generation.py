"""Running a prepared pipeline with the denoising loop and the VAE decode timed apart, and the
SDXL base + refiner hand-over.

The refiner takes the base's latents in one of two ways:

- **switch** (diffusers' "ensemble of experts"): the base denoises the first ``switch`` share of
  the schedule (``denoising_end``), the refiner the rest (``denoising_start``) with the same step
  count, e.g. 40 steps with switch 0.8;
- **steps** (as in the published consumer-GPU benchmark: base 20 steps, refiner 15): the base
  runs its whole schedule, the refiner then refines its latents as image-to-image: ``steps``
  denoising steps over the last ``strength`` share of the schedule.

Either way the latents are decoded once, by the last pipeline's VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagefleet.worker.engines.components import clip_skip_compatible, decode_latents
from imagefleet.worker.engines.timings import StageClock

if TYPE_CHECKING:
    from PIL import Image

# Arguments the refiner shares with the base call; the others (size, ControlNet...) are the base's.
_SHARED = ("prompt", "negative_prompt", "guidance_scale", "generator", "num_images_per_prompt")


@dataclass(frozen=True)
class RefinerPass:
    pipeline: Any  # an SDXL image-to-image pipeline
    switch: float | None = None  # share of the schedule the base runs, in (0, 1)
    steps: int | None = None  # or: refiner steps after a complete base run
    strength: float = 0.3  # with steps: how much of the image the refiner re-noises
    aesthetic_score: float = 6.0
    negative_aesthetic_score: float = 2.5
    # Extra refiner call arguments, e.g. its own prompt embeddings (it has only the second
    # text encoder, so the base's embeddings do not fit it); they override the shared ones.
    arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.switch is None) == (self.steps is None):
            raise ValueError("a refiner pass takes a switch point or refiner steps, not both")
        if self.switch is not None and not 0.0 < self.switch < 1.0:
            raise ValueError(f"refiner switch {self.switch} must be between 0 and 1")


def generate(
    pipeline: Any,
    call: dict[str, Any],
    clock: StageClock,
    *,
    refiner: RefinerPass | None = None,
) -> list[Image.Image]:
    """Runs ``pipeline(**call)`` (and the refiner), returning PIL images; stages timed."""
    base_call = dict(call, output_type="latent")
    if refiner is not None and refiner.switch is not None:
        base_call["denoising_end"] = refiner.switch
    with clock.stage("inference"), clip_skip_compatible(pipeline):
        latents = pipeline(**base_call).images
    last = pipeline
    if refiner is not None:
        refine_call = {key: call[key] for key in _SHARED if key in call}
        refine_call.update(
            image=latents,
            output_type="latent",
            aesthetic_score=refiner.aesthetic_score,
            negative_aesthetic_score=refiner.negative_aesthetic_score,
        )
        if refiner.switch is not None:
            refine_call.update(
                num_inference_steps=call.get("num_inference_steps", 50),
                denoising_start=refiner.switch,
            )
        else:
            # img2img runs strength x num_inference_steps steps: ask for enough to run `steps`.
            assert refiner.steps is not None
            scheduled = max(refiner.steps, round(refiner.steps / refiner.strength))
            refine_call.update(num_inference_steps=scheduled, strength=refiner.strength)
        if "callback_on_step_end" in call:
            refine_call["callback_on_step_end"] = call["callback_on_step_end"]
        refine_call.update(refiner.arguments)
        with clock.stage("inference"):
            latents = refiner.pipeline(**refine_call).images
        last = refiner.pipeline
    with clock.stage("vae_decode"):
        return decode_latents(last, latents)
