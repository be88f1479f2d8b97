"""img2img and inpaint on the worker: the same as txt2img plus the job's input images."""

from __future__ import annotations

from typing import Any

from imagefleet.worker.engines.base import Img2ImgRequest, InpaintRequest
from imagefleet.worker.handlers.base import JobContext, OutputFile
from imagefleet.worker.handlers.generation import (
    engine_serves,
    parsed_params,
    request_fields,
    run_task,
)


class Img2ImgHandler:
    kind = "img2img"

    def supports(self, engine: Any) -> bool:
        return engine_serves(engine, "img2img")

    def run(self, ctx: JobContext) -> list[OutputFile]:
        params = parsed_params(ctx)
        init = ctx.input_image("init_image")
        request = Img2ImgRequest(
            **request_fields(params), init_image=init, strength=params.strength
        )
        return run_task(ctx, "img2img", request)


class InpaintHandler:
    kind = "inpaint"

    def supports(self, engine: Any) -> bool:
        return engine_serves(engine, "inpaint")

    def run(self, ctx: JobContext) -> list[OutputFile]:
        params = parsed_params(ctx)
        init = ctx.input_image("init_image")
        mask = ctx.input_image("mask")
        request = InpaintRequest(
            **request_fields(params),
            init_image=init,
            strength=params.strength,
            mask=mask,
            mask_blur=params.mask_blur,
        )
        return run_task(ctx, "inpaint", request)


IMG2IMG = Img2ImgHandler()
INPAINT = InpaintHandler()
