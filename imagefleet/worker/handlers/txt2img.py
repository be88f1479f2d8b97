"""txt2img on the worker."""

from __future__ import annotations

from typing import Any

from imagefleet.worker.engines.base import Txt2ImgRequest
from imagefleet.worker.handlers.base import JobContext, OutputFile
from imagefleet.worker.handlers.generation import (
    engine_serves,
    parsed_params,
    request_fields,
    run_task,
)


class Txt2ImgHandler:
    kind = "txt2img"

    def supports(self, engine: Any) -> bool:
        return engine_serves(engine, "txt2img")

    def run(self, ctx: JobContext) -> list[OutputFile]:
        request = Txt2ImgRequest(**request_fields(parsed_params(ctx)))
        return run_task(ctx, "txt2img", request)


HANDLER = Txt2ImgHandler()
