"""A deployment's manifest (`imagefleet.toml` or `deployment.json`) and the checks made at
deploy time, before anything is stored: a Python pipeline must define `run` (found with `ast`:
user code is never imported by the orchestrator), the input schema must be a valid JSON Schema
of an object, a graph must be in ComfyUI's API format, and each injected parameter must name a
schema property and an existing node input.

Also the two things a run needs: `check_inputs` (a 422 naming the field) and `inject` (a
graph deployment's inputs written into a copy of its graph).
"""

from __future__ import annotations

import ast
import copy
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import ValidationError

from imagefleet.deployments.package import PackageInvalid
from imagefleet.errors import InvalidField
from imagefleet.protocol import ModelRole, ModelUse

MANIFEST_NAMES = ("imagefleet.toml", "deployment.json")
MAX_OUTPUTS = 16
MAX_REQUIREMENTS = 32


class PipelineType(StrEnum):
    python = "python"
    graph = "graph"


@dataclass(frozen=True)
class Manifest:
    """What a version declares. `models` maps a role to the models of that role, each as a
    job's `models` would name it (`"demo"`, `"demo@2"` or an object)."""

    type: PipelineType
    input_schema: dict[str, Any]
    name: str | None = None
    models: dict[str, list[Any]] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    outputs: int = 1
    inputs: dict[str, str] = field(default_factory=dict)  # graph: param -> "node.inputs.name"
    graph: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "name": self.name,
            "input_schema": self.input_schema,
            "models": self.models,
            "requirements": list(self.requirements),
            "outputs": self.outputs,
            "inputs": self.inputs,
            "graph": self.graph,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            type=PipelineType(data["type"]),
            input_schema=data["input_schema"],
            name=data.get("name"),
            models=data.get("models") or {},
            requirements=tuple(data.get("requirements") or ()),
            outputs=data.get("outputs", 1),
            inputs=data.get("inputs") or {},
            graph=data.get("graph"),
        )


def load_manifest(files: Mapping[str, bytes]) -> Manifest:
    """The package's manifest, checked; PackageInvalid saying what to fix otherwise."""
    raw = _read_manifest(files)
    kind = raw.get("type")
    if kind not in ("python", "graph"):
        raise PackageInvalid(f'the manifest\'s type must be "python" or "graph", got {kind!r}')
    schema = raw.get("input_schema", {"type": "object"})
    _check_schema(schema)
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise PackageInvalid("the manifest's name must be a string")
    outputs = raw.get("outputs", 1)
    if not isinstance(outputs, int) or not 1 <= outputs <= MAX_OUTPUTS:
        raise PackageInvalid(f"the manifest's outputs must be 1..{MAX_OUTPUTS}, got {outputs!r}")
    manifest = Manifest(
        type=PipelineType(kind),
        input_schema=schema,
        name=name,
        models=_models(raw.get("models", {})),
        requirements=_requirements(raw.get("requirements", [])),
        outputs=outputs,
        inputs=_mapping(raw.get("inputs", {})),
    )
    if manifest.type is PipelineType.python:
        _check_pipeline(files)
        return manifest
    if manifest.requirements:
        raise PackageInvalid("requirements are for python deployments; a graph runs none")
    graph = _read_graph(files)
    _check_injection(manifest, graph)
    return Manifest(**{**manifest.__dict__, "graph": graph})


def _read_manifest(files: Mapping[str, bytes]) -> dict[str, Any]:
    found = [name for name in MANIFEST_NAMES if name in files]
    if not found:
        raise PackageInvalid(
            f"the package has no manifest: add {' or '.join(MANIFEST_NAMES)} at its top level"
        )
    name = found[0]
    try:
        text = files[name].decode()
        raw = tomllib.loads(text) if name.endswith(".toml") else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PackageInvalid(f"{name} cannot be parsed: {exc}") from exc
    if not isinstance(raw, dict):
        raise PackageInvalid(f"{name} must be a table (an object)")
    return raw


