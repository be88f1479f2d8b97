"""LoRA training on an SDXL-shaped base (the tiny zoo's: two text encoders, a UNet conditioned
on the pooled text embedding and the size/crop time ids): the run is resumable to the same
weights, and the LoRA it writes loads into the worker's SDXL txt2img path and changes the image.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imagefleet.tiny_models.sdxl import save_tiny_sdxl
from imagefleet.worker.engines.model_manager import ModelManager
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.training.checkpoint import load_newest_valid
from imagefleet.worker.training.lora_file import read_lora_metadata
from imagefleet.worker.training.types import (
    StepProgress,
    StopReason,
    TrainingStopped,
)
from tests import training_support
from tests.tiny_zoo import difference, render, spec
from tests.training_support import CheckpointStore, lora_tensors, tiny_params, trainer

_one_cpu_thread = training_support.one_cpu_thread
# Prior preservation too: the class batch carries its own pooled embedding and time ids.
PARAMS = tiny_params(
    steps=6,
    resolution=64,
    checkpoint_every=2,
    learning_rate=5e-2,
    prior_preservation=True,
    class_prompt="a photo of cat",
    class_images=1,
    class_inference_steps=1,
)


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("training-sdxl") / "pipeline")


def test_an_sdxl_lora_resumes_to_the_same_weights_and_changes_sdxl_images(
    sdxl_dir: Path, tmp_path: Path
) -> None:
    whole = trainer(sdxl_dir, tmp_path / "whole", PARAMS).train()
    assert whole.metadata.resolution == 64
    weights = lora_tensors(whole.lora_path)
    assert weights and all(key.startswith("unet.") for key in weights)

    store = CheckpointStore(tmp_path / "store")
    store.root.mkdir()
    done = [0]

    def progress(report: StepProgress) -> None:
        done[0] = report.step

    def stop() -> StopReason | None:
        return StopReason.hand_back if done[0] == 3 else None

    with pytest.raises(TrainingStopped) as stopped:
        trainer(sdxl_dir, tmp_path / "first", PARAMS).train(
            on_progress=progress, should_stop=stop, on_checkpoint=store
        )
    assert stopped.value.checkpoint_step == 3
    second = trainer(sdxl_dir, tmp_path / "second", PARAMS)
    point = load_newest_valid(store.refs(), second.identity)
    assert point.state is not None and point.state.step == 3
    resumed = second.train(resume=point.state)
    assert resumed.start_step == 3
    for key, tensor in lora_tensors(resumed.lora_path).items():
        torch.testing.assert_close(tensor, weights[key], rtol=1e-5, atol=1e-6)
    assert read_lora_metadata(resumed.lora_path) == whole.metadata

    # The worker's generation path (what an SDXL txt2img job naming the LoRA runs).
    manager = ModelManager(ModelCache(tmp_path / "cache"), device="cpu")
    base = [spec(sdxl_dir, "checkpoint")]
    plain = render(manager, base)
    styled = render(manager, [*base, spec(whole.lora_path, "lora", weight=1.0)])
    assert difference(plain, styled) > 0.5
