"""Validation of ComfyUI API-format graphs against node specs, at submit.

Every problem is listed at once, each naming its node and input in the shape of ComfyUI's
`node_errors`, so that a client fixes a graph in one round trip. Pure and torch-free, like the
graph module it reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from imagefleet.comfy.graph import (
    GraphError,
    GraphInvalid,
    Node,
    is_link,
    links_of,
    model_uses,
    parse_graph,
)
from imagefleet.comfy.nodes import InputSpec, NodeSpec
from imagefleet.comfy.samplers import compatible


def validate(nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]) -> list[GraphError]:
    """Every problem of the graph: unknown node types (all listed by name), missing inputs,
    broken links, type mismatches, widget values out of bounds, cycles, no output node, and
    more than one checkpoint, VAE or ControlNet (one combo runs a graph)."""
    unknown = sorted({n.class_type for n in nodes.values() if n.class_type not in specs})
    errors = [
        GraphError(
            "missing_node_type",
            f"unknown node type {n.class_type!r}",
            f"this fleet runs: {', '.join(sorted(specs))}",
            n.id,
            n.class_type,
        )
        for n in nodes.values()
        if n.class_type in unknown
    ]
    if unknown:
        errors.insert(
            0,
            GraphError(
                "invalid_prompt",
                f"unknown node types: {', '.join(unknown)}",
                "install them as node plug-ins (see docs/workflows.md) or remove them",
            ),
        )
    for node in nodes.values():
        spec = specs.get(node.class_type)
        if spec is not None:
            errors += _node_errors(node, spec, nodes, specs)
    if not errors:
        errors += _cycle_errors(nodes)
    if not any(specs[n.class_type].output_node for n in nodes.values() if n.class_type in specs):
        errors.append(
            GraphError("prompt_no_outputs", "the graph has no output node (SaveImage, ...)")
        )
    if not errors:
        errors += _combo_errors(nodes, specs)
    return errors


def check(raw: Any, specs: Mapping[str, NodeSpec]) -> dict[str, Node]:
    """Parsed and validated nodes, or GraphInvalid with every error."""
    nodes = parse_graph(raw)
    errors = validate(nodes, specs)
    if errors:
        raise GraphInvalid(errors)
    return nodes


def _node_errors(
    node: Node, spec: NodeSpec, nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]
) -> list[GraphError]:
    errors = []
    for item in spec.inputs:

        def error(kind: str, message: str, details: str = "", item: InputSpec = item) -> None:
            errors.append(GraphError(kind, message, details, node.id, node.class_type, item.name))

        if item.name not in node.inputs:
            if item.required and not (item.is_widget and item.default is not None):
                error("required_input_missing", "Required input is missing")
            continue
        value = node.inputs[item.name]
        if is_link(value):
            problem = _link_problem(item, value, nodes, specs)
            if problem is not None:
                error(*problem)
        elif not item.is_widget:
            error("invalid_input_type", f"expects a link to a {item.type} output, got a value")
        else:
            problem = _widget_problem(item, value)
            if problem is not None:
                error(*problem)
    if {"sampler_name", "scheduler"} <= set(node.inputs) and not errors:
        sampler, scheduler = node.inputs["sampler_name"], node.inputs["scheduler"]
        if isinstance(sampler, str) and isinstance(scheduler, str):
            reason = compatible(sampler, scheduler)
            if reason is not None:
                errors.append(
                    GraphError(
                        "value_not_in_list", reason, "", node.id, node.class_type, "scheduler"
                    )
                )
    return errors


def _link_problem(
    item: InputSpec, value: list[Any], nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]
) -> tuple[str, str, str] | None:
    source_id, index = str(value[0]), int(value[1])
    if item.model_kind or item.uploaded_image:
        return (
            "invalid_input_type",
            "must be a literal name, not a link",
            "model names and images are read at submit to schedule the job",
        )
    source = nodes.get(source_id)
    if source is None:
        return ("missing_node", f"links to node {source_id}, which is not in the graph", "")
    source_spec = specs.get(source.class_type)
    if source_spec is None:
        return None  # already reported as an unknown node type
    if not 0 <= index < len(source_spec.outputs):
        return (
            "return_type_mismatch",
            f"links to output {index} of node {source_id} ({source.class_type}), "
            f"which has {len(source_spec.outputs)} outputs",
            "",
        )
    produced = source_spec.outputs[index]
    if produced != item.type and "*" not in (produced, item.type):
        return (
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
            f"{item.name}, received_type({produced}) mismatch input_type({item.type}) "
            f"from node {source_id} ({source.class_type}) output {index}",
        )
    return None


def _widget_problem(item: InputSpec, value: Any) -> tuple[str, str, str] | None:
    if item.type == "COMBO":
        if not isinstance(value, str) or not value:
            return ("invalid_input_type", f"expects a name, got {value!r}", "")
        if item.choices and value not in item.choices:
            return ("value_not_in_list", f"Value not in list: {value!r}", ", ".join(item.choices))
        return None
    if item.type == "STRING":
        ok = isinstance(value, str) and len(value) <= 20000
        return None if ok else ("invalid_input_type", "expects text (at most 20000 chars)", "")
    if item.type == "BOOLEAN":
        return None if isinstance(value, bool) else ("invalid_input_type", "expects a bool", "")
    numeric = type(value) is int or (item.type == "FLOAT" and type(value) is float)
    if not numeric:
        return ("invalid_input_type", f"expects {item.type}, got {value!r}", "")
    if item.min is not None and value < item.min:
        return ("value_smaller_than_min", f"Value {value} smaller than min of {item.min}", "")
    if item.max is not None and value > item.max:
        return ("value_bigger_than_max", f"Value {value} bigger than max of {item.max}", "")
    return None


def _cycle_errors(nodes: Mapping[str, Node]) -> list[GraphError]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in nodes:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[tuple[str, int]]]] = [(start, links_of(nodes[start]))]
        state[start] = 1
        while stack:
            node_id, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[node_id] = 2
                stack.pop()
                continue
            source = step[0]
            if state.get(source) == 1:
                path = [n for n, _ in stack]
                cycle = [*path[path.index(source) :], source]
                return [
                    GraphError(
                        "dependency_cycle",
                        "the graph has a cycle: " + " -> ".join(cycle),
                        "",
                        source,
                        nodes[source].class_type,
                    )
                ]
            if not state.get(source):
                state[source] = 1
                stack.append((source, links_of(nodes[source])))
    return []


def _combo_errors(nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]) -> list[GraphError]:
    """One combo runs a graph: one checkpoint, at most one VAE and one ControlNet."""
    errors = []
    for kind in ("checkpoint", "vae", "controlnet"):
        named = sorted({u.name for u in model_uses(nodes, specs) if u.kind == kind})
        if len(named) > 1:
            errors.append(
                GraphError(
                    "invalid_prompt",
                    f"a graph runs with one {kind}, this one names {len(named)}",
                    ", ".join(named),
                )
            )
    return errors
