"""What a ComfyUI client's websocket hears: from two sightings of a job to ComfyUI's messages
(`execution_start`, `executing`, `progress`, `executed`, `execution_success`,
`execution_error`, `execution_interrupted`, and `status` with the queue left). Pure: the
websocket route polls the key's comfy jobs and sends what this returns."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagefleet.comfy.nodes import NodeSpec
from imagefleet.orchestrator import comfy_views
from imagefleet.protocol import JobStatus
from imagefleet.store.jobs import JobRow


@dataclass(frozen=True)
class Seen:
    status: JobStatus
    step: int


def message(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "data": data}


def status(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return message("status", data)


def changes(
    before: Seen | None, row: JobRow, indices: list[int], specs: Mapping[str, NodeSpec]
) -> list[dict[str, Any]]:
    """The messages that take a client from `before` (None: never seen) to `row`."""
    prompt = row.id
    node = comfy_views.sampler_node(row)
    sent: list[dict[str, Any]] = []
    started = before is not None and before.status is not JobStatus.queued
    if row.status is JobStatus.queued:
        return sent
    if not started:
        now = int(time.time() * 1000)
        sent.append(message("execution_start", {"prompt_id": prompt, "timestamp": now}))
        sent.append(
            message("execution_cached", {"nodes": [], "prompt_id": prompt, "timestamp": now})
        )
        sent.append(message("executing", {"node": node, "display_node": node, "prompt_id": prompt}))
    if row.progress_total and (before is None or row.progress_step != before.step):
        sent.append(
            message(
                "progress",
                {
                    "value": row.progress_step,
                    "max": row.progress_total,
                    "prompt_id": prompt,
                    "node": node,
                },
            )
        )
    if row.status is JobStatus.succeeded:
        for output_node, output in comfy_views.outputs(row, indices, specs).items():
            sent.append(
                message(
                    "executed",
                    {
                        "node": output_node,
                        "display_node": output_node,
                        "output": output,
                        "prompt_id": prompt,
                    },
                )
            )
        sent.append(message("execution_success", {"prompt_id": prompt, "timestamp": _now()}))
    elif row.status is JobStatus.failed:
        sent.append(message("execution_error", comfy_views.error_event(row)))
    elif row.status is JobStatus.cancelled:
        sent.append(
            message(
                "execution_interrupted",
                {"prompt_id": prompt, "node_id": node, "node_type": None, "executed": []},
            )
        )
    if row.status.is_final:
        sent.append(message("executing", {"node": None, "display_node": None, "prompt_id": prompt}))
    return sent


def _now() -> int:
    return int(time.time() * 1000)
