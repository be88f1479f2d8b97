"""DiffusersEngine on the real tiny demo model: sizes, seeds, progress, cancellation, loading."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imagefleet.demo_model import export_single_file
from imagefleet.worker.engines.diffusers_engine import (
    DiffusersEngine,
    GeneratedImage,
    GenerationCancelled,
    Txt2ImgRequest,
)
from imagefleet.worker.engines.schedulers import SCHEDULERS
from imagefleet.worker.engines.single_file import checkpoint_family

REQUEST = Txt2ImgRequest(
    prompt="a photo of the cat",
    negative_prompt="blurry",
    width=64,
    height=64,
    steps=2,
    guidance_scale=5.0,
    seed=42,
    num_images=1,
    scheduler="ddim",
)


# The tiny models run on one torch thread (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def engine(demo_dir: Path) -> DiffusersEngine:
    engine = DiffusersEngine()
    engine.load("demo", demo_dir)
    return engine


def _run(
    engine: DiffusersEngine,
    request: Txt2ImgRequest,
    on_step: Callable[[int, int], None] = lambda done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[GeneratedImage]:
    return engine.txt2img(request, on_step, should_stop)


def _pixels(generated: GeneratedImage) -> np.ndarray:
    return np.asarray(generated.image)


@pytest.mark.parametrize("size", [(64, 64), (72, 128)], ids=["64x64", "72x128"])
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_gives_the_exact_size(
    engine: DiffusersEngine, scheduler: str, size: tuple[int, int]
) -> None:
    width, height = size
    request = replace(REQUEST, scheduler=scheduler, width=width, height=height)
    [generated] = _run(engine, request)
    assert generated.image.size == (width, height)
    assert generated.image.mode == "RGB"
    assert generated.seed == REQUEST.seed


def test_same_seed_repeats_pixels_and_another_seed_does_not(engine: DiffusersEngine) -> None:
    [first] = _run(engine, REQUEST)
    [again] = _run(engine, REQUEST)
    [other] = _run(engine, replace(REQUEST, seed=REQUEST.seed + 100))
    assert np.array_equal(_pixels(first), _pixels(again))
    assert not np.array_equal(_pixels(first), _pixels(other))


@pytest.mark.parametrize("scheduler", ["dpmpp_sde", "dpmpp_2m_sde_karras", "lcm"])
def test_stochastic_samplers_repeat_pixels_for_the_same_seed(
    engine: DiffusersEngine, scheduler: str
) -> None:
    request = replace(REQUEST, scheduler=scheduler)
    [first] = _run(engine, request)
    [again] = _run(engine, request)
    [other] = _run(engine, replace(request, seed=REQUEST.seed + 1))
    assert np.array_equal(_pixels(first), _pixels(again))
    assert not np.array_equal(_pixels(first), _pixels(other))


def test_an_a1111_sampler_label_selects_that_sampler(engine: DiffusersEngine) -> None:
    [by_label] = _run(engine, replace(REQUEST, scheduler="DPM++ 2M Karras"))
    [by_name] = _run(engine, replace(REQUEST, scheduler="dpmpp_2m_karras"))
    assert np.array_equal(_pixels(by_label), _pixels(by_name))


@pytest.mark.parametrize("scheduler", ["dpmpp_2m", "euler_ancestral", "dpmpp_sde"])
def test_each_image_is_reproduced_alone_by_its_seed(
    engine: DiffusersEngine, scheduler: str
) -> None:
    batch = _run(engine, replace(REQUEST, num_images=2, scheduler=scheduler))
    [alone] = _run(engine, replace(REQUEST, seed=REQUEST.seed + 1, scheduler=scheduler))
    assert [image.seed for image in batch] == [REQUEST.seed, REQUEST.seed + 1]
    assert np.array_equal(_pixels(batch[1]), _pixels(alone))
    assert not np.array_equal(_pixels(batch[0]), _pixels(batch[1]))


def test_progress_is_reported_after_every_step(engine: DiffusersEngine) -> None:
    steps: list[tuple[int, int]] = []
    _run(engine, replace(REQUEST, steps=4), on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_progress_counts_across_images(engine: DiffusersEngine) -> None:
    steps: list[tuple[int, int]] = []
    request = replace(REQUEST, steps=2, num_images=2)
    _run(engine, request, on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_stop_request_cancels_at_the_next_step(engine: DiffusersEngine) -> None:
    steps: list[tuple[int, int]] = []
    with pytest.raises(GenerationCancelled):
        _run(
            engine,
            replace(REQUEST, steps=5),
            on_step=lambda done, total: steps.append((done, total)),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [(1, 5), (2, 5)]


def test_stop_request_before_the_start_runs_no_step(engine: DiffusersEngine) -> None:
    steps: list[tuple[int, int]] = []
    with pytest.raises(GenerationCancelled):
        _run(engine, REQUEST, on_step=lambda *step: steps.append(step), should_stop=lambda: True)
    assert steps == []


def test_unknown_scheduler_is_refused_with_the_allowed_names(engine: DiffusersEngine) -> None:
    with pytest.raises(ValueError, match=r"unknown scheduler 'dpm_fast'.*dpmpp_2m_karras"):
        _run(engine, replace(REQUEST, scheduler="dpm_fast"))


def test_generating_with_nothing_resident_is_an_error() -> None:
    engine = DiffusersEngine(device="cpu")
    assert engine.resident_model is None
    with pytest.raises(RuntimeError, match="no model is resident"):
        _run(engine, REQUEST)


def test_loading_the_resident_model_again_is_free(engine: DiffusersEngine, demo_dir: Path) -> None:
    assert engine.load("demo", demo_dir) == 0.0
    assert engine.resident_model == "demo"


@pytest.mark.parametrize("name", ["model.ckpt", "model.bin", "model.pt", "missing.safetensors"])
def test_pickle_and_missing_paths_are_refused_without_evicting(
    engine: DiffusersEngine, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    if not name.startswith("missing"):
        path.write_bytes(b"not loaded")
    with pytest.raises(ValueError, match=str(path)):
        engine.load("other", path)
    assert engine.resident_model == "demo"


def test_single_file_checkpoint_generates_the_same_pixels(demo_dir: Path, tmp_path: Path) -> None:
    checkpoint = export_single_file(demo_dir, tmp_path / "demo.safetensors")
    engine = DiffusersEngine()
    assert engine.load("dir", demo_dir) > 0.0
    [from_directory] = _run(engine, REQUEST)
    engine.load("file", checkpoint, config_dir=demo_dir)
    assert engine.resident_model == "file"
    [from_file] = _run(engine, REQUEST)
    assert np.array_equal(_pixels(from_directory), _pixels(from_file))


def test_checkpoint_family_is_read_from_key_names(tmp_path: Path) -> None:
    sd_file, sdxl_file, lora_file = (tmp_path / f"{n}.safetensors" for n in ("sd", "xl", "lora"))
    unet_key, sdxl_key = "model.diffusion_model.out.2.bias", "conditioner.embedders.1.model.x"
    save_file({unet_key: torch.zeros(1)}, str(sd_file))
    save_file({unet_key: torch.zeros(1), sdxl_key: torch.zeros(1)}, str(sdxl_file))
    save_file({"lora_unet_down_blocks_0.alpha": torch.zeros(1)}, str(lora_file))
    garbage_file = tmp_path / "garbage.safetensors"
    garbage_file.write_bytes(b"not a safetensors header")
    assert checkpoint_family(sd_file) == "sd"
    assert checkpoint_family(sdxl_file) == "sdxl"
    with pytest.raises(ValueError, match="not a full checkpoint"):
        checkpoint_family(lora_file)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        checkpoint_family(garbage_file)
