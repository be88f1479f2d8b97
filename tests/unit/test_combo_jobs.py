"""Real jobs through the worker's handlers and the default engine: the assignment's combo is
fetched through the disk cache, loaded through the model manager, applied for the job and gone
after; the engine reports what is resident, and the job's timings name every stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image

from imagefleet.protocol import ModelRole
from imagefleet.tiny_models.embedding import DEFAULT_TOKEN
from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.loop import Worker, WorkerConfig
from imagefleet.worker.model_cache import ModelCache
from tests.combo_jobs import Job, checkpoint, ref
from tests.tiny_zoo import difference, tiny_zoo


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ManagedEngine:
    return ManagedEngine("cpu", cache=ModelCache(tmp_path_factory.mktemp("cache")))


def test_a_lora_changes_the_image_and_the_next_job_gives_the_same_pixels_as_before(
    engine: ManagedEngine,
) -> None:
    lora = ref(tiny_zoo().sd15_lora_peft, ModelRole.lora, 1.0)
    before = Job(engine, [checkpoint()])
    with_lora = Job(engine, [checkpoint(), lora])
    after = Job(engine, [checkpoint()])
    assert difference(with_lora.image, before.image) > 1.0
    assert np.array_equal(after.image, before.image)
    seconds = with_lora.ctx.seconds
    assert seconds["adapter"] > 0 and seconds["inference"] > 0 and seconds["decode"] > 0
    assert before.ctx.seconds["model_load"] > 0  # the first job loaded the checkpoint
    assert after.ctx.seconds["model_load"] == 0  # later ones found it resident
    assert with_lora.steps[-1][0] == with_lora.steps[-1][1]
    # What a claim reports: the checkpoint and the parked LoRA, and both combos ready to run.
    assert {checkpoint().sha256, lora.sha256} <= set(engine.resident_models())
    assert {before.combo_key, with_lora.combo_key} <= set(engine.resident_combos())
    assert engine.resident_model == checkpoint().sha256
    worker = Worker(
        WorkerConfig("http://127.0.0.1:9", "key", engine.manager.cache.root),
        engine=cast(Any, engine),  # typed as the single-model engine it duck-types
    )
    claim = worker._claim_request()
    worker.client.close()
    assert set(worker.handlers) == {"txt2img", "img2img", "inpaint", "preprocess", "train_lora"}
    assert {checkpoint().sha256, lora.sha256} <= set(claim.resident_models)
    assert with_lora.combo_key in claim.resident_combos
    assert {checkpoint().sha256, lora.sha256} <= set(claim.cached_models)


def test_lora_weights_scale_and_two_loras_combine(engine: ManagedEngine) -> None:
    zoo = tiny_zoo()
    plain = Job(engine, [checkpoint()]).image

    def with_loras(*loras: tuple[Path, float]) -> np.ndarray:
        models = [checkpoint(), *(ref(p, ModelRole.lora, w) for p, w in loras)]
        return Job(engine, models).image

    half = with_loras((zoo.sd15_lora_peft, 0.5))
    full = with_loras((zoo.sd15_lora_peft, 1.0))
    assert 0.1 < difference(half, plain) < difference(full, plain)
    other = with_loras((zoo.sd15_lora_other, 1.0))
    both = with_loras((zoo.sd15_lora_peft, 1.0), (zoo.sd15_lora_other, 1.0))
    assert min(difference(both, full), difference(both, other)) > 1.0
    # The kohya file holds the same weight change as the peft one.
    assert np.allclose(with_loras((zoo.sd15_lora_kohya, 1.0)), full, atol=2.0)


def test_a_vae_swap_and_an_embedding_with_its_trigger_take_effect(engine: ManagedEngine) -> None:
    zoo = tiny_zoo()
    trigger_prompt = f"a photo of {DEFAULT_TOKEN} cat"
    plain = Job(engine, [checkpoint()], prompt=trigger_prompt).image
    vae = Job(engine, [checkpoint(), ref(zoo.sd15_vae, ModelRole.vae)], prompt=trigger_prompt)
    embedding = ref(zoo.sd15_embedding_a1111, ModelRole.embedding)
    embedded = Job(engine, [checkpoint(), embedding], prompt=trigger_prompt)
    assert difference(vae.image, plain) > 1.0
    assert difference(embedded.image, plain) > 0.5
    assert np.array_equal(Job(engine, [checkpoint()], prompt=trigger_prompt).image, plain)


def test_img2img_and_inpaint_run_with_a_lora(engine: ManagedEngine) -> None:
    lora = ref(tiny_zoo().sd15_lora_peft, ModelRole.lora, 1.0)
    init = Image.effect_noise((64, 64), 40).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    common: dict[str, Any] = {"strength": 0.5}
    plain = Job(engine, [checkpoint()], kind="img2img", inputs={"init_image": init}, **common)
    styled = Job(
        engine, [checkpoint(), lora], kind="img2img", inputs={"init_image": init}, **common
    )
    assert difference(styled.image, plain.image) > 0.5
    repaint = Job(
        engine,
        [checkpoint(), lora],
        kind="inpaint",
        inputs={"init_image": init, "mask": mask},
        mask_blur=1,
        **common,
    )
    outside = np.ones((64, 64), dtype=bool)
    outside[24 - 4 : 40 + 4, 24 - 4 : 40 + 4] = False
    assert np.array_equal(repaint.image[outside], np.asarray(init).astype(np.float64)[outside])


def test_a_controlnet_with_its_control_image_steers_the_image(engine: ManagedEngine) -> None:
    zoo = tiny_zoo()
    control = Image.new("RGB", (64, 64), 0)
    control.paste((255, 255, 255), (16, 16, 48, 48))
    plain = Job(engine, [checkpoint()]).image

    def steered(weight: float, kind: str = "txt2img", **extra: Image.Image) -> Job:
        models = [checkpoint(), ref(zoo.sd15_controlnet, ModelRole.controlnet, weight)]
        inputs = {"control_image": control, **extra}
        more: dict[str, Any] = {"strength": 0.5} if kind != "txt2img" else {}
        return Job(engine, models, kind=kind, inputs=inputs, **more)

    full, half = steered(1.0).image, steered(0.5).image
    assert 0.1 < difference(half, plain) < difference(full, plain)
    init = Image.effect_noise((64, 64), 40).convert("RGB")
    plain_variation = Job(
        engine, [checkpoint()], kind="img2img", inputs={"init_image": init}, strength=0.5
    ).image
    assert difference(steered(1.0, "img2img", init_image=init).image, plain_variation) > 0.1
    assert np.array_equal(Job(engine, [checkpoint()]).image, plain)


def test_an_sdxl_base_and_refiner_job_runs_both_ways(engine: ManagedEngine) -> None:
    zoo = tiny_zoo()
    base = ref(zoo.sdxl, ModelRole.checkpoint)
    refiner = ref(zoo.sdxl_refiner, ModelRole.refiner)
    alone = Job(engine, [base]).image
    switched = Job(engine, [base, refiner], refiner="refiner", refiner_switch=0.5)
    stepped = Job(engine, [base, refiner], refiner="refiner", refiner_steps=2)
    assert difference(switched.image, alone) > 0.1
    assert difference(stepped.image, alone) > 0.1
    assert difference(stepped.image, switched.image) > 0.1
    assert refiner.sha256 in engine.resident_models()


def test_clip_skip_and_the_hires_fix_take_effect(engine: ManagedEngine) -> None:
    plain = Job(engine, [checkpoint()])
    skipped = Job(engine, [checkpoint()], clip_skip=2)
    assert difference(skipped.image, plain.image) > 0.1
    assert np.array_equal(Job(engine, [checkpoint()], clip_skip=1).image, plain.image)
    hires = Job(engine, [checkpoint()], hires={"scale": 2.0, "steps": 2, "strength": 0.5})
    assert hires.image.shape == (128, 128, 3)
    assert (hires.outputs[0].width, hires.outputs[0].height) == (128, 128)
    upscaled = Image.fromarray(plain.image.astype(np.uint8)).resize(
        (128, 128), Image.Resampling.LANCZOS
    )
    assert difference(hires.image, np.asarray(upscaled).astype(np.float64)) > 0.5


def test_progress_counts_the_refiner_and_hires_passes(engine: ManagedEngine) -> None:
    """The total is every pass's steps (base 2 + refiner 2; base 2 + hires 2, per image), the
    step done never goes back, and the last report is the whole job."""
    zoo = tiny_zoo()
    base = ref(zoo.sdxl, ModelRole.checkpoint)
    refiner = ref(zoo.sdxl_refiner, ModelRole.refiner)
    refined = Job(engine, [base, refiner], refiner="refiner", refiner_steps=2)
    hires = Job(
        engine,
        [checkpoint()],
        num_images=2,
        hires={"scale": 2.0, "steps": 2, "strength": 0.5},
    )
    plain = Job(engine, [checkpoint()])
    for job, total in ((refined, 4), (hires, 8), (plain, 2)):
        done = [step for step, _ in job.steps]
        assert done == sorted(done) and len(done) == total, job.steps
        assert job.steps[-1] == (total, total)
