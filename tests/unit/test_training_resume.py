"""The training invariant: a run interrupted and resumed elsewhere ends with the same weights.

Each resumed run uses a fresh `LoraTrainer` that reopens the base model from disk and reads the
checkpoint back from the store, as a worker on another node would; nothing is shared in memory
with the interrupted run but the process.
"""

from pathlib import Path

import pytest
import torch

from imagefleet.training.params import LoraTrainingParams
from imagefleet.worker.training.checkpoint import load_newest_valid
from imagefleet.worker.training.types import StepProgress, StopReason, TrainingStopped
from tests import training_support
from tests.training_support import (
    CheckpointStore,
    lora_tensors,
    tiny_params,
    trainer,
)

# Fixtures shared by the training tests.
demo_dir = training_support.demo_dir
_one_cpu_thread = training_support.one_cpu_thread

# Plain DreamBooth-LoRA, and one that trains the text encoder with prior preservation and a
# decaying, warmed-up learning rate: every piece of state a checkpoint must carry is in use.
VARIANTS = {
    "unet-only-batch-2": tiny_params(batch_size=2),
    "text-encoder-prior-cosine": tiny_params(
        train_text_encoder=True,
        prior_preservation=True,
        class_prompt="a photo of cat",
        class_images=2,
        class_inference_steps=2,
        lr_schedule="cosine",
        lr_warmup_steps=3,
    ),
}


class Uninterrupted:
    def __init__(self, weights: dict[str, torch.Tensor], losses: list[float]) -> None:
        self.weights = weights
        self.losses = losses


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> LoraTrainingParams:
    return VARIANTS[request.param]


@pytest.fixture(scope="module")
def uninterrupted(
    variant: LoraTrainingParams, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Uninterrupted:
    """The 20-step run without interruption (and without checkpoints) to compare against."""
    losses: list[float] = []
    result = trainer(demo_dir, tmp_path_factory.mktemp("straight"), variant).train(
        on_progress=lambda progress: losses.append(progress.loss)
    )
    return Uninterrupted(lora_tensors(result.lora_path), losses)


def _interrupt(
    params: LoraTrainingParams, demo_dir: Path, tmp_path: Path, at_step: int, reason: StopReason
) -> CheckpointStore:
    """Runs until ``at_step`` steps are done, then stops; returns the checkpoints it made."""
    store = CheckpointStore(tmp_path / "store")
    store.root.mkdir()
    done = [0]

    def record(progress: StepProgress) -> None:
        done[0] = progress.step

    def stop() -> StopReason | None:
        if done[0] < at_step:
            return None
        if reason == StopReason.cancel and at_step % params.checkpoint_every == 0:
            store.wait_for(at_step)  # a SIGKILL right after the checkpoint landed
        return reason

    with pytest.raises(TrainingStopped) as caught:
        trainer(demo_dir, tmp_path / "first", params).train(
            on_progress=record, should_stop=stop, on_checkpoint=store
        )
    assert caught.value.steps_done == at_step
    return store


def _resume(
    params: LoraTrainingParams, demo_dir: Path, tmp_path: Path, store: CheckpointStore
) -> tuple[dict[str, torch.Tensor], list[StepProgress], int]:
    engine = trainer(demo_dir, tmp_path / "second", params)
    point = load_newest_valid(store.refs(), engine.identity)
    assert point.state is not None
    assert point.skipped == []
    reported: list[StepProgress] = []
    result = engine.train(resume=point.state, on_progress=reported.append)
    return lora_tensors(result.lora_path), reported, result.start_step


def test_a_run_killed_at_step_12_resumes_from_its_checkpoint_to_the_same_weights(
    variant: LoraTrainingParams, uninterrupted: Uninterrupted, demo_dir: Path, tmp_path: Path
) -> None:
    store = _interrupt(variant, demo_dir, tmp_path, 12, StopReason.cancel)
    assert store.steps == [4, 8, 12]

    weights, reported, start = _resume(variant, demo_dir, tmp_path, store)

    assert start == 12
    assert [progress.step for progress in reported] == list(range(13, 21))
    assert [progress.loss for progress in reported] == pytest.approx(
        uninterrupted.losses[12:], rel=1e-5
    )
    assert weights.keys() == uninterrupted.weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, uninterrupted.weights[name], rtol=1e-5, atol=1e-7)


def test_a_hand_back_checkpoints_the_current_step_and_resumes_from_there(
    variant: LoraTrainingParams, uninterrupted: Uninterrupted, demo_dir: Path, tmp_path: Path
) -> None:
    store = _interrupt(variant, demo_dir, tmp_path, 10, StopReason.hand_back)
    assert store.steps[-1] == 10  # made at the hand-back, off the checkpoint_every grid

    weights, reported, start = _resume(variant, demo_dir, tmp_path, store)

    assert start == 10
    assert reported[0].step == 11
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, uninterrupted.weights[name], rtol=1e-5, atol=1e-7)
