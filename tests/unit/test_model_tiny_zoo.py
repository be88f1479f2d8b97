"""The tiny model zoo has the real architectures and file layouts, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from imagefleet.demo_model import build_demo_pipeline
from imagefleet.tiny_models.controlnet import (
    build_controlnet,
    vae_downscale,
    write_controlnet_single_file,
)
from imagefleet.tiny_models.lora import lora_factors
from imagefleet.tiny_models.sdxl import build_tiny_sdxl_pipeline, build_tiny_sdxl_refiner
from tests.tiny_zoo import tiny_zoo


def keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def test_the_sdxl_base_and_refiner_have_sdxls_conditioning() -> None:
    base, refiner = build_tiny_sdxl_pipeline(0), build_tiny_sdxl_refiner(0)
    assert base.unet.config.addition_embed_type == "text_time"
    assert type(base.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert refiner.text_encoder is None and refiner.config["requires_aesthetics_score"]
    assert vae_downscale(base) == 8
    same_encoder = zip(
        base.text_encoder_2.state_dict().values(),
        refiner.text_encoder_2.state_dict().values(),
        strict=True,
    )
    assert all(torch.equal(a, b) for a, b in same_encoder)


def test_builders_are_deterministic_for_a_seed() -> None:
    first, second = build_tiny_sdxl_pipeline(3), build_tiny_sdxl_pipeline(3)
    pairs = zip(first.unet.state_dict().values(), second.unet.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    sd = build_demo_pipeline(0)
    again = lora_factors(sd, seed=5)
    assert all(
        torch.equal(a.up, b.up) for a, b in zip(lora_factors(sd, seed=5), again, strict=True)
    )
    assert not torch.equal(lora_factors(sd, seed=6)[0].up, again[0].up)


def test_lora_files_use_the_two_community_layouts() -> None:
    zoo = tiny_zoo()
    peft = keys(zoo.sd15_lora_peft)
    assert any(k.startswith("unet.") and k.endswith(".lora_A.weight") for k in peft)
    assert any(k.startswith("text_encoder.text_model.encoder.") for k in peft)
    kohya = keys(zoo.sd15_lora_kohya)
    assert any(k.startswith("lora_unet_down_blocks_") and k.endswith(".alpha") for k in kohya)
    assert any(k.startswith("lora_te_text_model_encoder_") for k in kohya)
    xl = keys(zoo.sdxl_lora_kohya)
    assert any(k.startswith("lora_unet_input_blocks_") for k in xl)  # sgm block names
    assert any(k.startswith("lora_te2_") for k in xl)
    assert any(k.startswith("text_encoder_2.") for k in keys(zoo.sdxl_lora_peft))


def test_embedding_files_use_the_three_layouts() -> None:
    zoo = tiny_zoo()
    assert keys(zoo.sd15_embedding_a1111) == ["emb_params"]
    assert keys(zoo.sd15_embedding_diffusers) == ["<tiny-style>"]
    assert sorted(keys(zoo.sdxl_embedding)) == ["clip_g", "clip_l"]


def test_adapters_fit_the_demo_models_vae_depth() -> None:
    zoo = tiny_zoo()
    sd = build_demo_pipeline(0)
    config = json.loads((zoo.sd15_controlnet / "config.json").read_text())
    levels = len(config["conditioning_embedding_out_channels"]) - 1
    assert 2**levels == vae_downscale(sd)
    vae = json.loads((zoo.sd15_vae / "config.json").read_text())
    assert vae["block_out_channels"] == list(sd.vae.config.block_out_channels)
    assert all(
        not k.startswith(("encoder.down_blocks", "first_stage_model"))
        for k in keys(zoo.sd15_vae_single)
    )
    assert (zoo.sd15_controlnet_single is None) == (vae_downscale(sd) != 8)


def test_the_original_controlnet_layout_needs_an_8x_hint_network(tmp_path: Path) -> None:
    sd = build_demo_pipeline(0)
    with pytest.raises(ValueError, match="downscales by 8"):
        write_controlnet_single_file(
            build_controlnet(sd, 1, downscale=2), tmp_path / "c.safetensors"
        )
    path = write_controlnet_single_file(
        build_controlnet(sd, 1, downscale=8), tmp_path / "c.safetensors"
    )
    names = keys(path)
    assert "control_model.input_hint_block.14.weight" in names
    assert "control_model.zero_convs.0.0.weight" in names
    assert "control_model.middle_block_out.0.weight" in names
