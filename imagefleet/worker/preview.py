"""Cheap previews of a generation in progress: the latents mapped to RGB by a fixed linear
approximation (as many UIs do), no VAE pass, shrunk to at most `MAX_SIDE` pixels and encoded
as a small JPEG (1-3 KB) for `PUT /v1/worker/attempts/{id}/preview`.

The 4x3 factors are the widely used approximation for Stable Diffusion 1.x/2.x latents; other
latent spaces (SDXL's differs a little) still give a recognisable layout, which is all a
preview is for. Latents with other than 4 channels get a grey view of their mean.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)
MAX_SIDE = 64
QUALITY = 70
SD_FACTORS = np.array(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    dtype=np.float32,
)


def latents_to_jpeg(latents: Any, max_side: int = MAX_SIDE) -> bytes:
    """The first image of a (batch, channels, h, w) latent tensor (torch or numpy) as JPEG."""
    array = latents.detach().float().cpu().numpy() if hasattr(latents, "detach") else latents
    first = np.asarray(array, dtype=np.float32)[0]
    if first.shape[0] == SD_FACTORS.shape[0]:
        rgb = np.einsum("chw,cr->hwr", first, SD_FACTORS)
    else:
        rgb = np.repeat(first.mean(axis=0)[..., None], 3, axis=2)
    pixels = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


class PreviewingSteps:
    """The step callback a job's engine gets when previews are on: forwards every step to the
    heartbeat as before, and every `every` steps (not the last: the image follows) sends a
    preview of the latents, synchronously (a few ms on the denoising thread), once."""

    def __init__(
        self,
        on_step: Callable[[int, int], None],
        send: Callable[[int, int, bytes], None],
        every: int,
    ) -> None:
        self._on_step = on_step
        self._send = send
        self.every = max(1, every)

    def __call__(self, step: int, total: int) -> None:
        self._on_step(step, total)

    def on_latents(self, done: int, total: int, latents: Any) -> None:
        if done % self.every or done >= total:
            return
        try:
            self._send(done, total, latents_to_jpeg(latents))
        except Exception as exc:  # a preview is never worth failing a job for
            log.debug("preview at step %d not sent: %s", done, exc)
