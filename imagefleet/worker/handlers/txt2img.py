"""txt2img on the worker."""

from __future__ import annotations

from typing import Any

from imagefleet.worker.engines.base import Txt2ImgRequest
from imagefleet.worker.handlers.base import JobContext, OutputFile
from imagefleet.worker.handlers.generation import (
    load_checkpoint,
    parsed_params,
    request_fields,
    run_generation,
)


class Txt2ImgHandler:
    kind = "txt2img"

    def supports(self, engine: Any) -> bool:
        return hasattr(engine, "txt2img")

    def run(self, ctx: JobContext) -> list[OutputFile]:
        model = load_checkpoint(ctx)
        request = Txt2ImgRequest(**request_fields(parsed_params(ctx)))
        return run_generation(ctx, "txt2img", request, model)


HANDLER = Txt2ImgHandler()
