"""The comfy graph engine on the worker: node implementations, the denoising loop and the
executor that runs a validated API-format graph on the job's prepared model combo."""

from __future__ import annotations

from typing import Any

from imagefleet.comfy.registry import plugin_nodes


def node_types(modules: str | None = None) -> dict[str, Any]:
    """Built-in node types, then plug-ins (which may replace a built-in of the same name)."""
    from imagefleet.worker.comfy.builtin import NODES

    types: dict[str, Any] = {node.spec.name: node for node in NODES}
    types.update({node.spec.name: node for node in plugin_nodes(modules)})
    return types
