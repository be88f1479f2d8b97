"""Tiny random ControlNets for a given pipeline, as a diffusers folder or one original file.

A ControlNet is a trainable copy of the UNet's encoder plus a small network that turns the
control image into latent-sized features. That network must downscale by exactly the VAE's
factor, so the builder reads it off the pipeline's VAE config: the tiny models work whatever
their VAE depth. A fresh ControlNet is a no-op (its output convolutions start at zero); the
builder gives them random weights so that a control image visibly changes the result.

The single-file form is the original ControlNet layout (``control_model.input_blocks...``,
``input_hint_block``, ``zero_convs``, ``middle_block_out``). That layout fixes the hint network
at three downsamplings (indices 0..14), so it exists only for VAEs that downscale by 8, as every
real Stable Diffusion VAE does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefleet.worker.engines.single_file import unet_to_ldm

if TYPE_CHECKING:
    from diffusers.models.controlnets.controlnet import ControlNetModel
    from torch import Tensor

LDM_PREFIX = "control_model."
OUTPUT_STRENGTH = 0.05


def vae_downscale(pipeline: Any) -> int:
    """How many image pixels one latent pixel covers, per side."""
    return int(2 ** (len(pipeline.vae.config.block_out_channels) - 1))


def build_controlnet(pipeline: Any, seed: int, *, downscale: int | None = None) -> ControlNetModel:
    """A ControlNet for the pipeline's UNet whose hint network downscales like its VAE.

    ``downscale`` overrides the factor (a power of two), e.g. to build the single-file form
    for a base whose VAE is shallower.
    """
    import torch
    from diffusers.models.controlnets.controlnet import ControlNetModel

    factor = downscale or vae_downscale(pipeline)
    levels = factor.bit_length() - 1
    if factor != 2**levels or levels < 1:
        raise ValueError(f"the hint network can only downscale by a power of two, not {factor}")
    channels = tuple(16 * 2 ** min(i, 1) for i in range(levels + 1))
    controlnet = ControlNetModel.from_unet(
        pipeline.unet, conditioning_embedding_out_channels=channels
    )
    generator = torch.Generator().manual_seed(seed)
    zero_initialised = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in zero_initialised:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * OUTPUT_STRENGTH)
    return controlnet


def save_controlnet_folder(controlnet: ControlNetModel, dest: Path) -> Path:
    controlnet.save_pretrained(str(dest), safe_serialization=True)
    return dest


def write_controlnet_single_file(controlnet: ControlNetModel, dest: Path) -> Path:
    """The original layout, readable by ``ControlNetModel.from_single_file``."""
    from safetensors.torch import save_file

    state = controlnet.state_dict()
    hint_blocks = len(controlnet.controlnet_cond_embedding.blocks)
    if hint_blocks != 6:
        raise ValueError(
            f"the original ControlNet layout needs a hint network that downscales by 8 "
            f"(6 blocks); this one has {hint_blocks}: build it with downscale=8"
        )
    converted: dict[str, Tensor] = {}
    encoder = {}
    for key, tensor in state.items():
        ldm = _controlnet_key(key, hint_blocks)
        if ldm is None:
            encoder[key] = tensor
        else:
            converted[ldm] = tensor
    converted.update(unet_to_ldm(encoder))
    tensors = {LDM_PREFIX + k: v.detach().contiguous() for k, v in converted.items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest


def _controlnet_key(key: str, hint_blocks: int) -> str | None:
    """The LDM name of a ControlNet-only weight, or None for the UNet-encoder copy."""
    module, _, leaf = key.rpartition(".")
    parts = module.split(".")
    match parts:
        case ["controlnet_cond_embedding", "conv_in"]:
            return f"input_hint_block.0.{leaf}"
        case ["controlnet_cond_embedding", "blocks", index]:
            return f"input_hint_block.{2 * (int(index) + 1)}.{leaf}"
        case ["controlnet_cond_embedding", "conv_out"]:
            return f"input_hint_block.{2 * (hint_blocks + 1)}.{leaf}"
        case ["controlnet_down_blocks", index]:
            return f"zero_convs.{index}.0.{leaf}"
        case ["controlnet_mid_block"]:
            return f"middle_block_out.0.{leaf}"
    return None
