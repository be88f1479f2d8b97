"""ComfyUI API-format graphs: parsing, validation against node specs, and what they need.

An API-format graph (ComfyUI's "Save (API)" export, and the body of its `POST /prompt`) maps
node ids to `{"class_type": ..., "inputs": {...}}`; an input is a widget value or a link
`[source_node_id, output_index]`. Everything here is pure and torch-free: the orchestrator
validates at submit (every problem listed, each naming its node and input, in the shape of
ComfyUI's `node_errors`), and the worker orders and runs the same graph.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from imagefleet.comfy.nodes import InputSpec, NodeSpec
from imagefleet.comfy.samplers import compatible

NODE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")
MAX_NODES = 500
UI_FORMAT_MESSAGE = (
    "this is a workflow in ComfyUI's UI format (it has 'nodes' and 'links' arrays); "
    'export it with "Save (API)" in ComfyUI (Settings: enable dev mode options) and submit '
    "that file"
)


@dataclass(frozen=True)
class GraphError:
    """One problem, in ComfyUI's vocabulary (`type`: required_input_missing,
    return_type_mismatch, value_not_in_list, ...)."""

    type: str
    message: str
    details: str = ""
    node_id: str | None = None
    class_type: str | None = None
    input_name: str | None = None

    def describe(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "graph"
        field = f" input {self.input_name!r}" if self.input_name else ""
        return f"{where}{field}: {self.message}" + (f": {self.details}" if self.details else "")


class GraphInvalid(ValueError):
    """The graph cannot run; `errors` says every reason found."""

    def __init__(self, errors: list[GraphError]) -> None:
        self.errors = errors
        super().__init__("; ".join(error.describe() for error in errors))


@dataclass(frozen=True)
class Node:
    id: str
    class_type: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class ModelUseInGraph:
    """A loader's model: what node and input named it, its kind and the LoRA strength."""

    node_id: str
    input_name: str
    kind: str
    name: str
    weight: float | None = None


def is_link(value: Any) -> TypeGuard[list[Any]]:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and type(value[1]) is int
    )


def parse_graph(raw: Any) -> dict[str, Node]:
    """The graph's nodes by id; GraphInvalid for what is not an API-format graph at all."""
    if isinstance(raw, dict) and isinstance(raw.get("nodes"), list) and "links" in raw:
        raise GraphInvalid([GraphError("invalid_prompt", UI_FORMAT_MESSAGE)])
    if not isinstance(raw, dict) or not raw:
        raise GraphInvalid(
            [GraphError("invalid_prompt", "an API-format graph is a non-empty object of nodes")]
        )
    if len(raw) > MAX_NODES:
        raise GraphInvalid(
            [GraphError("invalid_prompt", f"at most {MAX_NODES} nodes, got {len(raw)}")]
        )
    nodes: dict[str, Node] = {}
    errors: list[GraphError] = []
    for node_id, body in raw.items():
        if not NODE_ID.match(str(node_id)):
            errors.append(GraphError("invalid_prompt", f"bad node id {str(node_id)[:40]!r}"))
            continue
        if not isinstance(body, dict) or not isinstance(body.get("class_type"), str):
            errors.append(
                GraphError("invalid_prompt", "a node is an object with a class_type", "", node_id)
            )
            continue
        inputs = body.get("inputs", {})
        if not isinstance(inputs, dict):
            errors.append(GraphError("invalid_prompt", "inputs must be an object", "", node_id))
            continue
        nodes[node_id] = Node(node_id, body["class_type"], inputs)
    if errors:
        raise GraphInvalid(errors)
    return nodes


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


def execution_order(nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]) -> list[str]:
    """The output nodes and their ancestors, each after everything it reads (a valid graph
    has no cycle); nodes no output depends on do not run, as in ComfyUI."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for source, _ in links_of(nodes[node_id]):
            visit(source)
        order.append(node_id)

    for node_id in sorted(nodes, key=_numeric_first):
        if specs[nodes[node_id].class_type].output_node:
            visit(node_id)
    return order


def links_of(node: Node) -> Iterator[tuple[str, int]]:
    for value in node.inputs.values():
        if is_link(value):
            yield str(value[0]), int(value[1])


def image_count(nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]) -> int:
    """How many images the graph's output nodes write (a completed run uploads exactly these)."""
    return len(output_images(nodes, specs))


def output_images(
    nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]
) -> list[tuple[str, str]]:
    """(output node id, ComfyUI folder type) of each image a run writes, in upload order."""
    slots: list[tuple[str, str]] = []
    for node_id in execution_order(nodes, specs):
        spec = specs[nodes[node_id].class_type]
        if spec.saves_images:
            count = _batch_of_input(nodes, specs, nodes[node_id], spec.saves_images)
            slots += [(node_id, spec.output_type)] * count
    return slots


def model_uses(nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]) -> list[ModelUseInGraph]:
    """Every loader's model, in execution order (the job's combo is made from these)."""
    uses = []
    for node_id in execution_order(nodes, specs):
        node = nodes[node_id]
        spec = specs[node.class_type]
        for item in spec.inputs:
            if item.model_kind and isinstance(node.inputs.get(item.name), str):
                weight = node.inputs.get("strength_model") if item.model_kind == "lora" else None
                if type(weight) not in (int, float):
                    weight = None
                uses.append(
                    ModelUseInGraph(
                        node_id,
                        item.name,
                        item.model_kind,
                        node.inputs[item.name],
                        None if weight is None else float(weight),
                    )
                )
    return uses


def uploaded_images(
    nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]
) -> list[tuple[str, str, str]]:
    """(node id, input name, uploaded input id) of every image the graph loads."""
    found = []
    for node_id in execution_order(nodes, specs):
        node = nodes[node_id]
        for item in specs[node.class_type].inputs:
            if item.uploaded_image and isinstance(node.inputs.get(item.name), str):
                found.append((node_id, item.name, node.inputs[item.name]))
    return found


def largest_size(nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec]) -> int:
    """The most pixels any node's width and height widgets ask for (0 when none do)."""
    largest = 0
    for node_id in execution_order(nodes, specs):
        node = nodes[node_id]
        sizes = specs[node.class_type].size_widgets
        if sizes and all(type(node.inputs.get(s)) is int for s in sizes):
            largest = max(largest, int(node.inputs[sizes[0]]) * int(node.inputs[sizes[1]]))
    return largest


def _numeric_first(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _batch_of_input(
    nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec], node: Node, name: str
) -> int:
    value = node.inputs.get(name)
    if not is_link(value):
        return 1
    return _batch(nodes, specs, str(value[0]), set())


def _batch(
    nodes: Mapping[str, Node], specs: Mapping[str, NodeSpec], node_id: str, path: set[str]
) -> int:
    node = nodes[node_id]
    spec = specs[node.class_type]
    if spec.batch_widget and type(node.inputs.get(spec.batch_widget)) is int:
        return int(node.inputs[spec.batch_widget])
    if spec.batch_input and node_id not in path:
        source = node.inputs.get(spec.batch_input)
        if is_link(source):
            return _batch(nodes, specs, str(source[0]), path | {node_id})
    return 1


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
