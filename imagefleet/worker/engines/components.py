"""Per-job changes to a resident pipeline's parts: a swapped VAE, an attached ControlNet, the
task-specific pipeline class, a separately timed VAE decode, and clip skip.

All of them share the resident components rather than copying them (``from_pipe`` builds the
ControlNet, image-to-image or inpainting variant around the same UNet, text encoders and VAE),
and every change is undone after the job, so the resident pipeline is exactly as it was loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from PIL import Image

Task = Literal["txt2img", "img2img", "inpaint"]


@contextmanager
def vae_swapped(pipeline: Any, vae: Any | None) -> Iterator[None]:
    """Puts ``vae`` in the pipeline for the block (nothing when None), the original back after."""
    if vae is None:
        yield
        return
    original = pipeline.vae
    pipeline.vae = vae
    try:
        yield
    finally:
        pipeline.vae = original


def for_task(pipeline: Any, task: Task, controlnet: Any | None = None) -> Any:
    """The pipeline class for the task (with a ControlNet when given), sharing every component.

    A plain txt2img job gets the resident pipeline itself.
    """
    from diffusers.pipelines.auto_pipeline import (
        AutoPipelineForImage2Image,
        AutoPipelineForInpainting,
        AutoPipelineForText2Image,
    )

    if task == "txt2img" and controlnet is None:
        return pipeline
    auto: Any = {
        "txt2img": AutoPipelineForText2Image,
        "img2img": AutoPipelineForImage2Image,
        "inpaint": AutoPipelineForInpainting,
    }[task]
    extra = {"controlnet": controlnet} if controlnet is not None else {}
    derived = auto.from_pipe(pipeline, **extra)
    derived.set_progress_bar_config(disable=True)
    return derived


def keep_vae_float32(pipeline: Any) -> None:
    """Keeps the VAE in float32 for good: the fp16-safe choice for SDXL VAEs, which overflow in
    float16. decode_latents casts the latents to the VAE's dtype, so this is all it takes."""
    import torch

    pipeline.vae.to(dtype=torch.float32)


def decode_latents(pipeline: Any, latents: torch.Tensor) -> list[Image.Image]:
    """What a pipeline does after its denoising loop, done apart so it can be timed apart.

    Latents are unscaled (SDXL VAEs may also declare a mean and std), cast to the VAE's dtype
    (a float32 VAE under float16 latents stays float32), decoded, and turned into PIL images.
    """
    import torch

    vae = pipeline.vae
    config = vae.config
    latents = latents.to(device=vae.device, dtype=vae.dtype)
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        channels = latents.shape[1]
        mean_t = torch.tensor(mean).view(1, channels, 1, 1).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(1, channels, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents, return_dict=False)[0]
    images: list[Image.Image] = pipeline.image_processor.postprocess(image, output_type="pil")
    return images


@contextmanager
def clip_skip_compatible(pipeline: Any) -> Iterator[None]:
    """Lets SD 1.x pipelines apply clip skip with transformers 5's flattened CLIPTextModel.

    diffusers 0.42's SD pipeline reaches for ``text_encoder.text_model.final_layer_norm``;
    transformers 5 dropped the ``text_model`` level, so for the call only the encoder answers
    ``text_model`` itself. Only for the call: diffusers' LoRA loader reads the same attribute
    to decide how to name text-encoder adapter keys.
    """
    encoder = getattr(pipeline, "text_encoder", None)
    if encoder is None or hasattr(encoder, "text_model"):
        yield
        return
    object.__setattr__(encoder, "text_model", encoder)  # a plain attribute, not a submodule
    try:
        yield
    finally:
        del encoder.__dict__["text_model"]


def diffusers_clip_skip(a1111_clip_skip: int | None) -> int | None:
    """A1111's "clip skip" (1 = the last layer, 2 = the one before) as diffusers' ``clip_skip``
    (layers skipped: None or 0 = none). Community model cards use A1111's numbering."""
    if a1111_clip_skip is None or a1111_clip_skip <= 1:
        return None
    return a1111_clip_skip - 1
