"""Tiny random standalone VAEs that fit a given pipeline, as a diffusers folder or one file.

Community VAEs (e.g. the "ft-mse" SD 1.5 VAE, an fp16-fixed SDXL VAE) replace a checkpoint's own
VAE. A replacement must have the same architecture, so the builder copies the pipeline's VAE
config (whatever its depth) and draws new weights. The single-file form uses the original
("LDM") key names without a prefix, as standalone VAE files do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefleet.worker.engines.single_file import vae_to_ldm

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL


def build_vae_like(pipeline: Any, seed: int) -> AutoencoderKL:
    """A VAE with the pipeline's VAE config and fresh random weights for seed."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    torch.manual_seed(seed)
    vae: AutoencoderKL = AutoencoderKL.from_config(pipeline.vae.config)
    return vae


def save_vae_folder(vae: AutoencoderKL, dest: Path) -> Path:
    """diffusers layout: config.json + diffusion_pytorch_model.safetensors."""
    vae.save_pretrained(str(dest), safe_serialization=True)
    return dest


def write_vae_single_file(vae: AutoencoderKL, dest: Path) -> Path:
    """One .safetensors file with LDM key names (``encoder.down.0.block.0...``)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in vae_to_ldm(vae.state_dict()).items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest
