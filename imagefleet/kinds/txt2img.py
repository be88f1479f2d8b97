"""txt2img: an image from a prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from imagefleet.kinds.base import InputInfo, KindSpec, Limits, OutputSpec, Requirements
from imagefleet.kinds.batching import generation_batch_key
from imagefleet.kinds.generation import (
    GenerationParams,
    admit_generation,
    combo_needs,
    control_inputs,
    cost_units,
    image_outputs,
    multiple_of_eight,
)
from imagefleet.protocol import JobSubmission


class Txt2ImgParams(GenerationParams):
    """What a client may ask of a txt2img job. Size bounds beyond these are server settings."""

    width: int = Field(
        512,
        ge=8,
        le=16384,
        json_schema_extra={"multipleOf": 8},
        description="Pixels, a multiple of 8.",
    )
    height: int = Field(
        512,
        ge=8,
        le=16384,
        json_schema_extra={"multipleOf": 8},
        description="Pixels, a multiple of 8.",
    )

    _sides_on_the_grid = field_validator("width", "height")(multiple_of_eight)


class Txt2ImgJob(JobSubmission):
    """A txt2img job as submitted."""

    kind: Literal["txt2img"] = "txt2img"
    params: Txt2ImgParams


class Txt2Img(KindSpec):
    name = "txt2img"
    submission = Txt2ImgJob
    summary = "Generate images from a prompt."
    params_model = Txt2ImgParams

    def admit(
        self, params: Txt2ImgParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> Txt2ImgParams:
        admitted: Txt2ImgParams = admit_generation(params, limits, params.width, params.height)
        return admitted

    def requirements(self, params: Txt2ImgParams) -> Requirements:
        return Requirements(
            models=combo_needs(params),
            inputs=control_inputs(params),
            pixels=params.width * params.height,
            cost_units=cost_units(params.width, params.height, params.steps, params.num_images),
        )

    def outputs(self, params: Any) -> OutputSpec:
        return image_outputs(params)

    def batch_key(self, params: Txt2ImgParams) -> str | None:
        return generation_batch_key(self.name, params)


SPEC = Txt2Img()
