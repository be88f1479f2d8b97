"""What every engine speaks, without importing torch: the request, the result, cancellation.

Kept apart from the diffusers engine so that the worker loop and plug-in engines (see
registry.py) can use these types without paying for torch, diffusers and transformers imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

StepCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class Txt2ImgRequest:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    num_images: int
    scheduler: str


@dataclass(frozen=True)
class Img2ImgRequest(Txt2ImgRequest):
    """txt2img's fields (width and height: the output size) plus the image to start from."""

    init_image: Image.Image
    strength: float


@dataclass(frozen=True)
class InpaintRequest(Img2ImgRequest):
    """White in `mask` is repainted; the rest is pasted back from the init image, softened by
    `mask_blur` pixels at the edge."""

    mask: Image.Image
    mask_blur: int


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int


class GenerationCancelled(Exception):
    """Raised when should_stop() turned true between denoising steps."""


def step_reporter(
    on_step: StepCallback, should_stop: StopCheck, image_index: int, image_count: int
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """Adapts the worker's callbacks to diffusers' callback_on_step_end protocol.

    Steps are counted across the whole request so progress never goes backwards between
    images. Raising from inside the callback stops at once; the pipeline's own interrupt
    flag would still run the VAE decode for an image nobody wants. An `on_step` with an
    `on_latents(done, total, latents)` method (worker/preview.py) also gets the latents.
    """
    on_latents = getattr(on_step, "on_latents", None)

    def report(
        pipeline: Any, step_index: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        per_image = pipeline.num_timesteps
        done = image_index * per_image + step_index + 1
        on_step(done, per_image * image_count)
        if on_latents is not None and "latents" in tensors:
            on_latents(done, per_image * image_count, tensors["latents"])
        if should_stop():
            raise GenerationCancelled(f"cancelled after step {done}")
        return tensors

    return report
