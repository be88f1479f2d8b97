"""The tiny demo model: deterministic, savable, and exportable as a community-style checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from safetensors import safe_open

from imagefleet.demo_model import (
    VAE_SCALE_FACTOR,
    build_demo_pipeline,
    export_single_file,
)

COMPONENTS = ("unet", "vae", "text_encoder")


# The tiny models run on one torch thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="session")
def single_file(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_single_file(demo_dir, tmp_path_factory.mktemp("single") / "demo.safetensors")


def _pixels(pipeline: StableDiffusionPipeline, seed: int) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    result = pipeline(
        "a photo of the cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
    )
    return np.asarray(result.images[0])


def _assert_same_weights(left: torch.nn.Module, right: torch.nn.Module) -> None:
    left_state, right_state = left.state_dict(), right.state_dict()
    assert left_state.keys() == right_state.keys()
    different = [key for key in left_state if not torch.equal(left_state[key], right_state[key])]
    assert different == []


def test_importing_the_module_loads_no_torch() -> None:
    code = "import sys, imagefleet.demo_model; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


def test_same_seed_builds_same_weights_and_another_seed_does_not() -> None:
    first, again, other = build_demo_pipeline(0), build_demo_pipeline(0), build_demo_pipeline(1)
    for name in COMPONENTS:
        _assert_same_weights(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.unet.conv_in.weight, other.unet.conv_in.weight)


def test_vae_downscales_by_eight_like_every_real_checkpoint() -> None:
    pipeline = build_demo_pipeline()
    assert pipeline.vae_scale_factor == VAE_SCALE_FACTOR == 8
    with torch.no_grad():
        latents = pipeline.vae.encode(torch.zeros(1, 3, 64, 128)).latent_dist.mode()
    assert latents.shape == (1, 4, 8, 16)


@pytest.mark.parametrize("prompt", ["a photo of the cat", "", "Ünïcødé, 日本語 & emoji 🙂\n\ttabs"])
def test_tokenizer_takes_any_text(prompt: str) -> None:
    pipeline = build_demo_pipeline()
    tokenizer = pipeline.tokenizer
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == 77
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.eos_token_id in ids
    assert max(ids) < pipeline.text_encoder.config.vocab_size


def test_tokenizer_merges_common_words() -> None:
    tokenizer = build_demo_pipeline().tokenizer
    assert tokenizer.tokenize("the cat") == ["the</w>", "cat</w>"]


def test_saved_model_is_a_safetensors_diffusers_directory(demo_dir: Path) -> None:
    index = json.loads((demo_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert list(demo_dir.rglob("*.bin")) == []
    assert {p.parent.name for p in demo_dir.rglob("*.safetensors")} == set(COMPONENTS)


def test_single_file_uses_original_key_names(single_file: Path) -> None:
    with safe_open(str(single_file), framework="pt") as handle:
        keys = set(handle.keys())
        attention_q = handle.get_slice("first_stage_model.decoder.mid.attn_1.q.weight").get_shape()
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.")
    assert all(key.startswith(prefixes) for key in keys)
    assert {
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "model.diffusion_model.input_blocks.4.0.op.weight",
        "model.diffusion_model.input_blocks.5.1.proj_in.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.1.2.conv.weight",
        "model.diffusion_model.output_blocks.3.1.conv.weight",
        "model.diffusion_model.output_blocks.5.0.skip_connection.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.2.downsample.conv.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.decoder.norm_out.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    } <= keys
    assert not any(key.startswith("first_stage_model.encoder.down.3.downsample") for key in keys)
    assert attention_q == [16, 16, 1, 1]


def test_single_file_loads_back_to_the_same_weights(demo_dir: Path, single_file: Path) -> None:
    original = StableDiffusionPipeline.from_pretrained(str(demo_dir))
    loaded = StableDiffusionPipeline.from_single_file(
        str(single_file), config=str(demo_dir), local_files_only=True
    )
    for name in COMPONENTS:
        _assert_same_weights(getattr(original, name), getattr(loaded, name))
    assert np.array_equal(_pixels(original, seed=5), _pixels(loaded, seed=5))
