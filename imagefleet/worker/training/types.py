"""What the training engine hands back and raises, without importing torch.

The worker's train_lora handler maps these onto the protocol: `StepProgress` onto heartbeats,
`TrainingStopped` onto a cancellation or a hand-back, `TrainingFailed` onto a final
(non-retryable) failure with its reason, `TrainingResult` onto the completed job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class StopReason(StrEnum):
    """Why the caller wants training to stop at the next step boundary."""

    cancel = "cancel"  # the job was cancelled or the lease lost: nothing more is wanted
    hand_back = "hand_back"  # the node is going away: checkpoint now, so another resumes here


@dataclass(frozen=True)
class StepProgress:
    """Reported after every optimizer step; ``step`` counts steps done, from 1."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float


ProgressCallback = Callable[[StepProgress], None]
StopCheck = Callable[[], StopReason | None]
# Runs on the uploader's thread, never on the training thread. The folder is deleted when
# the callback returns: copy or upload it before then.
CheckpointCallback = Callable[[int, Path], None]


class TrainingFailed(Exception):
    """Training cannot succeed with these inputs on any worker: fail the job, do not retry."""


class NonFiniteLoss(TrainingFailed):
    """The loss became NaN or infinite: the weights are ruined from here on."""

    def __init__(self, step: int, loss: float, learning_rate: float) -> None:
        super().__init__(
            f"the loss became {loss} at step {step} (learning rate {learning_rate:g}): training "
            "diverged. Lower learning_rate, add lr_warmup_steps, or check the base model's "
            "weights and the dataset"
        )
        self.step = step
        self.loss = loss
        self.learning_rate = learning_rate


class UnsupportedBaseModel(TrainingFailed):
    """The base model is not of a family this engine trains (SD 1.x-shaped pipelines)."""


@dataclass(frozen=True)
class CheckpointReport:
    """What became of the checkpoints of one run of the engine."""

    finished: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)  # replaced before their turn came
    failed: list[tuple[int, str]] = field(default_factory=list)  # the callback raised


class TrainingStopped(Exception):
    """Training stopped between steps because the stop check asked for it.

    ``checkpoint_step`` is the newest checkpoint this run handed over successfully (None if
    there is none); on a hand-back the engine first checkpoints the current step and waits for
    it. ``checkpoints`` says what became of each checkpoint, for the attempt history.
    """

    def __init__(
        self,
        reason: StopReason,
        steps_done: int,
        checkpoint_step: int | None,
        checkpoints: CheckpointReport | None = None,
    ) -> None:
        super().__init__(
            f"training stopped ({reason}) after {steps_done} steps; newest finished checkpoint: "
            f"{'none' if checkpoint_step is None else f'step {checkpoint_step}'}"
        )
        self.reason = reason
        self.steps_done = steps_done
        self.checkpoint_step = checkpoint_step
        self.checkpoints = checkpoints or CheckpointReport()


@dataclass(frozen=True)
class LoraMetadata:
    """What the registry records with a trained LoRA; also in the file's safetensors header."""

    base_model_sha256: str
    rank: int
    alpha: int
    trigger_words: list[str]
    steps: int
    dataset_sha256: str
    train_text_encoder: bool
    resolution: int


@dataclass(frozen=True)
class TrainingResult:
    """The trained LoRA as one .safetensors file (diffusers layout) and how the run went."""

    lora_path: Path
    sha256: str
    size_bytes: int
    metadata: LoraMetadata
    start_step: int  # 0 for a fresh run, else the step of the checkpoint resumed from
    final_loss: float
    setup_seconds: float  # model load, latent and caption caches, class images
    train_seconds: float
    checkpoints: CheckpointReport
    notices: list[str] = field(default_factory=list)  # e.g. a precision fallback on CPU
