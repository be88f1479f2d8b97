"""preprocess on the worker: the job's image through an annotator (numpy and PIL, no GPU)."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL.PngImagePlugin import PngInfo

from imagefleet.kinds.preprocess import PreprocessParams
from imagefleet.worker.annotators import canny
from imagefleet.worker.handlers.base import JobContext, OutputFile


class PreprocessHandler:
    kind = "preprocess"

    def supports(self, engine: Any) -> bool:
        return True  # any worker, whatever its engine: annotators need no model

    def run(self, ctx: JobContext) -> list[OutputFile]:
        params = PreprocessParams.model_validate(ctx.assignment.params)
        image = ctx.input_image("image")
        with ctx.stage("inference"):
            edges = canny(image, params.low_threshold, params.high_threshold)
        ctx.on_step(1, 1)
        info = PngInfo()  # the parameters, as generation outputs carry theirs (worker/png.py)
        info.add_text("imagefleet", json.dumps(params.model_dump(mode="json")))
        buffer = io.BytesIO()
        edges.save(buffer, format="PNG", pnginfo=info)
        return [OutputFile(buffer.getvalue(), width=edges.width, height=edges.height)]


HANDLER = PreprocessHandler()
