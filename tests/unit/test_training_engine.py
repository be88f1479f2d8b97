"""LoraTrainer on the tiny demo model: the result file, failures, stops and checkpoint hand-over."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from imagefleet.demo_model import build_demo_pipeline
from imagefleet.worker.training.lora_file import read_lora_metadata
from imagefleet.worker.training.types import (
    NonFiniteLoss,
    StepProgress,
    StopReason,
    TrainingFailed,
    TrainingResult,
    TrainingStopped,
    UnsupportedBaseModel,
)
from tests import training_support
from tests.training_support import (
    BASE_SHA256,
    CheckpointStore,
    lora_tensors,
    tiny_dataset,
    tiny_params,
    trainer,
)

# Fixtures shared by the training tests.
demo_dir = training_support.demo_dir
_one_cpu_thread = training_support.one_cpu_thread


@pytest.fixture(scope="module")
def trained(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    """A short run with the text encoder trained and alpha unlike the rank, at a rate high
    enough that the LoRA visibly changes what the model makes."""
    params = tiny_params(
        steps=6, learning_rate=5e-2, alpha=8, train_text_encoder=True, trigger_words=["sks"]
    )
    return trainer(demo_dir, tmp_path_factory.mktemp("trained"), params).train()


def _generate(pipeline: object) -> np.ndarray:
    result = pipeline(  # type: ignore[operator]
        "a photo of sks cat",
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    )
    return np.asarray(result.images[0])


def test_the_result_loads_into_the_pipeline_changes_its_output_and_stays_deterministic(
    trained: TrainingResult,
) -> None:
    pipeline = build_demo_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    base = _generate(pipeline)
    pipeline.load_lora_weights(str(trained.lora_path))
    first, second = _generate(pipeline), _generate(pipeline)
    assert np.abs(first - base).max() > 1e-3
    assert np.array_equal(first, second)
    assert pipeline.unet.peft_config["default_0"].lora_alpha == 8.0  # alpha survived loading
    assert pipeline.text_encoder.peft_config["default_0"].r == 4


def test_the_result_is_one_diffusers_file_that_describes_itself(trained: TrainingResult) -> None:
    assert trained.lora_path.name == "tiny-lora.safetensors"
    keys = load_file(str(trained.lora_path)).keys()
    assert {key.split(".")[0] for key in keys} == {"unet", "text_encoder"}
    metadata = read_lora_metadata(trained.lora_path)
    assert metadata == trained.metadata
    assert (metadata.base_model_sha256, metadata.rank, metadata.alpha) == (BASE_SHA256, 4, 8)
    assert metadata.trigger_words == ["sks"]
    assert metadata.dataset_sha256 == tiny_dataset().sha256
    assert trained.size_bytes == trained.lora_path.stat().st_size
    assert trained.start_step == 0
    assert np.isfinite(trained.final_loss)


def test_the_same_seed_trains_the_same_lora_and_another_seed_does_not(
    demo_dir: Path, tmp_path: Path
) -> None:
    runs = {
        name: trainer(demo_dir, tmp_path / name, tiny_params(steps=3, seed=seed)).train()
        for name, seed in (("one", 5), ("again", 5), ("other", 6))
    }
    # The files' bytes may differ: safetensors writes header metadata in hash-map order.
    one, again = lora_tensors(runs["one"].lora_path), lora_tensors(runs["again"].lora_path)
    other = lora_tensors(runs["other"].lora_path)
    assert all(torch.equal(one[key], again[key]) for key in one)
    assert any(not torch.equal(one[key], other[key]) for key in one)


def test_progress_reports_every_step_with_loss_and_the_scheduled_learning_rate(
    demo_dir: Path, tmp_path: Path
) -> None:
    reported: list[StepProgress] = []
    params = tiny_params(steps=4, lr_warmup_steps=3, learning_rate=1e-3)
    trainer(demo_dir, tmp_path, params).train(on_progress=reported.append)
    assert [p.step for p in reported] == [1, 2, 3, 4]
    assert {p.total_steps for p in reported} == {4}
    assert [p.learning_rate for p in reported] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(p.loss > 0 for p in reported)


def test_a_nan_loss_is_a_final_failure_with_the_reason(demo_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_dir, broken)
    weights_file = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(weights_file))
    weights["conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(weights, str(weights_file))
    with pytest.raises(NonFiniteLoss, match=r"became nan at step 1.*Lower learning_rate") as caught:
        trainer(broken, tmp_path / "work", tiny_params()).train()
    assert isinstance(caught.value, TrainingFailed)
    assert caught.value.step == 1


def test_mixed_precision_on_a_cpu_trains_in_float32_and_says_so(
    demo_dir: Path, tmp_path: Path
) -> None:
    result = trainer(demo_dir, tmp_path, tiny_params(steps=1, mixed_precision="bf16")).train()
    assert result.notices == [
        "mixed_precision bf16 needs a CUDA GPU; this worker trains on cpu in float32"
    ]
    assert {t.dtype for t in lora_tensors(result.lora_path).values()} == {torch.float32}


@pytest.mark.parametrize("prior", [False, True], ids=["plain", "while-making-class-images"])
def test_a_cancel_before_the_first_step_stops_with_no_step_done(
    demo_dir: Path, tmp_path: Path, prior: bool
) -> None:
    params = tiny_params(prior_preservation=prior, class_prompt="a photo of cat" if prior else None)
    with pytest.raises(TrainingStopped) as caught:
        trainer(demo_dir, tmp_path, params).train(should_stop=lambda: StopReason.cancel)
    assert (caught.value.reason, caught.value.steps_done, caught.value.checkpoint_step) == (
        StopReason.cancel,
        0,
        None,
    )


def test_a_slow_checkpoint_upload_does_not_hold_training_back(
    demo_dir: Path, tmp_path: Path
) -> None:
    """The first upload blocks until training has done its last step: if checkpoints were
    handed over on the training thread, the run could never get there."""
    last_step_done = threading.Event()
    uploads: list[int] = []

    def slow_upload(step: int, folder: Path) -> None:
        assert last_step_done.wait(timeout=120), "training waited for the upload"
        assert (folder / "state.json").is_file()
        uploads.append(step)

    def progress(report: StepProgress) -> None:
        if report.step == report.total_steps:
            last_step_done.set()

    params = tiny_params(steps=8, checkpoint_every=2)
    result = trainer(demo_dir, tmp_path, params).train(
        on_progress=progress, on_checkpoint=slow_upload
    )
    # One checkpoint was in hand throughout; of the later ones at most one waited at a time,
    # each replaced by the next, and the successful end dropped the last (the final LoRA
    # supersedes it).
    report = result.checkpoints
    assert report.failed == []
    assert len(uploads) == 1
    assert report.finished == uploads
    assert sorted(report.finished + report.superseded) == [2, 4, 6]


def test_an_upload_that_fails_is_recorded_and_training_goes_on(
    demo_dir: Path, tmp_path: Path
) -> None:
    store = CheckpointStore(tmp_path / "store")
    store.root.mkdir()
    failed = threading.Event()
    done = [0]

    def flaky(step: int, folder: Path) -> None:
        if step == 2:
            failed.set()
            raise ConnectionError("object store unreachable")
        store(step, folder)

    def stop() -> StopReason | None:
        if done[0] == 2:
            assert failed.wait(timeout=60)
        return StopReason.hand_back if done[0] == 4 else None

    def progress(report: StepProgress) -> None:
        done[0] = report.step

    with pytest.raises(TrainingStopped) as caught:
        trainer(demo_dir, tmp_path / "work", tiny_params(checkpoint_every=2)).train(
            on_progress=progress, should_stop=stop, on_checkpoint=flaky
        )
    assert store.steps == [4]
    assert caught.value.checkpoint_step == 4
    assert caught.value.checkpoints.failed == [(2, "ConnectionError: object store unreachable")]


def test_the_checkpoint_folders_are_removed_once_handed_over(
    demo_dir: Path, tmp_path: Path
) -> None:
    store = CheckpointStore(tmp_path / "store")
    store.root.mkdir()
    trainer(demo_dir, tmp_path / "work", tiny_params(steps=5, checkpoint_every=2)).train(
        on_checkpoint=store
    )
    assert not list((tmp_path / "work" / "checkpoints").iterdir())
    assert store.steps[0] == 2


def test_a_base_model_of_another_family_is_refused(demo_dir: Path, tmp_path: Path) -> None:
    flux = tmp_path / "flux"
    flux.mkdir()
    (flux / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UnsupportedBaseModel, match="FluxPipeline"):
        trainer(flux, tmp_path / "work", tiny_params()).train()


def test_a_job_without_a_fixed_seed_is_refused(demo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingFailed, match="with_fixed_seed"):
        trainer(demo_dir, tmp_path, tiny_params(seed=None))
