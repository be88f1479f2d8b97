"""The full-size model builders behind `bench/gpu.py --size full` keep the published SD 1.5 /
SDXL / SDXL refiner architectures. No GPU runs them here, so the shapes are checked on the meta
device (no memory, no weights initialised): parameter counts against the published models'."""

from __future__ import annotations

import pytest
import torch

from imagefleet.tiny_models.full_size import (
    FULL_SIZE_CONFIGS,
    build_components,
    build_full_size_pipeline,
    parameter_counts,
)

CLIP_L = 123_060_480  # openai/clip-vit-large-patch14's text model
OPEN_CLIP_BIG_G = 694_659_840  # laion CLIP-ViT-bigG-14's text model with projection
VAE = 83_653_863  # the SD 1.5 and SDXL VAE

PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": VAE, "text_encoder": CLIP_L},
    "sdxl": {
        "unet": 2_567_463_684,
        "vae": VAE,
        "text_encoder": CLIP_L,
        "text_encoder_2": OPEN_CLIP_BIG_G,
    },
    # The refiner's UNet as its published config (384/768/1536/1536, depth 4, 64-wide heads)
    # builds it: about 2.26 B parameters.
    "sdxl_refiner": {"unet": 2_259_526_660, "vae": VAE, "text_encoder_2": OPEN_CLIP_BIG_G},
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_full_size_components_have_the_published_parameter_counts(arch: str) -> None:
    with torch.device("meta"):
        components = build_components(arch)
    assert parameter_counts(components) == PUBLISHED[arch]


def test_the_published_dimensions_that_decide_cost() -> None:
    sd15, sdxl, refiner = (FULL_SIZE_CONFIGS[a] for a in ("sd15", "sdxl", "sdxl_refiner"))
    assert sd15["unet"]["block_out_channels"] == (320, 640, 1280, 1280)
    assert sd15["unet"]["cross_attention_dim"] == 768
    assert sdxl["unet"]["transformer_layers_per_block"] == (1, 2, 10)
    assert sdxl["unet"]["cross_attention_dim"] == 768 + 1280
    assert refiner["unet"]["cross_attention_dim"] == 1280
    assert sdxl["vae"]["scaling_factor"] == refiner["vae"]["scaling_factor"] == 0.13025
    # Every VAE downscales by 8: 1024x1024 is a 128x128 latent, as in production.
    assert all(len(FULL_SIZE_CONFIGS[a]["vae"]["block_out_channels"]) == 4 for a in PUBLISHED)


@pytest.mark.parametrize(
    ("arch", "pipeline_class"),
    [
        ("sd15", "StableDiffusionPipeline"),
        ("sdxl", "StableDiffusionXLPipeline"),
        ("sdxl_refiner", "StableDiffusionXLImg2ImgPipeline"),
    ],
)
def test_the_pipelines_assemble_on_the_meta_device(arch: str, pipeline_class: str) -> None:
    pipeline = build_full_size_pipeline(arch, device="meta", dtype=torch.float16)
    assert type(pipeline).__name__ == pipeline_class
    assert pipeline.unet.dtype == torch.float16
    assert pipeline.vae_scale_factor == 8
