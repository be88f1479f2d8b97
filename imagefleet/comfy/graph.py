"""ComfyUI API-format graphs: parsing, execution order, and what a graph needs (its models,
images and sizes); validation lives in `validation.py`.

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

from imagefleet.comfy.nodes import NodeSpec

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
