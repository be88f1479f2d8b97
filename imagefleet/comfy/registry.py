"""Which node types a fleet runs: the built-ins, then plug-ins.

A node type is an object with `spec` (a `NodeSpec`) and `execute(run, **inputs) -> tuple` (one
value per output); built-ins are exactly that (worker/comfy/builtin.py). A plug-in module
exposes `NODES`, a sequence of such objects, and is named by the operator
(`IMAGEFLEET_COMFY_NODES=my.nodes`, on the orchestrator and on workers) or published under the
`imagefleet.comfy_nodes` entry point group. The orchestrator reads only `spec`, so a plug-in
should import torch inside `execute`. Importing a plug-in runs its code: an operator option,
never taken from a job.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from imagefleet.comfy.nodes import BUILTIN_SPECS, NodeSpec

ENTRY_POINT_GROUP = "imagefleet.comfy_nodes"
ENV_VAR = "IMAGEFLEET_COMFY_NODES"


class NodePluginError(RuntimeError):
    """A configured node plug-in could not be imported or declares no node types."""


def plugin_nodes(modules: str | None = None) -> list[Any]:
    """Node type objects from entry points and the comma-separated `modules` (default: the
    IMAGEFLEET_COMFY_NODES environment variable)."""
    if modules is None:
        modules = os.environ.get(ENV_VAR, "")
    found: list[Any] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found += _nodes_of(point.load(), f"entry point {point.name}")
    for name in filter(None, (m.strip() for m in modules.split(","))):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise NodePluginError(f"node plug-in {name!r} cannot be imported: {exc}") from exc
        found += _nodes_of(module, name)
    return found


def node_specs(modules: str | None = None) -> dict[str, NodeSpec]:
    """Every node type's spec by name; a plug-in may replace a built-in of the same name."""
    specs = {spec.name: spec for spec in BUILTIN_SPECS}
    specs.update({node.spec.name: node.spec for node in plugin_nodes(modules)})
    return specs


def _nodes_of(source: Any, origin: str) -> list[Any]:
    nodes = getattr(source, "NODES", source)
    if not isinstance(nodes, Iterable):
        raise NodePluginError(f"{origin} has no NODES sequence")
    nodes = list(nodes)
    for node in nodes:
        if not isinstance(getattr(node, "spec", None), NodeSpec) or not callable(
            getattr(node, "execute", None)
        ):
            raise NodePluginError(f"{origin}: {node!r} is not a node type (spec and execute)")
    return nodes
