"""preprocess on the worker: the job's image through an annotator (canny: numpy and PIL; depth:
the job's registered depth model, see worker/depth.py). No GPU needed."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imagefleet.kinds.preprocess import PreprocessParams
from imagefleet.protocol import ModelRole
from imagefleet.worker.annotators import canny
from imagefleet.worker.handlers.base import InvalidJobInput, JobContext, OutputFile


class PreprocessHandler:
    kind = "preprocess"

    def supports(self, engine: Any) -> bool:
        return True  # any worker, whatever its engine: canny needs no model, depth the CPU

    def run(self, ctx: JobContext) -> list[OutputFile]:
        params = PreprocessParams.model_validate(ctx.assignment.params)
        image = ctx.input_image("image")
        if params.annotator == "depth":
            edges = _depth(ctx, image)
        else:
            with ctx.stage("inference"):
                edges = canny(image, params.low_threshold, params.high_threshold)
        ctx.on_step(1, 1)
        info = PngInfo()  # the parameters, as generation outputs carry theirs (worker/png.py)
        info.add_text("imagefleet", json.dumps(params.model_dump(mode="json")))
        buffer = io.BytesIO()
        edges.save(buffer, format="PNG", pnginfo=info)
        return [OutputFile(buffer.getvalue(), width=edges.width, height=edges.height)]


def _depth(ctx: JobContext, image: Image.Image) -> Image.Image:
    ref = next((m for m in ctx.assignment.models if m.role is ModelRole.annotator), None)
    if ref is None:
        raise InvalidJobInput("a depth job names no annotator model")
    path, _ = ctx.model_files(ref)
    from imagefleet.worker.depth import depth_model, estimate_depth

    with ctx.stage("model_load"):
        model = depth_model(ref.sha256, path)
    with ctx.stage("inference"):
        return estimate_depth(model, image)


HANDLER = PreprocessHandler()
