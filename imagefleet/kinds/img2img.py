"""img2img: an image from a prompt and an init image, which `strength` decides how far to
leave (near 0: almost the init image; 1: as if from noise)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from imagefleet.errors import InvalidField
from imagefleet.kinds.base import (
    InputInfo,
    InputNeed,
    KindSpec,
    Limits,
    OutputSpec,
    Requirements,
)
from imagefleet.kinds.generation import (
    PARAMS_LOC,
    GenerationParams,
    admit_generation,
    combo_needs,
    control_inputs,
    cost_units,
    image_outputs,
    multiple_of_eight,
)
from imagefleet.protocol import JobSubmission


class Img2ImgParams(GenerationParams):
    init_image: str = Field(
        min_length=1,
        max_length=64,
        pattern="^[0-9a-f]+$",
        description="The id of an uploaded input (POST /v1/inputs).",
    )
    strength: float = Field(
        0.75, gt=0.0, le=1.0, description="How much to change the init image (0 < s <= 1)."
    )
    width: int | None = Field(
        None,
        ge=8,
        le=16384,
        json_schema_extra={"multipleOf": 8},
        description="Default: the init image's, down to a multiple of 8.",
    )
    height: int | None = Field(
        None, ge=8, le=16384, json_schema_extra={"multipleOf": 8}, description="As width."
    )

    _sides_on_the_grid = field_validator("width", "height")(multiple_of_eight)


def output_size(params: Any, init: InputInfo) -> tuple[int, int]:
    """The requested size, or the init image's rounded down to the latent grid."""
    width = params.width if params.width is not None else max(8, init.width // 8 * 8)
    height = params.height if params.height is not None else max(8, init.height // 8 * 8)
    return width, height


def admit_image_to_image(params: Any, limits: Limits, inputs: Mapping[str, InputInfo]) -> Any:
    """Shared by img2img and inpaint: fixes the output size and checks that `strength`
    leaves at least one denoising step."""
    width, height = output_size(params, inputs["init_image"])
    if int(params.steps * params.strength) < 1:
        raise InvalidField(
            (*PARAMS_LOC, "strength"),
            f"strength {params.strength} x steps {params.steps} leaves no denoising step; "
            f"raise strength to at least {1 / params.steps:.3f} or add steps",
        )
    admitted = admit_generation(params, limits, width, height)
    return admitted.model_copy(update={"width": width, "height": height})


def image_to_image_requirements(params: Any, *extra: InputNeed) -> Requirements:
    width, height = params.width or 0, params.height or 0
    return Requirements(
        models=combo_needs(params),
        inputs=(
            InputNeed("init_image", params.init_image, (*PARAMS_LOC, "init_image")),
            *extra,
            *control_inputs(params),
        ),
        pixels=width * height,
        cost_units=cost_units(width, height, params.steps * params.strength, params.num_images),
    )


class Img2ImgJob(JobSubmission):
    """A img2img job as submitted."""

    kind: Literal["img2img"] = "img2img"
    params: Img2ImgParams


class Img2Img(KindSpec):
    name = "img2img"
    submission = Img2ImgJob
    summary = "Generate images from a prompt and an init image."
    params_model = Img2ImgParams

    def admit(
        self, params: Img2ImgParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> Img2ImgParams:
        admitted: Img2ImgParams = admit_image_to_image(params, limits, inputs)
        return admitted

    def requirements(self, params: Img2ImgParams) -> Requirements:
        return image_to_image_requirements(params)

    def outputs(self, params: Any) -> OutputSpec:
        return image_outputs(params)


SPEC = Img2Img()
