"""VAE swaps, embeddings, ControlNets, SDXL with its refiner and clip skip take effect for their
job only; the resident pool keeps what it can within its budget and never unloads what a job
uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imagefleet.tiny_models.embedding import DEFAULT_TOKEN
from imagefleet.worker.engines.components import decode_latents, diffusers_clip_skip
from imagefleet.worker.engines.model_manager import ModelManager
from imagefleet.worker.engines.model_specs import ModelSpec
from imagefleet.worker.engines.pipeline_pool import ResidentPool, resident_bytes
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings
from tests.tiny_zoo import difference, render, spec, tiny_zoo

TRIGGER_PROMPT = f"a photo of {DEFAULT_TOKEN} cat"


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    return ModelManager(ModelCache(tmp_path_factory.mktemp("cache")), device="cpu")


def sd15() -> list[ModelSpec]:
    return [spec(tiny_zoo().sd15, "checkpoint")]


def sdxl() -> list[ModelSpec]:
    return [spec(tiny_zoo().sdxl, "checkpoint")]


def test_a_vae_swap_takes_effect_for_its_job_only(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sd15())
    folder = render(manager, [*sd15(), spec(zoo.sd15_vae, "vae")])
    single = render(manager, [*sd15(), spec(zoo.sd15_vae_single, "vae")])
    assert difference(folder, before) > 1.0
    assert np.allclose(folder, single, atol=1.0)  # the same VAE in both layouts
    assert np.array_equal(render(manager, sd15()), before)


def test_an_embedding_and_its_trigger_take_effect_and_are_unloaded(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sd15(), prompt=TRIGGER_PROMPT)
    a1111 = render(
        manager,
        [*sd15(), spec(zoo.sd15_embedding_a1111, "embedding", triggers=(DEFAULT_TOKEN,))],
        prompt=TRIGGER_PROMPT,
    )
    diffusers = render(
        manager,
        [*sd15(), spec(zoo.sd15_embedding_diffusers, "embedding")],  # the key is the trigger
        prompt=TRIGGER_PROMPT,
    )
    assert difference(a1111, before) > 1.0
    assert np.allclose(a1111, diffusers, atol=1.0)  # the same vectors in both layouts
    assert np.array_equal(render(manager, sd15(), prompt=TRIGGER_PROMPT), before)


def test_an_sdxl_embedding_loads_into_both_text_encoders(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sdxl(), prompt=TRIGGER_PROMPT)
    embedding = spec(zoo.sdxl_embedding, "embedding", triggers=(DEFAULT_TOKEN,))
    with_embedding = render(manager, [*sdxl(), embedding], prompt=TRIGGER_PROMPT)
    assert difference(with_embedding, before) > 1.0
    assert np.array_equal(render(manager, sdxl(), prompt=TRIGGER_PROMPT), before)
    with pytest.raises(ValueError, match="for SDXL"):
        render(manager, [*sd15(), embedding], prompt=TRIGGER_PROMPT)


def control_image() -> Image.Image:
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[16:48, 16:48] = 255  # a white square, like a canny map's edges would be
    return Image.fromarray(pixels)


def test_a_controlnet_changes_the_image_and_its_weight_scales_it(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sd15())
    full = render(
        manager,
        [*sd15(), spec(zoo.sd15_controlnet, "controlnet", weight=1.0)],
        image=control_image(),
    )
    half = render(
        manager,
        [*sd15(), spec(zoo.sd15_controlnet, "controlnet", weight=0.5)],
        image=control_image(),
    )
    assert 1.0 < difference(half, before) < difference(full, before)
    assert np.array_equal(render(manager, sd15()), before)


def test_a_controlnet_file_in_the_original_layout_loads_without_a_config(tmp_path: Path) -> None:
    """The single-file layout needs a hint network that downscales by 8: built for the demo
    UNet at that factor whatever the demo VAE's depth, and compared weight by weight."""
    from imagefleet.demo_model import build_demo_pipeline
    from imagefleet.tiny_models.controlnet import build_controlnet, write_controlnet_single_file
    from imagefleet.worker.engines.pipeline_loading import open_controlnet

    base = build_demo_pipeline(0)
    original = build_controlnet(base, 7, downscale=8)
    path = write_controlnet_single_file(original, tmp_path / "cn.safetensors")
    loaded = open_controlnet(path, unet=base.unet, device=torch.device("cpu"), dtype=torch.float32)
    want, got = original.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_img2img_and_inpaint_share_the_resident_checkpoint_and_its_loras(
    manager: ModelManager,
) -> None:
    zoo = tiny_zoo()
    models = [*sd15(), spec(zoo.sd15_lora_peft, "lora", weight=1.0)]
    init = control_image()
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    render(manager, sd15())
    clock = StageClock()
    plain = render(manager, sd15(), task="img2img", image=init, strength=0.9, clock=clock)
    with_lora = render(manager, models, task="img2img", image=init, strength=0.9, clock=clock)
    inpainted = render(manager, models, task="inpaint", image=init, mask_image=mask, clock=clock)
    assert plain.shape == with_lora.shape == inpainted.shape == (64, 64, 3)
    assert difference(plain, with_lora) > 1.0
    assert clock.load_seconds == 0.0  # the txt2img checkpoint served every task


