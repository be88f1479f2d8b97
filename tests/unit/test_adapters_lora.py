"""LoRAs change a job's pixels by their weight, load from both community layouts, combine, and
leave the resident checkpoint exactly as it was for the next job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imagefleet.worker.engines.model_manager import ModelManager
from imagefleet.worker.engines.model_specs import ModelSpec
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings
from tests.tiny_zoo import difference, render, spec, tiny_zoo


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    cache = ModelCache(tmp_path_factory.mktemp("cache"))
    return ModelManager(cache, device="cpu")


def sd15() -> list[ModelSpec]:
    return [spec(tiny_zoo().sd15, "checkpoint")]


def lora(path: Path, weight: float = 1.0) -> ModelSpec:
    return spec(path, "lora", weight=weight)


def test_a_lora_changes_the_image_and_is_gone_for_the_next_job(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sd15())
    with_lora = render(manager, [*sd15(), lora(zoo.sd15_lora_peft)])
    after = render(manager, sd15())
    assert difference(with_lora, before) > 1.0
    assert np.array_equal(after, before)


def test_without_parking_the_lora_layers_are_removed_altogether(tmp_path: Path) -> None:
    zoo = tiny_zoo()
    settings = ModelSettings(max_parked_loras=0)
    unparked = ModelManager(ModelCache(tmp_path / "cache", settings=settings), device="cpu")
    before = render(unparked, sd15())
    render(unparked, [*sd15(), lora(zoo.sd15_lora_peft)])
    assert np.array_equal(render(unparked, sd15()), before)
    assert unparked.resident_models() == [spec(zoo.sd15, "checkpoint").sha256]
    (resident,) = unparked.pool.resident()
    with unparked.pool.use(resident, lambda: None) as entry:
        pipeline: Any = entry.value
        assert pipeline.get_list_adapters() == {}


def test_a_lora_weight_scales_its_effect(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sd15())
    effects = [
        difference(render(manager, [*sd15(), lora(zoo.sd15_lora_peft, w)]), before)
        for w in (0.0, 0.5, 1.0)
    ]
    assert effects[0] < 1e-6 < effects[1] < effects[2]


def test_kohya_and_diffusers_layouts_of_one_lora_give_the_same_image(
    manager: ModelManager,
) -> None:
    """The kohya file stores alpha = rank/2 and a doubled up matrix: the same weight change,
    so this also checks that .alpha is honoured."""
    zoo = tiny_zoo()
    peft = render(manager, [*sd15(), lora(zoo.sd15_lora_peft)])
    kohya = render(manager, [*sd15(), lora(zoo.sd15_lora_kohya)])
    assert np.allclose(peft, kohya, atol=1.0)
    xl = [spec(zoo.sdxl, "checkpoint")]
    xl_before = render(manager, xl)
    xl_peft = render(manager, [*xl, lora(zoo.sdxl_lora_peft)])
    xl_kohya = render(manager, [*xl, lora(zoo.sdxl_lora_kohya)])  # sgm block names
    assert difference(xl_peft, xl_before) > 1.0
    assert np.allclose(xl_peft, xl_kohya, atol=1.0)


def test_two_loras_combine_in_any_order(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    first = render(manager, [*sd15(), lora(zoo.sd15_lora_peft)])
    second = render(manager, [*sd15(), lora(zoo.sd15_lora_other)])
    both = render(manager, [*sd15(), lora(zoo.sd15_lora_peft), lora(zoo.sd15_lora_other)])
    swapped = render(manager, [*sd15(), lora(zoo.sd15_lora_other), lora(zoo.sd15_lora_peft)])
    assert min(difference(both, first), difference(both, second)) > 1.0
    assert np.allclose(both, swapped, atol=1.0)


def test_switching_back_to_a_parked_lora_reloads_nothing(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    first = render(manager, [*sd15(), lora(zoo.sd15_lora_peft)])
    render(manager, [*sd15(), lora(zoo.sd15_lora_other)])
    clock = StageClock()
    again = render(manager, [*sd15(), lora(zoo.sd15_lora_peft)], clock=clock)
    assert np.array_equal(again, first)
    assert clock.download_seconds == 0.0 and clock.load_seconds == 0.0
    parked = {spec(zoo.sd15_lora_peft, "lora").sha256, spec(zoo.sd15_lora_other, "lora").sha256}
    assert parked <= set(manager.resident_models())


def test_a_lora_for_another_base_is_refused_and_changes_nothing(manager: ModelManager) -> None:
    zoo = tiny_zoo()
    before = render(manager, sd15())
    with pytest.raises(ValueError, match="does not fit this checkpoint"):
        render(manager, [*sd15(), lora(zoo.sdxl_lora_peft)])
    assert np.array_equal(render(manager, sd15()), before)


def test_a_job_reports_its_combo_and_stage_times(tmp_path: Path) -> None:
    zoo = tiny_zoo()
    fresh = ModelManager(ModelCache(tmp_path / "cache"), device="cpu")
    clock = StageClock()
    models = [*sd15(), lora(zoo.sd15_lora_kohya, 0.8)]
    render(fresh, models, clock=clock)
    assert clock.download_seconds > 0 and clock.load_seconds > 0
    assert clock.adapters_seconds > 0 and clock.inference_seconds > 0
    assert clock.vae_decode_seconds > 0
    (combo,) = fresh.resident_combos()
    with fresh.prepare(models) as ready:
        assert ready.combo_key == combo
    fresh.pool.clear()
    assert fresh.resident_combos() == [] and fresh.resident_models() == []
