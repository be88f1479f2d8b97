"""Jobs of kind comfy as ComfyUI's server shows prompts: history entries, queue items, output
file names, `node_errors`, and the websocket events a job's changes mean. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from imagefleet.comfy.graph import GraphError, Node, execution_order, output_images, parse_graph
from imagefleet.comfy.nodes import NodeSpec
from imagefleet.protocol import JobStatus
from imagefleet.store.jobs import JobRow

FILENAME = re.compile(r"^ComfyUI_(?P<job>[0-9a-f]{8,64})_(?P<index>\d{1,5})_\.png$")
SAMPLERS = ("KSampler", "KSamplerAdvanced")


def number(row: JobRow) -> int:
    """ComfyUI's queue number: increasing with submit time."""
    return int(row.created_at * 1000)


def filename(job_id: str, index: int) -> str:
    return f"ComfyUI_{job_id}_{index:05d}_.png"


def parse_filename(name: str) -> tuple[str, int] | None:
    match = FILENAME.match(name)
    return (match["job"], int(match["index"])) if match else None


def node_errors(errors: list[GraphError]) -> tuple[dict[str, Any], dict[str, Any]]:
    """ComfyUI's (error, node_errors) for a graph's problems."""
    by_node: dict[str, Any] = {}
    general = [e for e in errors if e.node_id is None]
    for error in errors:
        if error.node_id is None:
            continue
        entry = by_node.setdefault(
            error.node_id,
            {"errors": [], "dependent_outputs": [], "class_type": error.class_type},
        )
        extra = {"input_name": error.input_name} if error.input_name else {}
        entry["errors"].append(
            {
                "type": error.type,
                "message": error.message,
                "details": error.details,
                "extra_info": extra,
            }
        )
    head = general[0] if general else None
    summary = {
        "type": head.type if head else "prompt_outputs_failed_validation",
        "message": head.message if head else "Prompt outputs failed validation",
        "details": head.details if head else "",
        "extra_info": {},
    }
    return summary, by_node


def _nodes(row: JobRow) -> dict[str, Node]:
    return parse_graph(row.params["graph"])


def outputs(
    row: JobRow, indices: list[int], specs: Mapping[str, NodeSpec]
) -> dict[str, dict[str, list[dict[str, str]]]]:
    """Per output node, its images as `/view` serves them."""
    slots = output_images(_nodes(row), specs)
    found: dict[str, dict[str, list[dict[str, str]]]] = {}
    for index in sorted(indices):
        if index < len(slots):
            node_id, folder = slots[index]
            found.setdefault(node_id, {"images": []})["images"].append(
                {"filename": filename(row.id, index), "subfolder": "", "type": folder}
            )
    return found


def output_nodes(row: JobRow, specs: Mapping[str, NodeSpec]) -> list[str]:
    nodes = _nodes(row)
    return [n for n in execution_order(nodes, specs) if specs[nodes[n].class_type].output_node]


def sampler_node(row: JobRow) -> str | None:
    """The node progress is reported on: the graph's first sampler."""
    nodes = _nodes(row)
    return next((n for n, node in nodes.items() if node.class_type in SAMPLERS), None)


def queue_item(row: JobRow, specs: Mapping[str, NodeSpec]) -> list[Any]:
    extra = {"client_id": row.params.get("client_id")}
    return [number(row), row.id, row.params["graph"], extra, output_nodes(row, specs)]


def history_entry(row: JobRow, indices: list[int], specs: Mapping[str, NodeSpec]) -> dict[str, Any]:
    succeeded = row.status is JobStatus.succeeded
    messages: list[list[Any]] = [
        ["execution_start", {"prompt_id": row.id, "timestamp": _ms(row.started_at)}]
    ]
    if succeeded:
        messages.append(
            ["execution_success", {"prompt_id": row.id, "timestamp": _ms(row.finished_at)}]
        )
    elif row.status is JobStatus.cancelled:
        messages.append(["execution_interrupted", {"prompt_id": row.id}])
    else:
        messages.append(["execution_error", error_event(row)])
    return {
        "prompt": queue_item(row, specs),
        "outputs": outputs(row, indices, specs) if succeeded else {},
        "status": {
            "status_str": "success" if succeeded else "error",
            "completed": succeeded,
            "messages": messages,
        },
        "meta": {},
    }


def error_event(row: JobRow) -> dict[str, Any]:
    return {
        "prompt_id": row.id,
        "node_id": sampler_node(row),
        "node_type": None,
        "exception_type": row.error_code or "error",
        "exception_message": row.error_message or "",
        "traceback": [],
        "current_inputs": {},
        "current_outputs": {},
    }


def _ms(seconds: float | None) -> int:
    return int((seconds or 0.0) * 1000)
