"""The built-in node types on the worker: each a `NodeType` pairing the spec the orchestrator
validated (imagefleet/comfy/nodes.py) with `execute(run, **inputs)`, the interface plug-ins
implement too (imagefleet/comfy/registry.py).

Loaders do not load: the job's combo (the graph's checkpoint, LoRAs at their strength_model,
VAE and ControlNet) is made resident and applied by the model manager before the graph runs,
so a loader hands out its part of the prepared pipeline. That is also why a graph runs with
one checkpoint, and a VAELoader's VAE or a LoRA applies to the whole graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from imagefleet.comfy.nodes import BUILTIN_SPECS, NodeSpec
from imagefleet.worker.comfy import images
from imagefleet.worker.comfy.run import GraphRun
from imagefleet.worker.comfy.sampling import SamplerCall, sample
from imagefleet.worker.comfy.text import encode
from imagefleet.worker.comfy.values import ClipHandle, Conditioning, Control, Latent, VaeHandle


@dataclass(frozen=True)
class NodeType:
    spec: NodeSpec
    execute: Callable[..., tuple[Any, ...]]


def checkpoint_loader(run: GraphRun, ckpt_name: str) -> tuple[Any, ...]:
    run.require_model("checkpoint", ckpt_name)
    return run.model(), run.clip(), run.vae()


def lora_loader(
    run: GraphRun, model: Any, clip: ClipHandle, lora_name: str, **_: Any
) -> tuple[Any, ...]:
    run.require_model("lora", lora_name)
    return model, clip


def vae_loader(run: GraphRun, vae_name: str) -> tuple[Any, ...]:
    run.require_model("vae", vae_name)
    return (run.vae(),)


def controlnet_loader(run: GraphRun, control_net_name: str) -> tuple[Any, ...]:
    run.require_model("controlnet", control_net_name)
    return (run.controlnet(),)


def clip_text_encode(run: GraphRun, text: str, clip: ClipHandle) -> tuple[Any, ...]:
    return (encode(clip, text),)


def clip_set_last_layer(
    run: GraphRun, clip: ClipHandle, stop_at_clip_layer: int
) -> tuple[Any, ...]:
    return (ClipHandle(clip.pipeline, clip.is_sdxl, stop_at_clip_layer),)


def empty_latent(run: GraphRun, width: int, height: int, batch_size: int = 1) -> tuple[Any, ...]:
    model = run.model()
    channels = model.unet.config.in_channels
    scale = run.vae_scale()
    shape = (batch_size, channels, height // scale, width // scale)
    return (Latent(torch.zeros(shape, device=model.unet.device, dtype=model.unet.dtype)),)


def ksampler(
    run: GraphRun,
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    denoise: float = 1.0,
) -> tuple[Any, ...]:
    call = SamplerCall(seed, steps, cfg, sampler_name, scheduler, denoise=denoise)
    return (sample(model, positive, negative, latent_image, call, run.step),)


def ksampler_advanced(
    run: GraphRun,
    model: Any,
    add_noise: str,
    noise_seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    start_at_step: int = 0,
    end_at_step: int = 10000,
    return_with_leftover_noise: str = "disable",
) -> tuple[Any, ...]:
    call = SamplerCall(
        noise_seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        start=start_at_step,
        end=end_at_step,
        add_noise=add_noise == "enable",
        force_full_denoise=return_with_leftover_noise != "enable",
    )
    return (sample(model, positive, negative, latent_image, call, run.step),)


def vae_decode(run: GraphRun, samples: Latent, vae: VaeHandle) -> tuple[Any, ...]:
    return (images.decode(vae, samples.samples),)


def vae_encode(run: GraphRun, pixels: torch.Tensor, vae: VaeHandle) -> tuple[Any, ...]:
    return (Latent(images.encode(vae, pixels, run.vae_scale())),)


def controlnet_apply(
    run: GraphRun,
    conditioning: Conditioning,
    control_net: Any,
    image: torch.Tensor,
    strength: float,
) -> tuple[Any, ...]:
    if strength == 0:
        return (conditioning,)
    return (conditioning.with_control(Control(control_net, image, strength)),)


def controlnet_apply_advanced(
    run: GraphRun,
    positive: Conditioning,
    negative: Conditioning,
    control_net: Any,
    image: torch.Tensor,
    strength: float,
    start_percent: float = 0.0,
    end_percent: float = 1.0,
    vae: Any = None,
) -> tuple[Any, ...]:
    if strength == 0:
        return positive, negative
    control = Control(control_net, image, strength, start_percent, end_percent)
    return positive.with_control(control), negative.with_control(control)


def load_image(run: GraphRun, image: str) -> tuple[Any, ...]:
    return images.load(run.input_image(image))


def load_image_mask(run: GraphRun, image: str, channel: str) -> tuple[Any, ...]:
    return (images.load_mask(run.input_image(image), channel),)


def set_latent_noise_mask(run: GraphRun, samples: Latent, mask: torch.Tensor) -> tuple[Any, ...]:
    shaped = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    return (Latent(samples.samples, noise_mask=shaped),)


def image_scale(
    run: GraphRun, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
) -> tuple[Any, ...]:
    return (images.scale_image(image, upscale_method, width, height, crop),)


def latent_upscale(
    run: GraphRun, samples: Latent, upscale_method: str, width: int, height: int, crop: str
) -> tuple[Any, ...]:
    scale = run.vae_scale()
    scaled = images.scale_latent(
        samples.samples, upscale_method, width // scale, height // scale, crop
    )
    return (Latent(scaled),)


def save_image(
    run: GraphRun, images: torch.Tensor, filename_prefix: str = "ComfyUI"
) -> tuple[Any, ...]:
    run.save(images, filename_prefix, "output")
    return ()


def preview_image(run: GraphRun, images: torch.Tensor) -> tuple[Any, ...]:
    run.save(images, "ComfyUI_temp", "temp")
    return ()


_IMPLEMENTATIONS: dict[str, Callable[..., tuple[Any, ...]]] = {
    "CheckpointLoaderSimple": checkpoint_loader,
    "CLIPTextEncode": clip_text_encode,
    "CLIPSetLastLayer": clip_set_last_layer,
    "EmptyLatentImage": empty_latent,
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "VAELoader": vae_loader,
    "LoraLoader": lora_loader,
    "ControlNetLoader": controlnet_loader,
    "ControlNetApply": controlnet_apply,
    "ControlNetApplyAdvanced": controlnet_apply_advanced,
    "LoadImage": load_image,
    "LoadImageMask": load_image_mask,
    "SetLatentNoiseMask": set_latent_noise_mask,
    "ImageScale": image_scale,
    "LatentUpscale": latent_upscale,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
}

NODES: tuple[NodeType, ...] = tuple(
    NodeType(spec, _IMPLEMENTATIONS[spec.name]) for spec in BUILTIN_SPECS
)
