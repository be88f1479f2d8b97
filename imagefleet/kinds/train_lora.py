"""train_lora: a DreamBooth LoRA trained on a registered base model, resumably, on whatever
worker is free; the result is registered as a model (kind lora) and usable at once.

The dataset is an uploaded input: a zip of images with caption files (`dataset`, checked in
full at upload, see training/dataset.py; or a URL / s3:// object the API fetches and checks at
submit, orchestrator/dataset_import.py), or instance images (`instance_images`, each an
uploaded image) that share the instance prompt. Hyperparameters are `LoraTrainingParams`
(training/params.py), whose ranges refuse absurd values with a 422 naming the field. The seed
is fixed at submit, so every attempt on every worker trains alike and a resumed run reaches the
weights an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from imagefleet.errors import InvalidField
from imagefleet.kinds.base import (
    CheckpointPolicy,
    InputInfo,
    InputNeed,
    KindSpec,
    Limits,
    ModelNeed,
    OutputSpec,
    Requirements,
    ResultModel,
)
from imagefleet.protocol import JobSubmission, ModelKind, ModelRole, ModelUse
from imagefleet.training.dataset import DATASET_CONTENT_TYPE
from imagefleet.training.dataset_source import DatasetSource
from imagefleet.training.params import LoraTrainingParams, with_fixed_seed

PARAMS_LOC = ("body", "params")
MAX_INSTANCE_IMAGES = 200
LORA_MEDIA_TYPE = "application/octet-stream"
# Attempts that lose their lease count against this; hand-backs (spot reclaims announced with
# a signal) do not. Training runs long on interruptible GPUs, so it gets more than images.
MAX_ATTEMPTS = 10


InputId = Annotated[str, Field(min_length=1, max_length=64, pattern="^[0-9a-f]+$")]


class TrainLoraParams(LoraTrainingParams):
    """What a train_lora job trains on and how (the hyperparameters are LoraTrainingParams')."""

    base_model: ModelUse = Field(
        description='A registered checkpoint (SD 1.5 or SDXL): "name", "name@version" or an object.'
    )
    dataset: InputId | DatasetSource | None = Field(
        None,
        description="An uploaded dataset zip (POST /v1/inputs, Content-Type application/zip), "
        'or where to fetch one at submit: {"url": "https://..."} or {"s3": "s3://bucket/key"}, '
        'optionally with "sha256".',
    )
    instance_images: list[str] = Field(
        default_factory=list,
        max_length=MAX_INSTANCE_IMAGES,
        description="Uploaded images (POST /v1/inputs) captioned with instance_prompt.",
    )

    @model_validator(mode="after")
    def _one_dataset(self) -> TrainLoraParams:
        if (self.dataset is None) == (not self.instance_images):
            raise ValueError(
                "give exactly one of dataset (an uploaded zip) and instance_images (uploaded "
                "images with an instance_prompt)"
            )
        if self.instance_images and self.instance_prompt is None:
            raise ValueError("instance_images need an instance_prompt: their common caption")
        if len(set(self.instance_images)) != len(self.instance_images):
            raise ValueError("instance_images names the same input twice")
        return self


def instance_input_name(index: int) -> str:
    """The name instance image `index` fills (what the worker asks its assignment for)."""
    return f"instance_image_{index}"


class TrainLoraJob(JobSubmission):
    """A train_lora job as submitted."""

    kind: Literal["train_lora"] = "train_lora"
    params: TrainLoraParams


class TrainLora(KindSpec):
    name = "train_lora"
    submission = TrainLoraJob
    summary = "Train a LoRA on a registered base model; the result is registered as a model."
    params_model = TrainLoraParams
    max_attempts = MAX_ATTEMPTS

    def admit(
        self, params: TrainLoraParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> TrainLoraParams:
        if params.dataset is not None:
            dataset = inputs["dataset"]
            if dataset.content_type != DATASET_CONTENT_TYPE or dataset.images is None:
                raise InvalidField(
                    (*PARAMS_LOC, "dataset"),
                    f"input {params.dataset} is a {dataset.content_type} image, not a dataset "
                    "zip; upload the zip with Content-Type application/zip, or name images in "
                    "instance_images",
                )
            if dataset.uncaptioned and params.instance_prompt is None:
                raise InvalidField(
                    (*PARAMS_LOC, "instance_prompt"),
                    f"{dataset.uncaptioned} of the dataset's {dataset.images} images have no "
                    "caption file: give an instance_prompt to caption them, or add the .txt files",
                )
        for index, input_id in enumerate(params.instance_images):
            image = inputs[instance_input_name(index)]
            if image.content_type == DATASET_CONTENT_TYPE:
                raise InvalidField(
                    (*PARAMS_LOC, "instance_images", index),
                    f"input {input_id} is a dataset zip; pass it as dataset instead",
                )
        seeded = with_fixed_seed(params)
        assert isinstance(seeded, TrainLoraParams)  # a model_copy keeps the class
        return seeded

    def requirements(self, params: TrainLoraParams) -> Requirements:
        inputs = [
            InputNeed(instance_input_name(i), input_id, (*PARAMS_LOC, "instance_images", i))
            for i, input_id in enumerate(params.instance_images)
        ]
        if isinstance(params.dataset, DatasetSource):
            # POST /v1/jobs imports a dataset source before admission; other callers must too.
            raise InvalidField(
                (*PARAMS_LOC, "dataset"),
                "a dataset given by url or s3 is fetched by POST /v1/jobs; submit it there",
            )
        if params.dataset is not None:
            inputs.append(InputNeed("dataset", params.dataset, (*PARAMS_LOC, "dataset")))
        side = params.resolution
        return Requirements(
            models=(
                ModelNeed(ModelRole.checkpoint, params.base_model, (*PARAMS_LOC, "base_model")),
            ),
            inputs=tuple(inputs),
            pixels=side * side * params.batch_size,
            # A training step costs about three denoising steps (forward and backward).
            cost_units=side * side * params.steps * params.batch_size * 3 / 1e6,
        )

    def outputs(self, params: Any) -> OutputSpec:
        return OutputSpec(
            count=1,
            media_types=(LORA_MEDIA_TYPE,),
            extensions={LORA_MEDIA_TYPE: "safetensors"},
        )

    def result_model(self, params: TrainLoraParams) -> ResultModel:
        return ResultModel(
            name=params.output_name,
            kind=ModelKind.lora,
            format="peft",
            trigger_words=tuple(params.effective_trigger_words()),
        )

    def checkpoint_policy(self, params: TrainLoraParams) -> CheckpointPolicy:
        return CheckpointPolicy(keep_last=params.keep_last, total_steps=params.steps)


SPEC = TrainLora()
