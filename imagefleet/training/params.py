"""The hyperparameters of a LoRA training job, validated where the job is submitted.

One pydantic model shared by the orchestrator (the train_lora kind's params, refused with a 422
that names the field) and the worker's engine, which trusts these ranges. The ranges are wide
enough for real SD 1.5 / SDXL LoRAs and narrow enough that nothing absurd reaches a GPU: a
learning rate above 1 or a rank above 256 is a typo, not an experiment.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, field_validator, model_validator

from imagefleet.protocol import MAX_SEED, Strict

LrSchedule = Literal["constant", "cosine", "linear"]
MixedPrecision = Literal["no", "fp16", "bf16"]

# A model name that is also a safe file name: the trained LoRA is registered under it.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
MIN_RESOLUTION = 32
MAX_RESOLUTION = 2048
MAX_STEPS = 100_000


class LoraTrainingParams(Strict):
    """DreamBooth-LoRA hyperparameters: LoRA on the UNet's attention projections, optionally
    on the text encoders too, noise-prediction loss, optional prior preservation."""

    output_name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        description="The name the trained LoRA is registered under (letters, digits, . _ -).",
    )
    instance_prompt: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="The caption of every image that has no caption file, e.g. 'a photo of "
        "sks dog'. Required when the dataset has no captions.",
    )
    trigger_words: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Words that invoke the LoRA in a prompt; default: the instance prompt.",
    )
    rank: int = Field(16, ge=1, le=256, description="LoRA rank (inner dimension).")
    alpha: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="LoRA alpha; the update is scaled by alpha/rank. Default: equal to rank.",
    )
    learning_rate: float = Field(1e-4, gt=0, le=1.0)
    lr_schedule: LrSchedule = "constant"
    lr_warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Linear warm-up from 0.")
    steps: int = Field(500, ge=1, le=MAX_STEPS, description="Optimizer steps.")
    batch_size: int = Field(1, ge=1, le=64)
    resolution: int = Field(
        512,
        ge=MIN_RESOLUTION,
        le=MAX_RESOLUTION,
        description="Square training size in pixels, a multiple of 8; images are resized "
        "(shorter side) and center-cropped to it.",
    )
    max_grad_norm: float = Field(1.0, gt=0, le=1000, description="Gradient clipping norm.")
    train_text_encoder: bool = Field(
        False,
        description="Also train LoRA adapters on the text encoders' attention (SD 1.x: the "
        "text encoder; SDXL: both); the captions are then encoded at every step.",
    )
    prior_preservation: bool = False
    class_prompt: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="With prior_preservation: what the class looks like, e.g. 'a photo of dog'.",
    )
    class_images: int = Field(
        100, ge=1, le=1000, description="With prior_preservation: class images to generate."
    )
    class_inference_steps: int = Field(
        25, ge=1, le=150, description="Denoising steps for each generated class image."
    )
    prior_loss_weight: float = Field(1.0, gt=0, le=10)
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Random when absent; fixed at submit, so every attempt trains alike.",
    )
    mixed_precision: MixedPrecision = Field(
        "no",
        description="fp16 or bf16 on CUDA; a CPU worker trains in float32 and says so.",
    )
    checkpoint_every: int = Field(
        100, ge=1, le=MAX_STEPS, description="Save a resumable checkpoint every N steps."
    )
    keep_last: int = Field(2, ge=1, le=100, description="Checkpoints kept in storage.")

    @field_validator("trigger_words")
    @classmethod
    def _trigger_words_are_words(cls, words: list[str]) -> list[str]:
        for word in words:
            if not word.strip() or len(word) > 100:
                raise ValueError(f"each trigger word must be 1 to 100 characters, got {word!r}")
        return words

    @field_validator("resolution")
    @classmethod
    def _multiple_of_eight(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LoraTrainingParams:
        if self.lr_warmup_steps >= self.steps:
            raise ValueError(
                f"lr_warmup_steps ({self.lr_warmup_steps}) must be less than steps "
                f"({self.steps}): the warm-up would never reach the learning rate"
            )
        if self.prior_preservation and self.class_prompt is None:
            raise ValueError("class_prompt is required when prior_preservation is true")
        if not self.prior_preservation and self.class_prompt is not None:
            raise ValueError(
                "class_prompt is set but prior_preservation is false: set prior_preservation "
                "to true to use it, or drop class_prompt"
            )
        return self

    @property
    def lora_alpha(self) -> int:
        return self.rank if self.alpha is None else self.alpha

    def effective_trigger_words(self) -> list[str]:
        """The words recorded with the trained LoRA: the given ones, else the instance prompt."""
        if self.trigger_words:
            return list(self.trigger_words)
        return [self.instance_prompt] if self.instance_prompt else []


def with_fixed_seed(
    params: LoraTrainingParams, rng: random.Random | None = None
) -> LoraTrainingParams:
    """The params with a concrete seed: what admission stores, so a resumed attempt on another
    worker draws the same noise and data order as the first."""
    if params.seed is not None:
        return params
    chooser = rng or random.SystemRandom()
    return params.model_copy(update={"seed": chooser.randint(0, MAX_SEED)})
