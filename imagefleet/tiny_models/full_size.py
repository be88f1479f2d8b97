"""SD 1.5- and SDXL-architecture pipelines at their published sizes, with random weights.

GPU benchmarks (``bench/gpu.py --size full``) need the real arithmetic of a 512x512 SD 1.5 or a
1024x1024 SDXL image, but nothing can be downloaded on a benchmark machine, and random weights
cost exactly what trained ones do. So the components are built from configs that repeat the
published ones (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0 and
-refiner-1.0: channel widths, block layouts, attention heads, transformer depths, text encoder
widths and depths, the VAE). Only the tokenizer is the tiny one (``imagefleet.demo_model``):
token ids never reach past its 1,000-entry vocabulary, and the text encoders keep CLIP's full
49,408-row embedding table, so parameter counts and compute match the published models.

``FULL_SIZE_CONFIGS`` is data, checked against the published parameter counts by a unit test
on the meta device (no memory, no time), so this path cannot rot while no GPU runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefleet.demo_model import _build_scheduler, _build_tokenizer
from imagefleet.tiny_models.sdxl import _scheduler as _sdxl_scheduler

if TYPE_CHECKING:
    import torch
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

CLIP_VOCAB_SIZE = 49408
ARCHITECTURES = ("sd15", "sdxl", "sdxl_refiner")

# CLIP ViT-L/14's text tower: SD 1.5's only text encoder and SDXL's first.
_CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# OpenCLIP ViT-bigG/14's text tower with its projection: SDXL's second encoder, the refiner's
# only one (its pooled output conditions the UNet).
_CLIP_BIG_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
_SDXL_UNET_COMMON = {
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "sample_size": 128,
}

FULL_SIZE_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {
        "unet": {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        },
        "vae": {**_VAE, "sample_size": 512},
        "text_encoder": _CLIP_L,
    },
    "sdxl": {
        "unet": {
            **_SDXL_UNET_COMMON,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "attention_head_dim": (5, 10, 20),
            "transformer_layers_per_block": (1, 2, 10),
            "cross_attention_dim": 2048,  # both encoders side by side: 768 + 1280
            "projection_class_embeddings_input_dim": 2816,  # 6 time ids x 256 + pooled 1280
        },
        "vae": {**_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "text_encoder": _CLIP_L,
        "text_encoder_2": _CLIP_BIG_G,
    },
    "sdxl_refiner": {
        "unet": {
            **_SDXL_UNET_COMMON,
            "block_out_channels": (384, 768, 1536, 1536),
            "down_block_types": (
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            "up_block_types": (
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "UpBlock2D",
            ),
            "attention_head_dim": (6, 12, 24, 24),
            "transformer_layers_per_block": 4,
            "cross_attention_dim": 1280,
            "projection_class_embeddings_input_dim": 2560,  # 5 time ids x 256 + pooled 1280
        },
        "vae": {**_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "text_encoder_2": _CLIP_BIG_G,
    },
}


def build_components(arch: str, seed: int = 0) -> dict[str, Any]:
    """The pipeline's models for ``arch`` (one of ARCHITECTURES), random weights for seed, on
    torch's current default device (``with torch.device("meta"):`` builds them for free)."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = FULL_SIZE_CONFIGS[arch]
    tokenizer = _build_tokenizer()
    components: dict[str, Any] = {}
    torch.manual_seed(seed)
    components["unet"] = UNet2DConditionModel(**configs["unet"])
    torch.manual_seed(seed + 1)
    components["vae"] = AutoencoderKL(**configs["vae"])
    for offset, name in enumerate(("text_encoder", "text_encoder_2"), start=2):
        if name not in configs:
            continue
        config = CLIPTextConfig(
            **configs[name],
            vocab_size=CLIP_VOCAB_SIZE,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed + offset)
        model_class = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
        components[name] = model_class(config)
    return components


def parameter_counts(components: dict[str, Any]) -> dict[str, int]:
    """Parameters per component (works on the meta device)."""
    return {name: sum(p.numel() for p in model.parameters()) for name, model in components.items()}


def build_full_size_pipeline(
    arch: str, seed: int = 0, *, dtype: torch.dtype | None = None, device: str = "cpu"
) -> DiffusionPipeline:
    """The whole pipeline, built on ``device`` (CUDA initialises billions of weights far
    faster than a CPU) and cast to ``dtype`` (fp16 for a GPU benchmark)."""
    import torch
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
    )

    with torch.device(device):
        models = build_components(arch, seed)
    if dtype is not None:
        for model in models.values():
            model.to(dtype=dtype)
    # Untyped on purpose, as in the tiny builders: diffusers annotates the scheduler as an
    # enum and the optional components as required, though it accepts exactly these values.
    parts: dict[str, Any] = dict(models)
    if arch == "sd15":
        parts.update(
            tokenizer=_build_tokenizer(),
            scheduler=_build_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        return StableDiffusionPipeline(**parts)
    parts.update(scheduler=_sdxl_scheduler(), add_watermarker=False, tokenizer_2=_build_tokenizer())
    if arch == "sdxl":
        return StableDiffusionXLPipeline(**parts, tokenizer=_build_tokenizer())
    parts.update(
        text_encoder=None,
        tokenizer=None,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    return StableDiffusionXLImg2ImgPipeline(**parts)


def save_full_size(arch: str, dest: Path, seed: int = 0, **build: Any) -> Path:
    """Writes the pipeline in diffusers layout (safetensors) into dest and returns dest."""
    build_full_size_pipeline(arch, seed, **build).save_pretrained(
        str(dest), safe_serialization=True
    )
    return dest
