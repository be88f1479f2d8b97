"""preprocess: an uploaded image turned into a ControlNet condition (canny edges, or a depth
map from a registered depth model).

Kept apart from generation so that the annotator runs on any worker, CPU ones included, and
GPU workers need not carry annotator code or weights. Its output is an ordinary PNG; a
generation job uses it as its ControlNet's control image (upload it as an input, or name the
preprocess job's output, see docs/models.md).

Canny is numpy and PIL only. Depth needs a depth-estimation model registered with kind
`annotator` (a transformers DPT folder, e.g. Intel/dpt-hybrid-midas saved with
`save_pretrained`); it is a model of the job like a checkpoint (`depth_model`, default the model
named `depth`), so a server without one answers 422 at submit, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from imagefleet.errors import InvalidField
from imagefleet.kinds.base import (
    InputInfo,
    InputNeed,
    KindSpec,
    Limits,
    ModelNeed,
    OutputSpec,
    Requirements,
)
from imagefleet.kinds.generation import PARAMS_LOC
from imagefleet.protocol import JobSubmission, ModelRole, ModelUse, Strict

ANNOTATORS = ("canny", "depth")
DEFAULT_DEPTH_MODEL = "depth"


class PreprocessParams(Strict):
    image: str = Field(
        min_length=1,
        max_length=64,
        pattern="^[0-9a-f]+$",
        description="The id of an uploaded input (POST /v1/inputs) to annotate.",
    )
    annotator: Literal["canny", "depth"] = Field("canny", description="What to extract.")
    depth_model: ModelUse | None = Field(
        None,
        description=f"Depth: the registered annotator model to run (default "
        f"{DEFAULT_DEPTH_MODEL!r}).",
    )
    low_threshold: int = Field(100, ge=0, le=2000, description="Canny: weak-edge gradient.")
    high_threshold: int = Field(200, ge=0, le=2000, description="Canny: strong-edge gradient.")

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> PreprocessParams:
        if self.low_threshold > self.high_threshold:
            raise ValueError("low_threshold must not exceed high_threshold")
        if self.depth_model is not None and self.annotator != "depth":
            raise ValueError("depth_model is for annotator depth")
        return self


class PreprocessJob(JobSubmission):
    """A preprocess job as submitted."""

    kind: Literal["preprocess"] = "preprocess"
    params: PreprocessParams


class Preprocess(KindSpec):
    name = "preprocess"
    submission = PreprocessJob
    summary = (
        "Turn an image into a ControlNet condition (canny edges, or depth with a registered "
        "depth model); runs on CPU workers."
    )
    params_model = PreprocessParams

    def admit(
        self, params: PreprocessParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> PreprocessParams:
        image = inputs["image"]
        if image.width * image.height > limits.max_pixels:
            raise InvalidField(
                (*PARAMS_LOC, "image"),
                f"the image has {image.width}x{image.height} pixels; at most "
                f"{limits.max_pixels} are allowed",
            )
        return params

    def requirements(self, params: PreprocessParams) -> Requirements:
        models: tuple[ModelNeed, ...] = ()
        if params.annotator == "depth":
            use = params.depth_model or ModelUse(name=DEFAULT_DEPTH_MODEL)
            models = (ModelNeed(ModelRole.annotator, use, (*PARAMS_LOC, "depth_model")),)
        return Requirements(
            models=models,
            inputs=(InputNeed("image", params.image, (*PARAMS_LOC, "image")),),
            cost_units=0.001 if params.annotator == "canny" else 0.01,
        )

    def outputs(self, params: Any) -> OutputSpec:
        return OutputSpec(count=1)


SPEC = Preprocess()
