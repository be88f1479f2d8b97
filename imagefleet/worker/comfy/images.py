"""IMAGE, MASK and LATENT conversions for the graph engine, in ComfyUI's layouts: images are
[batch, height, width, channels] floats in 0..1 on the CPU, masks [batch, height, width]."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from imagefleet.worker.comfy.values import VaeHandle

if TYPE_CHECKING:
    from PIL import Image

_TORCH_MODES = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area"}


def decode(vae: VaeHandle, latents: torch.Tensor) -> torch.Tensor:
    """Latents (scaled) to an IMAGE batch."""
    model = vae.vae
    with torch.inference_mode():
        pixels = model.decode(
            latents.to(model.device, model.dtype) / model.config.scaling_factor, return_dict=False
        )[0]
    return (pixels.float() / 2 + 0.5).clamp(0, 1).movedim(1, -1).cpu()


def encode(vae: VaeHandle, pixels: torch.Tensor, scale: int) -> torch.Tensor:
    """An IMAGE batch to scaled latents (the posterior's mode: deterministic), cropped to a
    multiple of the VAE's downscale first, as ComfyUI's VAEEncode does."""
    model = vae.vae
    height, width = pixels.shape[1] // scale * scale, pixels.shape[2] // scale * scale
    pixels = pixels[:, :height, :width, :3]
    batch = pixels.movedim(-1, 1).to(model.device, model.dtype) * 2 - 1
    with torch.inference_mode():
        latents = model.encode(batch).latent_dist.mode()
    return latents * model.config.scaling_factor


def load(image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """LoadImage: the RGB image and a mask of its transparent area (1 where alpha is 0), as
    ComfyUI gives it; an opaque image's mask is all zeros."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]
    if "A" in image.getbands():
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)[None]
    else:
        mask = torch.zeros(rgb.shape[:3])
    return rgb, mask


def load_mask(image: Image.Image, channel: str) -> torch.Tensor:
    """LoadImageMask: one channel as the mask (alpha inverted, as in ComfyUI)."""
    band = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}[channel]
    if band == "A" and "A" not in image.getbands():
        return torch.zeros((1, image.height, image.width))
    converted = image.convert("RGBA")
    values = torch.from_numpy(np.asarray(converted.getchannel(band), dtype=np.float32) / 255.0)
    return (1.0 - values if band == "A" else values)[None]


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    from PIL import Image

    arrays = (batch.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return [Image.fromarray(array[..., :3]) for array in arrays]


def scale_image(
    image: torch.Tensor, method: str, width: int, height: int, crop: str
) -> torch.Tensor:
    """ImageScale: to width x height (a 0 keeps the aspect ratio), cropped to the aspect
    ratio first with crop="center"."""
    width, height = _target(image.shape[2], image.shape[1], width, height)
    planar = (
        _center_crop(image.movedim(-1, 1), width, height)
        if crop == "center"
        else image.movedim(-1, 1)
    )
    if method in ("lanczos", "bicubic"):
        from PIL import Image as PILImage

        resample = (
            PILImage.Resampling.LANCZOS if method == "lanczos" else PILImage.Resampling.BICUBIC
        )
        resized = [
            torch.from_numpy(
                np.asarray(pil.resize((width, height), resample), dtype=np.float32) / 255.0
            )
            for pil in to_pil(planar.movedim(1, -1))
        ]
        return torch.stack(resized)
    return F.interpolate(planar, size=(height, width), mode=_TORCH_MODES[method]).movedim(1, -1)


def scale_latent(
    latents: torch.Tensor, method: str, width: int, height: int, crop: str
) -> torch.Tensor:
    """LatentUpscale on the latent grid (bislerp and bicubic run as bilinear and bicubic)."""
    width, height = _target(latents.shape[-1], latents.shape[-2], width, height)
    if crop == "center":
        latents = _center_crop(latents, width, height)
    mode = {"bislerp": "bilinear", "lanczos": "bicubic"}.get(method, method)
    return F.interpolate(latents, size=(height, width), mode=mode)


def _target(old_width: int, old_height: int, width: int, height: int) -> tuple[int, int]:
    if width == 0 and height == 0:
        return old_width, old_height
    if width == 0:
        width = max(1, round(old_width * height / old_height))
    if height == 0:
        height = max(1, round(old_height * width / old_width))
    return width, height


def _center_crop(planar: torch.Tensor, width: int, height: int) -> torch.Tensor:
    old_height, old_width = planar.shape[-2:]
    old_aspect, new_aspect = old_width / old_height, width / height
    if old_aspect > new_aspect:
        keep = round(old_height * new_aspect)
        left = (old_width - keep) // 2
        return planar[..., :, left : left + keep]
    keep = round(old_width / new_aspect)
    top = (old_height - keep) // 2
    return planar[..., top : top + keep, :]
