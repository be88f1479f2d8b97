"""inpaint: repaint the white part of a mask over an init image, leaving the rest unchanged.

The mask is a grey-scale image of the init image's size (white: repaint; black: keep). The
worker pastes the original back outside the mask (softened by `mask_blur` pixels), so unmasked
pixels come out as they went in, as users of A1111-style tools expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from imagefleet.errors import InvalidField
from imagefleet.kinds.base import InputInfo, InputNeed, KindSpec, Limits, OutputSpec, Requirements
from imagefleet.kinds.generation import PARAMS_LOC, image_outputs
from imagefleet.kinds.img2img import (
    Img2ImgParams,
    admit_image_to_image,
    image_to_image_requirements,
)
from imagefleet.protocol import JobSubmission


class InpaintParams(Img2ImgParams):
    mask: str = Field(
        min_length=1,
        max_length=64,
        pattern="^[0-9a-f]+$",
        description="The id of an uploaded grey-scale mask of the init image's size.",
    )
    strength: float = Field(1.0, gt=0.0, le=1.0, description="How much to change the masked area.")
    mask_blur: int = Field(4, ge=0, le=64, description="Softens the mask's edge, in pixels.")


class InpaintJob(JobSubmission):
    """A inpaint job as submitted."""

    kind: Literal["inpaint"] = "inpaint"
    params: InpaintParams


class Inpaint(KindSpec):
    name = "inpaint"
    submission = InpaintJob
    summary = "Repaint the masked part of an init image."
    params_model = InpaintParams

    def admit(
        self, params: InpaintParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> InpaintParams:
        init, mask = inputs["init_image"], inputs["mask"]
        if (mask.width, mask.height) != (init.width, init.height):
            raise InvalidField(
                (*PARAMS_LOC, "mask"),
                f"the mask is {mask.width}x{mask.height} but the init image is "
                f"{init.width}x{init.height}; they must be the same size",
            )
        admitted: InpaintParams = admit_image_to_image(params, limits, inputs)
        return admitted

    def requirements(self, params: InpaintParams) -> Requirements:
        return image_to_image_requirements(
            params, InputNeed("mask", params.mask, (*PARAMS_LOC, "mask"))
        )

    def outputs(self, params: Any) -> OutputSpec:
        return image_outputs(params)


SPEC = Inpaint()
