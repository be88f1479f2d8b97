"""A job kind defined entirely in the test suite: proof that a new kind is additive.

`echo` writes its text back as `copies` text files. The orchestrator loads the spec with
IMAGEFLEET_KIND_PLUGINS=tests.toy_kind, the worker its handler with
IMAGEFLEET_WORKER_HANDLERS=tests.toy_kind; nothing else in imagefleet knows this kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from imagefleet.kinds import KindSpec, Limits, OutputSpec, Requirements
from imagefleet.kinds.base import InputInfo
from imagefleet.protocol import Strict
from imagefleet.worker.handlers.base import JobContext, OutputFile


class EchoParams(Strict):
    text: str = Field(min_length=1, max_length=200)
    copies: int = Field(1, ge=1, le=3)
    shout: bool = False


class Echo(KindSpec):
    name = "echo"
    summary = "Write the text back (a test kind)."
    params_model = EchoParams
    max_attempts = 2

    def admit(self, params: EchoParams, limits: Limits, inputs: Mapping[str, InputInfo]) -> Any:
        return params.model_copy(update={"text": params.text.strip()})

    def requirements(self, params: EchoParams) -> Requirements:
        return Requirements(cost_units=0.001 * len(params.text))

    def outputs(self, params: EchoParams) -> OutputSpec:
        return OutputSpec(count=params.copies, media_types=("text/plain",))


class EchoHandler:
    kind = "echo"

    def supports(self, engine: Any) -> bool:
        return True

    def run(self, ctx: JobContext) -> list[OutputFile]:
        params = EchoParams.model_validate(ctx.assignment.params)
        text = params.text.upper() if params.shout else params.text
        ctx.on_step(1, 1)
        return [
            OutputFile(f"{index}: {text}".encode(), content_type="text/plain")
            for index in range(params.copies)
        ]


SPEC = Echo()
HANDLER = EchoHandler()
