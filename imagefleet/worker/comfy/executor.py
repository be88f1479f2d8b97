"""Runs a validated graph: the output nodes and their ancestors in dependency order, each node
once per distinct computation (outputs cached within the run by a signature of the node's type,
widget values and inputs' signatures, so two identical branches compute once)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from imagefleet.comfy.graph import Node, execution_order, is_link
from imagefleet.comfy.nodes import NodeSpec
from imagefleet.worker.comfy.run import GraphRun
from imagefleet.worker.comfy.sampling import SamplerCall, steps_of
from imagefleet.worker.engines.base import GenerationCancelled

SAMPLERS = ("KSampler", "KSamplerAdvanced")


def execute(nodes: Mapping[str, Node], types: Mapping[str, Any], run: GraphRun) -> int:
    """Runs the graph into `run.saved`; returns how many nodes computed (the rest were cached)."""
    specs: dict[str, NodeSpec] = {name: t.spec for name, t in types.items()}
    order = execution_order(nodes, specs)
    run.total_steps = sum(_planned_steps(nodes[node_id]) for node_id in order)
    outputs: dict[str, tuple[Any, ...]] = {}
    signatures: dict[str, str] = {}
    cache: dict[str, tuple[Any, ...]] = {}
    computed = 0
    for node_id in order:
        node = nodes[node_id]
        spec = specs[node.class_type]
        kwargs, signature = _inputs(node, spec, outputs, signatures)
        signatures[node_id] = signature
        if not spec.output_node and signature in cache:
            outputs[node_id] = cache[signature]
            continue
        if run.should_stop():
            raise GenerationCancelled(f"cancelled before node {node_id}")
        run.node_id = node_id
        result = tuple(types[node.class_type].execute(run, **kwargs))
        outputs[node_id] = cache[signature] = result
        computed += 1
    return computed


def _inputs(
    node: Node,
    spec: NodeSpec,
    outputs: Mapping[str, tuple[Any, ...]],
    signatures: Mapping[str, str],
) -> tuple[dict[str, Any], str]:
    kwargs: dict[str, Any] = {}
    described: dict[str, Any] = {}
    for item in spec.inputs:
        if item.name in node.inputs:
            value = node.inputs[item.name]
            if is_link(value):
                source, index = str(value[0]), int(value[1])
                kwargs[item.name] = outputs[source][index]
                described[item.name] = [signatures[source], index]
                continue
        elif item.is_widget and item.default is not None:
            value = item.default
        else:
            continue
        kwargs[item.name] = value
        described[item.name] = value
    text = json.dumps([node.class_type, described], sort_keys=True, default=str)
    return kwargs, hashlib.sha256(text.encode()).hexdigest()


def _planned_steps(node: Node) -> int:
    if node.class_type not in SAMPLERS:
        return 0
    values = node.inputs

    def number(name: str, default: float) -> Any:
        value = values.get(name, default)
        return value if type(value) in (int, float) else default

    call = SamplerCall(
        seed=0,
        steps=int(number("steps", 20)),
        cfg=0.0,
        sampler="euler",
        scheduler="normal",
        denoise=float(number("denoise", 1.0)),
        start=int(number("start_at_step", 0)),
        end=int(number("end_at_step", 10000)),
    )
    return steps_of(call)
