"""ComfyUI API-format graphs are validated at submit: every problem named by node and input."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from imagefleet.comfy.graph import (
    GraphInvalid,
    execution_order,
    image_count,
    model_uses,
    uploaded_images,
)
from imagefleet.comfy.nodes import BUILTIN_SPECS, InputSpec, NodeSpec
from imagefleet.comfy.registry import NodePluginError, node_specs
from imagefleet.comfy.validation import check
from imagefleet.errors import InvalidField
from imagefleet.kinds.base import InputInfo, Limits
from imagefleet.kinds.comfy import SPEC, ComfyParams, model_name
from imagefleet.protocol import ModelRole
from tests.comfy_graphs import lora_controlnet_img2img, txt2img

SPECS = {spec.name: spec for spec in BUILTIN_SPECS}


def errors_of(graph: Any) -> list[tuple[str, str | None, str | None]]:
    with pytest.raises(GraphInvalid) as caught:
        check(graph, SPECS)
    return [(e.type, e.node_id, e.input_name) for e in caught.value.errors]


def test_the_default_comfyui_workflow_validates_and_runs_its_ancestors_in_order() -> None:
    nodes = check(txt2img(), SPECS)
    order = execution_order(nodes, SPECS)
    assert order.index("4") < order.index("6") < order.index("3") < order.index("8")
    assert order[-1] == "9"


def test_unknown_node_types_are_all_listed_by_name() -> None:
    graph = txt2img()
    graph["10"] = {"class_type": "FaceDetailer", "inputs": {"image": ["8", 0]}}
    graph["11"] = {"class_type": "UltimateSDUpscale", "inputs": {}}
    with pytest.raises(GraphInvalid) as caught:
        check(graph, SPECS)
    message = str(caught.value)
    assert "unknown node types: FaceDetailer, UltimateSDUpscale" in message
    assert {e.node_id for e in caught.value.errors if e.type == "missing_node_type"} == {"10", "11"}


def test_a_broken_link_names_the_node_the_input_and_the_missing_source() -> None:
    graph = txt2img()
    graph["8"]["inputs"]["samples"] = ["99", 0]
    assert errors_of(graph) == [("missing_node", "8", "samples")]
    with pytest.raises(GraphInvalid, match="links to node 99, which is not in the graph"):
        check(graph, SPECS)


def test_a_link_of_the_wrong_type_is_a_type_mismatch() -> None:
    graph = txt2img()
    graph["3"]["inputs"]["positive"] = ["4", 1]  # CLIP, not CONDITIONING
    assert errors_of(graph) == [("return_type_mismatch", "3", "positive")]
    graph = txt2img()
    graph["3"]["inputs"]["model"] = ["4", 5]
    assert errors_of(graph) == [("return_type_mismatch", "3", "model")]


def test_missing_inputs_and_bad_widget_values_are_named() -> None:
    graph = txt2img()
    del graph["3"]["inputs"]["positive"]
    graph["3"]["inputs"]["steps"] = 0
    graph["3"]["inputs"]["sampler_name"] = "euler_cfg_pp"
    assert sorted(errors_of(graph)) == [
        ("required_input_missing", "3", "positive"),
        ("value_not_in_list", "3", "sampler_name"),
        ("value_smaller_than_min", "3", "steps"),
    ]


def test_a_cycle_is_refused_with_its_path() -> None:
    graph = txt2img()
    graph["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["4", 2]}}
    with pytest.raises(GraphInvalid, match="cycle"):
        check(graph, SPECS)


def test_the_ui_format_is_told_to_export_with_save_api() -> None:
    ui = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [[1, 4, 0, 3, 0]]}
    with pytest.raises(GraphInvalid, match=r"Save \(API\)"):
        check(ui, SPECS)


def test_a_graph_without_output_node_or_with_two_checkpoints_is_refused() -> None:
    graph = txt2img()
    del graph["9"]
    assert ("prompt_no_outputs", None, None) in errors_of(graph)
    graph = txt2img()
    graph["10"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other"}}
    graph["3"]["inputs"]["model"] = ["10", 0]
    with pytest.raises(GraphInvalid, match="one checkpoint"):
        check(graph, SPECS)


def test_karras_spacing_needs_a_sigma_sampler() -> None:
    assert errors_of(txt2img(sampler="ddim", scheduler="karras")) == [
        ("value_not_in_list", "3", "scheduler")
    ]


def test_models_images_and_the_image_count_come_from_the_graph() -> None:
    nodes = check(lora_controlnet_img2img("ab" * 16), SPECS)
    uses = [(u.kind, u.name, u.weight) for u in model_uses(nodes, SPECS)]
    assert uses == [
        ("checkpoint", "demo", None),
        ("lora", "tiny-lora.safetensors", 0.8),
        ("controlnet", "tiny-controlnet", None),
    ]
    assert uploaded_images(nodes, SPECS) == [("5", "image", "ab" * 16)]
    assert image_count(nodes, SPECS) == 1
    assert image_count(check(txt2img(batch=3), SPECS), SPECS) == 3


def test_the_kind_turns_loaders_into_the_combo_and_load_image_into_an_input() -> None:
    params = ComfyParams(graph=lora_controlnet_img2img("ab" * 16))
    info = {"node_5": InputInfo("ab" * 16, "image/png", 80, 80)}
    admitted = SPEC.admit(params, Limits(), info)
    assert admitted.pixels == 80 * 80
    needs = SPEC.requirements(admitted)
    assert [(n.role, n.use.name, n.weight) for n in needs.models] == [
        (ModelRole.checkpoint, "demo", None),
        (ModelRole.lora, "tiny-lora", 0.8),
        (ModelRole.controlnet, "tiny-controlnet", None),
    ]
    assert [(i.name, i.input_id) for i in needs.inputs] == [("node_5", "ab" * 16)]
    assert needs.models[1].loc == ("body", "params", "graph", "2", "inputs", "lora_name")
    assert SPEC.outputs(admitted).count == 1
    assert model_name("demo@2") == "demo@2" and model_name("x.SAFETENSORS") == "x"


def test_a_bad_graph_is_a_422_at_the_first_problems_node_and_input() -> None:
    graph = copy.deepcopy(txt2img())
    graph["8"]["inputs"]["samples"] = ["99", 0]
    with pytest.raises(InvalidField) as caught:
        SPEC.admit(ComfyParams(graph=graph), Limits(), {})
    assert caught.value.detail()[0]["loc"] == ["body", "params", "graph", "8", "inputs", "samples"]


class _Echo:
    spec = NodeSpec("EchoText", (InputSpec("text", "STRING", default=""),), ("STRING",))

    @staticmethod
    def execute(run: Any, text: str) -> tuple[str]:
        return (text,)


NODES = [_Echo()]


def test_node_plugins_join_the_specs_and_bad_ones_are_refused() -> None:
    specs = node_specs("tests.unit.test_comfy_graph")
    assert "EchoText" in specs and "KSampler" in specs
    with pytest.raises(NodePluginError, match="cannot be imported"):
        node_specs("no.such.module")
    with pytest.raises(NodePluginError, match="NODES"):
        node_specs("tests.comfy_graphs")
