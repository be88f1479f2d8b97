"""Opening models from the disk cache onto the device: checkpoints, refiners, VAEs, ControlNets.

Every model arrives either as a diffusers folder or as one original-layout .safetensors file.
Only safetensors are read (``use_safetensors=True``; the cache converted any allowed pickle).
Single files carry weights only: a checkpoint's configs come from its ``config_source`` (a
diffusers folder), while a standalone VAE or ControlNet file takes its architecture from the
resident checkpoint it is used with, which it must match anyway, so neither needs a config or a
network connection.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.controlnets.controlnet import ControlNetModel


def open_checkpoint(
    path: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    config_dir: Path | None = None,
    refiner: bool = False,
) -> Any:
    """A text-to-image pipeline (image-to-image for a refiner) on the device, quiet.

    The safety checker is never loaded: it costs VRAM, and moderation is a post-processing
    plug-in's job, not the pipeline's.
    """
    from diffusers.pipelines.auto_pipeline import (
        AutoPipelineForImage2Image,
        AutoPipelineForText2Image,
    )

    _quiet()
    if path.is_dir():
        auto = AutoPipelineForImage2Image if refiner else AutoPipelineForText2Image
        extra = _safety_checker_off(path)
        pipeline = auto.from_pretrained(str(path), dtype=dtype, use_safetensors=True, **extra)
    elif path.is_file() and path.suffix == ".safetensors":
        pipeline = _open_single_file(path, dtype=dtype, config_dir=config_dir, refiner=refiner)
    else:
        raise ValueError(f"cannot load {path}: expected a diffusers folder or a .safetensors file")
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(device)
    return pipeline


def open_vae(
    path: Path, *, like: AutoencoderKL, device: torch.device, dtype: torch.dtype
) -> AutoencoderKL:
    """A standalone VAE; a single file takes the architecture of ``like`` (the base's VAE)."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    if path.is_dir():
        vae = AutoencoderKL.from_pretrained(str(path), dtype=dtype, use_safetensors=True)
    else:
        with tempfile.TemporaryDirectory(prefix="imagefleet-vae-config-") as config_dir:
            like.save_config(config_dir)
            vae = AutoencoderKL.from_single_file(
                str(path), config=config_dir, dtype=dtype, local_files_only=True
            )
    _check_same_shape(vae, like, path)
    return vae.to(device)


def open_controlnet(
    path: Path, *, unet: Any, device: torch.device, dtype: torch.dtype
) -> ControlNetModel:
    """A ControlNet; a single file gets its config from ``unet`` and its own hint network."""
    from diffusers.models.controlnets.controlnet import ControlNetModel

    if path.is_dir():
        controlnet = ControlNetModel.from_pretrained(str(path), dtype=dtype, use_safetensors=True)
    else:
        channels = _hint_channels(path)
        template = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=channels, load_weights_from_unet=False
        )
        with tempfile.TemporaryDirectory(prefix="imagefleet-controlnet-config-") as config_dir:
            template.save_config(config_dir)
            del template
            controlnet = ControlNetModel.from_single_file(
                str(path), config=config_dir, dtype=dtype, local_files_only=True
            )
    return controlnet.to(device)


def _quiet() -> None:
    """No progress bars from the loaders: a worker's output is its log."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _open_single_file(
    path: Path, *, dtype: torch.dtype, config_dir: Path | None, refiner: bool
) -> Any:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
    )

    from imagefleet.worker.engines.single_file import checkpoint_family

    kwargs: dict[str, Any] = {"dtype": dtype}
    if config_dir is not None:
        kwargs.update(config=str(config_dir), local_files_only=True)
    if refiner:
        return StableDiffusionXLImg2ImgPipeline.from_single_file(str(path), **kwargs)
    if checkpoint_family(path) == "sdxl":
        return StableDiffusionXLPipeline.from_single_file(str(path), **kwargs)
    return StableDiffusionPipeline.from_single_file(
        str(path), safety_checker=None, requires_safety_checker=False, **kwargs
    )


def _hint_channels(path: Path) -> tuple[int, ...]:
    """The hint network's widths, read off the shapes in an original-layout ControlNet file.

    The network alternates a same-width and a widening (strided) convolution after its input
    convolution, so the widths are the input's and every second block's output.
    """
    from safetensors import safe_open

    prefix = "control_model.input_hint_block."
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if not any(key.startswith(prefix) for key in keys):
            prefix = "input_hint_block."
        indices = sorted(
            int(key[len(prefix) :].split(".")[0])
            for key in keys
            if key.startswith(prefix) and key.endswith(".weight")
        )
        if not indices:
            raise ValueError(f"{path.name} holds no ControlNet hint network: not a ControlNet")
        widths = [handle.get_slice(f"{prefix}{i}.weight").get_shape()[0] for i in indices]
    # indices 0, 2, ..., last: input conv, the blocks, then the output conv.
    blocks = widths[1:-1]
    return (widths[0], *blocks[1::2])


def _check_same_shape(vae: Any, like: Any, path: Path) -> None:
    for name in ("latent_channels", "block_out_channels"):
        if tuple(_as_tuple(vae.config[name])) != tuple(_as_tuple(like.config[name])):
            raise ValueError(
                f"VAE {path.name} has {name} {vae.config[name]}, the checkpoint's VAE has "
                f"{like.config[name]}: it was made for another base model"
            )


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _safety_checker_off(model_dir: Path) -> dict[str, Any]:
    """Loader arguments that skip a safety checker the folder declares, without reading it."""
    import json

    index = model_dir / "model_index.json"
    try:
        declared = json.loads(index.read_text())
    except (OSError, ValueError):
        return {}
    if "safety_checker" not in declared:
        return {}
    return {"safety_checker": None, "requires_safety_checker": False}
