"""LoRA training on an SDXL base with both text encoders trained (``train_text_encoder``).

The tiny zoo's SDXL base has SDXL's real structure (a CLIPTextModel and a
CLIPTextModelWithProjection whose pooled output conditions the UNet), so this exercises what a
real SDXL run does: adapters on both encoders, captions encoded through them at every step,
both encoders' adapters in the checkpoint and restored on resume, and a LoRA file whose
``text_encoder.*`` and ``text_encoder_2.*`` keys the worker's generation path loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from imagefleet.hashing import file_sha256
from imagefleet.tiny_models.sdxl import build_tiny_sdxl_pipeline, save_tiny_sdxl
from imagefleet.worker.engines.adapters import LoraManager, LoraSpec
from imagefleet.worker.engines.model_manager import ModelManager
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.training.checkpoint import load_newest_valid, read_checkpoint
from imagefleet.worker.training.lora_file import read_lora_metadata
from imagefleet.worker.training.types import (
    StepProgress,
    StopReason,
    TrainingResult,
    TrainingStopped,
)
from tests import training_support
from tests.tiny_zoo import difference, render, spec
from tests.training_support import CheckpointStore, lora_tensors, tiny_params, trainer

_one_cpu_thread = training_support.one_cpu_thread
COMPONENTS = {"unet", "text_encoder", "text_encoder_2"}
# Prior preservation too: the class prompt is encoded through the adapted encoders as well.
PARAMS = tiny_params(
    steps=6,
    resolution=64,
    checkpoint_every=2,
    learning_rate=5e-2,
    alpha=8,  # unlike the rank: the worker must read it from the file's header
    train_text_encoder=True,
    prior_preservation=True,
    class_prompt="a photo of cat",
    class_images=1,
    class_inference_steps=1,
)


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("training-sdxl-te") / "pipeline")


@pytest.fixture(scope="module")
def whole(sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    """The uninterrupted run every other result is compared with."""
    return trainer(sdxl_dir, tmp_path_factory.mktemp("whole"), PARAMS).train()


def test_both_text_encoders_adapters_train_and_are_written_in_the_diffusers_sdxl_layout(
    whole: TrainingResult,
) -> None:
    weights = lora_tensors(whole.lora_path)
    assert {key.split(".")[0] for key in weights} == COMPONENTS
    for component in ("text_encoder", "text_encoder_2"):
        # The up (B) matrices start at zero: non-zero means the loss reached these adapters.
        ups = {k: t for k, t in weights.items() if k.startswith(f"{component}.") and ".up." in k}
        last = max(_layer(key) for key in ups)
        # SDXL conditions on the first encoder's penultimate layer: its last layer gets no
        # gradient (as in diffusers' recipe). The second's last layer feeds the pooled output.
        reached = {k for k in ups if component == "text_encoder_2" or _layer(k) < last}
        assert reached and all(ups[k].abs().max() > 0 for k in reached)
    with safe_open(str(whole.lora_path), framework="pt") as handle:
        configs = json.loads((handle.metadata() or {})["lora_adapter_metadata"])
    # Each component's LoraConfig rides along (its alpha survives loading).
    assert {configs[f"{component}.r"] for component in COMPONENTS} == {PARAMS.rank}
    assert read_lora_metadata(whole.lora_path).train_text_encoder is True


def test_a_run_killed_after_a_checkpoint_resumes_elsewhere_to_the_same_weights(
    sdxl_dir: Path, whole: TrainingResult, tmp_path: Path
) -> None:
    store = CheckpointStore(tmp_path / "store")
    store.root.mkdir()
    done = [0]

    def progress(report: StepProgress) -> None:
        done[0] = report.step

    def stop() -> StopReason | None:
        if done[0] < 4:
            return None
        store.wait_for(4)  # a SIGKILL right after the step-4 checkpoint landed
        return StopReason.cancel

    with pytest.raises(TrainingStopped):
        trainer(sdxl_dir, tmp_path / "first", PARAMS).train(
            on_progress=progress, should_stop=stop, on_checkpoint=store
        )
    saved = read_checkpoint(store.path(4)).lora
    assert {name.split(".")[0] for name in saved} == COMPONENTS

    second = trainer(sdxl_dir, tmp_path / "second", PARAMS)
    point = load_newest_valid(store.refs(), second.identity)
    assert point.state is not None and point.state.step == 4 and point.skipped == []
    resumed = second.train(resume=point.state)
    assert resumed.start_step == 4
    expected = lora_tensors(whole.lora_path)
    weights = lora_tensors(resumed.lora_path)
    assert weights.keys() == expected.keys()
    for key, tensor in weights.items():
        torch.testing.assert_close(tensor, expected[key], rtol=1e-5, atol=1e-6)


def _layer(key: str) -> int:
    return int(key.split(".layers.")[1].split(".")[0])


def _loaded_matches_file(pipeline: Any, component: str, path: Path, adapter: str) -> None:
    """The component's adapter weights are the file's, tensor for tensor."""
    expected = {
        key.removeprefix(f"{component}.")
        .replace("lora_linear_layer.up.weight", f"lora_B.{adapter}.weight")
        .replace("lora_linear_layer.down.weight", f"lora_A.{adapter}.weight"): tensor
        for key, tensor in lora_tensors(path).items()
        if key.startswith(f"{component}.")
    }
    loaded = {
        name: parameter
        for name, parameter in getattr(pipeline, component).named_parameters()
        if f".{adapter}." in name
    }
    assert expected and loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(loaded[name].detach(), tensor), name


def _unet_only_copy(source: Path, dest: Path) -> Path:
    """The same run's LoRA without its text-encoder keys (the header kept as it was)."""
    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata() or {})
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("unet.")}  # noqa: SIM118
    save_file(tensors, str(dest), metadata=header)
    return dest


def test_the_lora_loads_into_both_text_encoders_and_they_change_the_image(
    sdxl_dir: Path, whole: TrainingResult, tmp_path: Path
) -> None:
    pipeline = build_tiny_sdxl_pipeline()
    key = file_sha256(whole.lora_path)
    LoraManager(pipeline).apply([LoraSpec(key, whole.lora_path)])
    adapted = {component for component, names in pipeline.get_list_adapters().items() if names}
    assert adapted == COMPONENTS
    name = f"lora_{key[:16]}"
    for component in ("text_encoder", "text_encoder_2"):
        _loaded_matches_file(pipeline, component, whole.lora_path, name)
    for component in COMPONENTS:
        assert getattr(pipeline, component).peft_config[name].lora_alpha == 8

    # The worker's generation path (what an SDXL txt2img job naming the LoRA runs).
    unet_only = _unet_only_copy(whole.lora_path, tmp_path / "unet-only.safetensors")
    manager = ModelManager(ModelCache(tmp_path / "cache"), device="cpu")
    base = [spec(sdxl_dir, "checkpoint")]
    plain = render(manager, base)
    styled = render(manager, [*base, spec(whole.lora_path, "lora", weight=1.0)])
    without_encoders = render(manager, [*base, spec(unet_only, "lora", weight=1.0)])
    assert difference(plain, styled) > 0.5
    # Same UNet adapters, same seed: what differs is the text encoders' adapters alone.
    assert difference(without_encoders, styled) > 0.5
