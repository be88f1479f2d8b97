"""The values that flow along a graph's links on the worker, one class per ComfyUI type.

MODEL, CLIP and VAE are handles on the job's prepared pipeline (the combo the model manager
made resident, LoRAs and VAE applied); CONDITIONING carries text embeddings and the ControlNets
attached to them; LATENT holds latents already multiplied by the VAE's scaling factor (the
convention of diffusers' schedulers), with an optional noise mask; IMAGE is ComfyUI's
[batch, height, width, channels] float tensor in 0..1 and MASK its [batch, height, width].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelHandle:
    """The denoiser: the prepared pipeline's UNet and the checkpoint's scheduler config."""

    pipeline: Any
    is_sdxl: bool

    @property
    def unet(self) -> Any:
        return self.pipeline.unet

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self.pipeline.scheduler.config)


@dataclass(frozen=True)
class ClipHandle:
    """The text encoder(s); `layer` is ComfyUI's stop_at_clip_layer (-1: the last)."""

    pipeline: Any
    is_sdxl: bool
    layer: int = -1


@dataclass(frozen=True)
class VaeHandle:
    vae: Any
    image_processor: Any


@dataclass(frozen=True)
class Control:
    """A ControlNet attached to a conditioning: its hint image, weight and active span."""

    controlnet: Any
    image: torch.Tensor  # IMAGE layout
    strength: float
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class Conditioning:
    embeds: torch.Tensor  # [1, tokens, features]
    pooled: torch.Tensor | None = None  # SDXL's pooled text embedding
    controls: tuple[Control, ...] = field(default=())

    def with_control(self, control: Control) -> Conditioning:
        return replace(self, controls=(*self.controls, control))


@dataclass(frozen=True)
class Latent:
    samples: torch.Tensor  # [batch, channels, h, w], scaled by the VAE's scaling factor
    noise_mask: torch.Tensor | None = None  # [batch, 1, H, W] in 0..1: 1 = denoise here