def test_an_sdxl_base_and_refiner_run_both_ways(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    refiner = spec(zoo.sdxl_refiner, "checkpoint", role="refiner")
    base_only = render(manager, sdxl(), num_inference_steps=4)
    switched = render(manager, [*sdxl(), refiner], switch=0.5, num_inference_steps=4)
    stepped = render(manager, [*sdxl(), refiner], refiner_steps=2, num_inference_steps=4)
    assert switched.shape == stepped.shape == (64, 64, 3)
    assert difference(switched, base_only) > 1.0 and difference(stepped, base_only) > 1.0
    assert refiner.sha256 in manager.resident_models()


def test_clip_skip_changes_the_prompt_encoding(manager: ModelManager) -> None:
    assert diffusers_clip_skip(None) is None and diffusers_clip_skip(1) is None
    assert diffusers_clip_skip(2) == 1
    for models in (sd15(), sdxl()):
        plain = render(manager, models)
        skipped = render(manager, models, clip_skip=diffusers_clip_skip(2))
        assert difference(plain, skipped) > 1.0


def test_the_separate_vae_decode_gives_the_pipelines_own_pixels(manager: ModelManager) -> None:
    for models in (sd15(), sdxl()):
        with manager.prepare(models) as ready:
            call = {"prompt": "a cat", "num_inference_steps": 2, "height": 64, "width": 64}
            own = ready.pipeline(**call, generator=torch.Generator().manual_seed(0)).images[0]
            latents = ready.pipeline(
                **call, generator=torch.Generator().manual_seed(0), output_type="latent"
            ).images
            ours = decode_latents(ready.pipeline, latents)[0]
        assert np.array_equal(np.asarray(own), np.asarray(ours))


@pytest.mark.parametrize("fp32_vae", [True, False])
def test_the_fp16_safe_option_keeps_sdxl_vaes_in_float32(tmp_path: Path, fp32_vae: bool) -> None:
    """Half precision as on a GPU (here on the CPU): SDXL's VAE overflows in float16, so by
    default it stays float32 while the UNet runs in float16, and decoding still works."""
    settings = ModelSettings(sdxl_vae_fp32=fp32_vae)
    half = ModelManager(
        ModelCache(tmp_path / "cache", settings=settings), device="cpu", dtype=torch.float16
    )
    image = render(half, sdxl())
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    with half.prepare(sdxl()) as ready:
        assert ready.pipeline.unet.dtype == torch.float16
        assert ready.pipeline.vae.dtype == (torch.float32 if fp32_vae else torch.float16)
    with half.prepare(sd15()) as ready:
        assert ready.pipeline.vae.dtype == torch.float16  # SD 1.5 VAEs are fine in fp16


def test_the_pool_unloads_the_least_recently_used_resident_not_in_use() -> None:
    def layer() -> nn.Module:
        return nn.Linear(100, 100)  # 40,400 bytes of float32

    size = resident_bytes(layer())
    pool = ResidentPool(budget_bytes=2 * size + 10)
    with pool.use("a", layer):
        pass
    with pool.use("b", layer):
        pass
    with pool.use("a", layer):
        pass
    with pool.use("c", layer, expected_bytes=size):
        pass
    assert pool.resident() == ["a", "c"]
    with pool.use("a", layer), pool.use("c", layer), pool.use("d", layer, expected_bytes=size):
        assert sorted(pool.resident()) == ["a", "c", "d"]  # over budget: both are in use
    assert not pool.evict("missing")
    assert pool.evict("a") and "a" not in pool.resident()


def test_resident_bytes_count_shared_weights_once(manager: ModelManager) -> None:
    shared = nn.Linear(10, 10)
    twice = nn.Sequential(shared, shared)
    assert resident_bytes(twice) == resident_bytes(shared)
    with manager.prepare(sd15()) as ready:
        assert resident_bytes(ready.pipeline) > resident_bytes(ready.pipeline.unet)
