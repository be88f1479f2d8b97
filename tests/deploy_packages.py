"""Deployment packages for tests and the benchmark: small pipelines written into a directory,
a graph deployment over the comfy test graph, and a hand-built wheel (a zip with METADATA,
WHEEL and RECORD) so installing requirements needs no network."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from tests.comfy_graphs import txt2img

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "color": {"type": "string", "enum": ["red", "green", "blue", "white", "black"]},
        "size": {"type": "integer", "minimum": 8, "maximum": 256},
    },
    "required": ["color"],
}

# A pipeline that draws one flat PNG in the requested color; `VERSION` tells versions apart.
PIPELINE = """
import json
import os

from PIL import Image

STATE = {{}}


def setup(models):
    STATE["models"] = models
    STATE["setups"] = STATE.get("setups", 0) + 1


def run(inputs, context):
    size = inputs.get("size", 16)
    context.progress(1, 2)
    Image.new("RGB", (size, size), inputs["color"]).save(os.path.join(context.output_dir, "0.png"))
    secrets = sorted(k for k in os.environ if k.startswith("IMAGEFLEET_") or "SECRET" in k)
    report = {{
        "version": {version!r},
        "setups": STATE["setups"],
        "pid": os.getpid(),
        "seed": context.seed,
        "device": context.device,
        "models": {{role: os.path.exists(m["path"]) for role, m in STATE["models"].items()}},
        "secrets_seen": secrets,
        "extra": {extra},
    }}
    with open(os.path.join(context.output_dir, "1.json"), "w") as f:
        json.dump(report, f)
    context.progress(2, 2)
    return ["0.png", "1.json"]
"""


def python_package(
    directory: Path,
    version: str = "v1",
    *,
    models: dict[str, Any] | None = None,
    requirements: list[str] | None = None,
    extra: str = "None",
    prelude: str = "",
    pipeline: str | None = None,
    schema: dict[str, Any] | None = None,
) -> Path:
    """A python deployment (manifest in deployment.json) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "type": "python",
        "input_schema": schema if schema is not None else SCHEMA,
        "outputs": 2,
        "models": models or {},
    }
    if requirements:
        manifest["requirements"] = requirements
    (directory / "deployment.json").write_text(json.dumps(manifest))
    code = pipeline if pipeline is not None else PIPELINE.format(version=version, extra=extra)
    (directory / "pipeline.py").write_text(prelude + code)
    return directory


def graph_package(directory: Path, graph: dict[str, Any] | None = None) -> Path:
    """A graph deployment whose `prompt` and `seed` inputs are injected into the txt2img graph."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "graph.json").write_text(json.dumps(graph or txt2img("demo", size=64)))
    (directory / "imagefleet.toml").write_text(
        """type = "graph"

[input_schema]
type = "object"
required = ["prompt"]

[input_schema.properties.prompt]
type = "string"
minLength = 1

[input_schema.properties.seed]
type = "integer"
minimum = 0

[inputs]
prompt = "6.inputs.text"
seed = "3.inputs.seed"
"""
    )
    return directory


def wheel(directory: Path, name: str = "tinyhelper", version: str = "0.1") -> Path:
    """A pure-Python wheel with one module `name` whose `VALUE` is `version`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VALUE = {version!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for member, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{member},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():  # fixed times: the same wheel, byte for byte
            archive.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path
