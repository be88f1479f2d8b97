"""comfy: a ComfyUI API-format graph ("Save (API)" export) run on the fleet's engine.

At submit the graph is validated against the node types this fleet runs (imagefleet/comfy/):
unknown node types are listed by name, missing inputs, broken links, type mismatches, values
out of bounds and cycles are 422s naming the node and input. The loaders' model names become
the job's combo (resolved like any job's models, so scheduling and caching work as for
txt2img), LoadImage names uploaded inputs (POST /v1/inputs), and the number of images the
output nodes save is fixed, so a completed run uploads exactly those.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

from pydantic import Field

from imagefleet.comfy.graph import (
    GraphInvalid,
    Node,
    image_count,
    largest_size,
    model_uses,
    uploaded_images,
)
from imagefleet.comfy.nodes import NodeSpec
from imagefleet.comfy.registry import node_specs
from imagefleet.comfy.validation import check
from imagefleet.errors import InvalidField
from imagefleet.kinds.base import (
    InputInfo,
    InputNeed,
    KindSpec,
    Limits,
    Loc,
    ModelNeed,
    OutputSpec,
    Requirements,
)
from imagefleet.protocol import JobSubmission, ModelRole, ModelUse, Strict

GRAPH_LOC: Loc = ("body", "params", "graph")
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
_ROLES = {
    "checkpoint": ModelRole.checkpoint,
    "lora": ModelRole.lora,
    "vae": ModelRole.vae,
    "controlnet": ModelRole.controlnet,
}


class ComfyParams(Strict):
    graph: dict[str, Any] = Field(
        description='An API-format ComfyUI workflow (ComfyUI\'s "Save (API)" export): node ids '
        'to {"class_type", "inputs"}. Model names are registered model names (a file extension '
        "is ignored); LoadImage's image is an uploaded input's id."
    )
    client_id: str | None = Field(
        None, max_length=200, description="A ComfyUI client's id: its /ws hears of this job."
    )
    pixels: int | None = Field(
        None, ge=0, description="Set by the server at submit: the largest image the graph makes."
    )


def model_name(value: str) -> str:
    """A loader's model name as the registry knows it: ComfyUI file names lose their
    extension (`demo.safetensors` is the model `demo`); `name@3` pins a version."""
    lowered = value.lower()
    for extension in MODEL_EXTENSIONS:
        if lowered.endswith(extension) and len(value) > len(extension):
            return value[: -len(extension)]
    return value


def input_name(node_id: str) -> str:
    """The job input that a LoadImage node reads."""
    return f"node_{node_id}"


@cache
def _specs() -> dict[str, NodeSpec]:
    return node_specs()


def checked_graph(raw: Any, specs: Mapping[str, NodeSpec] | None = None) -> dict[str, Node]:
    """The validated graph, or a 422 naming the first problem's node and input and listing
    every problem found."""
    try:
        return check(raw, specs or _specs())
    except GraphInvalid as exc:
        first = exc.errors[0]
        loc: Loc = GRAPH_LOC
        if first.node_id:
            loc = (*loc, first.node_id)
            if first.input_name:
                loc = (*loc, "inputs", first.input_name)
        raise InvalidField(loc, str(exc)) from exc


class ComfyJob(JobSubmission):
    """A comfy job as submitted."""

    kind: Literal["comfy"] = "comfy"
    params: ComfyParams


class Comfy(KindSpec):
    name = "comfy"
    submission = ComfyJob
    summary = "Run a ComfyUI API-format workflow graph."
    params_model = ComfyParams

    def admit(
        self, params: ComfyParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> ComfyParams:
        nodes = checked_graph(params.graph)
        pixels = largest_size(nodes, _specs())
        pixels = max([pixels, *(info.width * info.height for info in inputs.values())])
        if pixels > limits.max_pixels:
            raise InvalidField(
                GRAPH_LOC, f"the graph makes {pixels} pixel images; at most {limits.max_pixels}"
            )
        loras = [use for use in model_uses(nodes, _specs()) if use.kind == "lora"]
        if len(loras) > limits.max_loras:
            raise InvalidField(
                (*GRAPH_LOC, loras[-1].node_id),
                f"at most {limits.max_loras} LoRAs per job, got {len(loras)}",
            )
        return params.model_copy(update={"pixels": pixels})

    def requirements(self, params: ComfyParams) -> Requirements:
        nodes = checked_graph(params.graph)
        specs = _specs()
        needs = tuple(
            ModelNeed(
                _ROLES[use.kind],
                ModelUse.model_validate(model_name(use.name)),
                (*GRAPH_LOC, use.node_id, "inputs", use.input_name),
                weight=use.weight,
            )
            for use in model_uses(nodes, specs)
            if use.kind in _ROLES
        )
        images = tuple(
            InputNeed(input_name(node_id), input_id, (*GRAPH_LOC, node_id, "inputs", name))
            for node_id, name, input_id in uploaded_images(nodes, specs)
        )
        pixels = params.pixels or largest_size(nodes, specs)
        steps = sum(
            int(node.inputs.get("steps", 0))
            for node in nodes.values()
            if node.class_type in ("KSampler", "KSamplerAdvanced")
        )
        count = image_count(nodes, specs)
        return Requirements(
            models=needs,
            inputs=images,
            pixels=pixels,
            cost_units=pixels * max(steps, 1) * max(count, 1) / 1e6,
        )

    def outputs(self, params: ComfyParams) -> OutputSpec:
        return OutputSpec(count=image_count(checked_graph(params.graph), _specs()))


SPEC = Comfy()