def _check_schema(schema: Any) -> None:
    if not isinstance(schema, dict):
        raise PackageInvalid("input_schema must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        message = f"input_schema is not a valid JSON Schema at {where}: {exc.message}"
        raise PackageInvalid(message) from exc
    if schema.get("type") != "object":
        raise PackageInvalid('input_schema must describe an object ("type": "object")')
    remote = _remote_refs(schema)
    if remote:
        raise PackageInvalid(
            f"input_schema refers outside itself ({remote[0]!r}); only local refs (#/...) "
            "are allowed: the orchestrator fetches nothing"
        )
    try:
        for _ in Draft202012Validator(schema).iter_errors({}):
            pass
    except Exception as exc:  # an unresolvable local $ref, a bad pattern: found now, not per run
        raise PackageInvalid(f"input_schema cannot be used to validate: {exc}") from exc


def _remote_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [
            str(value)
            for key, value in node.items()
            if key in ("$ref", "$dynamicRef") and not str(value).startswith("#")
        ]
        return found + [ref for value in node.values() for ref in _remote_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _remote_refs(value)]
    return []


def _models(raw: Any) -> dict[str, list[Any]]:
    if not isinstance(raw, dict):
        raise PackageInvalid('models must map a role to model names, e.g. {checkpoint = "demo"}')
    roles = {role.value for role in ModelRole}
    models: dict[str, list[Any]] = {}
    for role, value in raw.items():
        if role not in roles:
            raise PackageInvalid(f"models: unknown role {role!r}; roles are {sorted(roles)}")
        uses = value if isinstance(value, list) else [value]
        for use in uses:
            try:
                ModelUse.model_validate(use)
            except ValidationError as exc:
                raise PackageInvalid(f"models.{role}: {use!r} is not a model name") from exc
        models[role] = uses
    return models


def _requirements(raw: Any) -> tuple[str, ...]:
    """PEP 508 requirement strings only: pip options (`-e`, `--index-url`) and paths are
    refused, so a package cannot point a worker's pip somewhere the operator did not choose."""
    if not isinstance(raw, list) or len(raw) > MAX_REQUIREMENTS:
        raise PackageInvalid(f"requirements must be a list of at most {MAX_REQUIREMENTS} strings")
    checked = []
    for item in raw:
        if not isinstance(item, str) or item.strip().startswith("-"):
            raise PackageInvalid(f"requirements: {item!r} is not a requirement (no pip options)")
        try:
            requirement = Requirement(item)
        except InvalidRequirement as exc:
            raise PackageInvalid(f"requirements: {item!r} is not a PEP 508 requirement") from exc
        if requirement.url:
            raise PackageInvalid(f"requirements: {item!r} names a URL; name a package instead")
        checked.append(str(requirement))
    return tuple(sorted(checked))


def _mapping(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise PackageInvalid('inputs must map a parameter to a graph path, e.g. "6.inputs.text"')
    return dict(raw)


def _check_pipeline(files: Mapping[str, bytes]) -> None:
    """pipeline.py must parse and define `run(inputs, context)` at its top level (and, if it
    has one, `setup(models)`): read with `ast`, never imported here."""
    source = files.get("pipeline.py")
    if source is None:
        raise PackageInvalid("a python deployment needs pipeline.py at the package's top level")
    try:
        tree = ast.parse(source, filename="pipeline.py")
    except (SyntaxError, ValueError) as exc:
        raise PackageInvalid(f"pipeline.py does not parse: {exc}") from exc
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    run = functions.get("run")
    if run is None:
        raise PackageInvalid("pipeline.py defines no top-level run(inputs, context) function")
    if len(run.args.args) + len(run.args.posonlyargs) < 2 and run.args.vararg is None:
        raise PackageInvalid("pipeline.py: run must take (inputs, context)")
    setup = functions.get("setup")
    if setup is not None and not (setup.args.args or setup.args.posonlyargs):
        raise PackageInvalid("pipeline.py: setup must take (models)")


def _read_graph(files: Mapping[str, bytes]) -> dict[str, Any]:
    source = files.get("graph.json")
    if source is None:
        raise PackageInvalid("a graph deployment needs graph.json at the package's top level")
    try:
        graph = json.loads(source)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageInvalid(f"graph.json is not JSON: {exc}") from exc
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "links" in graph:
        raise PackageInvalid(
            "graph.json is in ComfyUI's UI format (nodes and links arrays); export it with "
            "Save (API) (enable the dev mode options in ComfyUI's settings) and deploy that"
        )
    if not isinstance(graph, dict):
        raise PackageInvalid("graph.json must be an object of node ids (Save (API) format)")
    return graph


def _check_injection(manifest: Manifest, graph: dict[str, Any]) -> None:
    properties = manifest.input_schema.get("properties", {})
    for param, path in manifest.inputs.items():
        if param not in properties:
            raise PackageInvalid(f"inputs.{param}: not a property of input_schema")
        node_id, input_name = _split(path, param)
        node = graph.get(node_id)
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            raise PackageInvalid(f"inputs.{param}: the graph has no node {node_id!r}")
        if input_name not in node["inputs"]:
            raise PackageInvalid(
                f"inputs.{param}: node {node_id} ({node.get('class_type')}) has no input "
                f"{input_name!r}"
            )


def _split(path: str, param: str) -> tuple[str, str]:
    node_id, middle, input_name = [*path.split(".", 2), "", ""][:3]
    if middle != "inputs" or not node_id or not input_name:
        raise PackageInvalid(f'inputs.{param}: {path!r} is not of the form "NODE.inputs.NAME"')
    return node_id, input_name


def check_inputs(schema: Mapping[str, Any], inputs: Any, loc: tuple[str | int, ...]) -> None:
    """A 422 naming the first field the inputs get wrong (and how many problems there are)."""
    errors = sorted(
        Draft202012Validator(schema).iter_errors(inputs), key=lambda e: list(e.absolute_path)
    )
    if not errors:
        return
    first = errors[0]
    path: list[str | int] = list(first.absolute_path)
    if first.validator == "required" and isinstance(first.instance, dict):
        missing = [name for name in first.validator_value if name not in first.instance]
        path += missing[:1]
    named = ".".join(str(part) for part in path) or "inputs"
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    raise InvalidField((*loc, *path), f"{named}: {first.message}{more}")


def inject(
    graph: Mapping[str, Any], mapping: Mapping[str, str], inputs: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of the graph with each given input written where the mapping says."""
    result: dict[str, Any] = copy.deepcopy(dict(graph))
    for param, path in mapping.items():
        if param in inputs:
            node_id, input_name = _split(path, param)
            result[node_id]["inputs"][input_name] = inputs[param]
    return result
