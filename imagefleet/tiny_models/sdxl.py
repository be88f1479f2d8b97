"""Tiny SDXL-shaped pipelines with random weights: a base and a refiner.

SDXL differs from SD 1.5 in ways the worker must handle for real, so the tests need the real
shapes, not SD 1.5 in disguise: two text encoders (a CLIPTextModel and a
CLIPTextModelWithProjection whose pooled output feeds the UNet), a UNet with
``addition_embed_type="text_time"`` that is conditioned on image size and crop, and a refiner
that has only the second text encoder and is conditioned on an aesthetic score instead of the
target size. The sizes are shrunk so that a 64x64 image takes a fraction of a second on a CPU.

The VAE downscales by 8 like every real SDXL VAE, so latents (and costs) scale as in
production. Base and refiner share their VAE and second text encoder weights for a seed, as the
real refiner shares SDXL's latent space.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefleet.demo_model import MAX_PROMPT_TOKENS, TEXT_VOCAB_SIZE, _build_tokenizer

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
    )
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

# Each text encoder is 32 wide; the base's UNet attends to both side by side (64).
TEXT_WIDTH = 32
TIME_EMBED_DIM = 8
# The UNet's added conditioning: the pooled text embedding plus one sinusoidal embedding per
# time id. The base has six ids (original size, crop corner, target size), the refiner five
# (original size, crop corner, aesthetic score).
BASE_TIME_IDS = 6
REFINER_TIME_IDS = 5


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """The base: SDXL's text-to-image pipeline, deterministic for a seed."""
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )

    tokenizer = _build_tokenizer()
    components: dict[str, Any] = {
        "vae": build_sdxl_vae(seed),
        "text_encoder": _text_encoder(seed, tokenizer, projection=False),
        "text_encoder_2": _text_encoder(seed + 1, tokenizer, projection=True),
        "tokenizer": tokenizer,
        "tokenizer_2": _build_tokenizer(),
        "unet": _unet(seed, cross_attention_dim=2 * TEXT_WIDTH, time_ids=BASE_TIME_IDS),
        "scheduler": _scheduler(),
        "image_encoder": None,
        "feature_extractor": None,
        "add_watermarker": False,
    }
    return StableDiffusionXLPipeline(**components)


def build_tiny_sdxl_refiner(seed: int = 0) -> StableDiffusionXLImg2ImgPipeline:
    """The refiner: SDXL's image-to-image pipeline with one text encoder and aesthetic score.

    Its VAE and text encoder equal the base's for the same seed (the real refiner reuses
    SDXL's VAE and OpenCLIP encoder), so base latents can be handed to it directly.
    """
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
    )

    tokenizer = _build_tokenizer()
    components: dict[str, Any] = {
        "vae": build_sdxl_vae(seed),
        "text_encoder": None,
        "text_encoder_2": _text_encoder(seed + 1, tokenizer, projection=True),
        "tokenizer": None,
        "tokenizer_2": tokenizer,
        "unet": _unet(seed + 2, cross_attention_dim=TEXT_WIDTH, time_ids=REFINER_TIME_IDS),
        "scheduler": _scheduler(),
        "image_encoder": None,
        "feature_extractor": None,
        "requires_aesthetics_score": True,
        "force_zeros_for_empty_prompt": False,
        "add_watermarker": False,
    }
    return StableDiffusionXLImg2ImgPipeline(**components)


def save_tiny_sdxl(dest: Path, seed: int = 0) -> Path:
    """Writes the base in diffusers layout (safetensors) into dest and returns dest."""
    build_tiny_sdxl_pipeline(seed).save_pretrained(str(dest), safe_serialization=True)
    return dest


def save_tiny_sdxl_refiner(dest: Path, seed: int = 0) -> Path:
    """Writes the refiner in diffusers layout (safetensors) into dest and returns dest."""
    build_tiny_sdxl_refiner(seed).save_pretrained(str(dest), safe_serialization=True)
    return dest


def build_sdxl_vae(seed: int) -> AutoencoderKL:
    """A four-level VAE (downscale 8) with SDXL's scaling factor and fp16 upcast flag."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=128,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def _unet(seed: int, *, cross_attention_dim: int, time_ids: int) -> UNet2DConditionModel:
    """SDXL's UNet layout (text_time added conditioning, linear projections) at two levels."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=time_ids * TIME_EMBED_DIM + TEXT_WIDTH,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=32,
    )


def _text_encoder(
    seed: int, tokenizer: CLIPTokenizer, *, projection: bool
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A two-layer CLIP encoder; with projection, the pooled output SDXL's UNet consumes."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=TEXT_VOCAB_SIZE,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        projection_dim=TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if projection:
        return CLIPTextModelWithProjection(config)
    return CLIPTextModel(config)


def _scheduler() -> EulerDiscreteScheduler:
    """Euler with SDXL's shipped noise schedule (the same betas as SD 1.5, leading spacing)."""
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
